"""The rules sealer enforces on a Kubefile, checked after parsing.

- ``LAUNCH`` and ``CMDS`` appear at most once, not both, and as the very last
  instruction of the Kubefile; ``CMD`` is not combined with them in a stage.
- ``APPCMDS``/``APPENV``/``LAUNCH`` (and ``IMAGE --app=``) name apps declared before them with
  ``APP``/``CNI``/``CSI`` in the same stage (or in the earlier stage that the
  stage is ``FROM``): apps of a base *image* cannot be seen at parse time.
- Stage names are unique; ``COPY --from=`` names an earlier stage (by name
  or index) or a full image reference (one holding ``:``, ``/`` or ``@``).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from kbuild.errors import KubefileError
from kbuild.kubefile import instructions as ins
from kbuild.kubefile._source import Source


@dataclass
class Located:
    """An instruction with the positions of the names in it (for errors)."""

    instr: ins.Instruction
    name_pos: dict[str, tuple[int, int]]


def _kw(instr: ins.Instruction) -> str:
    return instr.original.split(None, 1)[0].upper()


def _at(
    src: Source, item: Located, key: str, message: str, hint: str | None = None
) -> KubefileError:
    line, col = item.name_pos.get(key, (item.instr.pos.line, item.instr.pos.column))
    return src.error(message, line, col, hint=hint)


def _suggest(name: str, known: set[str]) -> str | None:
    close = difflib.get_close_matches(name, sorted(known), n=1)
    return f"did you mean {close[0]}?" if close else None


def check_rules(src: Source, stages: list[ins.Stage], per_stage: list[list[Located]]) -> None:
    """Raise :class:`KubefileError` for the first broken rule."""
    all_aliases = {s.base.alias: s.index for s in stages if s.base.alias}
    aliases: dict[str, int] = {}
    apps_of: list[set[str]] = []
    # A stage built on an image may inherit apps the parser cannot see; names
    # are then checked by the builder against the base image's metadata.
    inherits_of: list[bool] = []
    final: Located | None = None
    for stage, items in zip(stages, per_stage, strict=True):
        head = items[0]
        alias = stage.base.alias
        if alias is not None:
            if alias in aliases:
                first = stages[aliases[alias]].base.pos.line
                raise _at(
                    src,
                    head,
                    "alias",
                    f"duplicate stage name {alias!r} (first used on line {first})",
                )
            aliases[alias] = stage.index
        base_image = stage.base.image.lower()
        apps: set[str] = set()
        if base_image in aliases and aliases[base_image] < stage.index:
            apps |= apps_of[aliases[base_image]]
            inherits = inherits_of[aliases[base_image]]
        else:
            inherits = base_image != "scratch"
        cmd_line: int | None = None
        for item in items:
            instr = item.instr
            kw = _kw(instr)
            if final is not None:
                fkw = _kw(final.instr)
                if isinstance(instr, ins.Launch | ins.Cmds):
                    if fkw == kw:
                        raise _at(
                            src,
                            item,
                            "",
                            f"{kw} may appear only once (first on line {final.instr.pos.line})",
                        )
                    raise _at(
                        src,
                        item,
                        "",
                        f"LAUNCH and CMDS cannot both be used ({fkw} on line "
                        f"{final.instr.pos.line})",
                    )
                raise _at(
                    src,
                    item,
                    "",
                    f"{kw} after {fkw}: {fkw} must be the last instruction of the Kubefile",
                    hint=f"move {fkw} (line {final.instr.pos.line}) to the end",
                )
            if isinstance(instr, ins.Cmd):
                cmd_line = cmd_line or instr.pos.line
            elif isinstance(instr, ins.Launch | ins.Cmds):
                if cmd_line is not None:
                    raise _at(
                        src,
                        item,
                        "",
                        f"{kw} cannot be combined with CMD (line {cmd_line})",
                        hint="list the commands in CMDS, or the apps in LAUNCH, not both",
                    )
                final = item
                if isinstance(instr, ins.Launch):
                    for name in instr.apps:
                        if name not in apps and not inherits:
                            raise _at(
                                src,
                                item,
                                "launch",
                                f"LAUNCH names the app {name!r}, which is not declared "
                                f"before it with APP, CNI or CSI",
                                hint=_suggest(name, apps),
                            )
            elif isinstance(instr, ins.App):
                apps.add(instr.name)
            elif isinstance(instr, ins.Image) and instr.app is not None:
                if instr.app not in apps and not inherits:
                    raise _at(
                        src, item, "app",
                        f"IMAGE --app={instr.app} names an app that is not declared before it "
                        "with APP, CNI or CSI",
                        hint=_suggest(instr.app, apps),
                    )  # fmt: skip
            elif (
                isinstance(instr, ins.AppCmds | ins.AppEnv)
                and instr.name not in apps
                and not inherits
            ):
                raise _at(
                    src,
                    item,
                    "app",
                    f"{kw} for the app {instr.name!r}, which is not declared before it "
                    f"with APP, CNI or CSI",
                    hint=_suggest(instr.name, apps)
                    or f"declare it first: APP {instr.name} SOURCE...",
                )
            elif isinstance(instr, ins.Copy) and instr.from_stage is not None:
                _check_from(src, item, instr.from_stage, stage, aliases, all_aliases)
        apps_of.append(apps)
        inherits_of.append(inherits)


def _check_from(
    src: Source,
    item: Located,
    ref: str,
    stage: ins.Stage,
    earlier: dict[str, int],
    every: dict[str, int],
) -> None:
    if "$" in ref:
        return  # depends on build args; the builder checks it
    name = ref.lower()
    if name.isdigit():
        if int(name) >= stage.index:
            raise _at(
                src,
                item,
                "from",
                f"--from={ref} must name an earlier stage (this is stage {stage.index})",
            )
        return
    if name == stage.base.alias:
        raise _at(src, item, "from", f"--from={ref} names the stage it is in")
    if name in earlier:
        return
    if name in every:
        raise _at(
            src, item, "from", f"--from={ref} names a stage that is defined after this instruction"
        )
    if any(c in ref for c in ":/@"):
        return  # a full image reference
    raise _at(
        src,
        item,
        "from",
        f"no stage named {ref!r} before this instruction",
        hint=_suggest(name, set(earlier))
        or "to copy from an image, write its full reference (NAME:TAG)",
    )
