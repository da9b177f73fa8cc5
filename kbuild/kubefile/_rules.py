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
    _Rules(src, stages).check(per_stage)


class _Rules:
    """One pass over the stages, keeping what later instructions are checked against."""

    def __init__(self, src: Source, stages: list[ins.Stage]) -> None:
        self.src = src
        self.stages = stages
        self.all_aliases = {s.base.alias: s.index for s in stages if s.base.alias}
        self.aliases: dict[str, int] = {}
        self.apps_of: list[set[str]] = []
        # A stage built on an image may inherit apps the parser cannot see; names
        # are then checked by the builder against the base image's metadata.
        self.inherits_of: list[bool] = []
        self.final: Located | None = None  # the LAUNCH or CMDS seen

    def check(self, per_stage: list[list[Located]]) -> None:
        for stage, items in zip(self.stages, per_stage, strict=True):
            apps, inherits = self._stage_start(stage, items[0])
            cmd_line: int | None = None
            for item in items:
                self._after_final(item)
                instr = item.instr
                if isinstance(instr, ins.Cmd):
                    cmd_line = cmd_line or instr.pos.line
                elif isinstance(instr, ins.Launch | ins.Cmds):
                    self._final(item, cmd_line, apps, inherits)
                elif isinstance(instr, ins.App):
                    apps.add(instr.name)
                elif not inherits:
                    self._app_named(item, apps)
                if isinstance(instr, ins.Copy) and instr.from_stage is not None:
                    _check_from(self.src, item, instr.from_stage, stage, self.aliases,
                                self.all_aliases)  # fmt: skip
            self.apps_of.append(apps)
            self.inherits_of.append(inherits)

    def _stage_start(self, stage: ins.Stage, head: Located) -> tuple[set[str], bool]:
        """Record the stage's name; the apps it starts with and whether it may inherit more."""
        alias = stage.base.alias
        if alias is not None:
            if alias in self.aliases:
                first = self.stages[self.aliases[alias]].base.pos.line
                raise _at(self.src, head, "alias",
                          f"duplicate stage name {alias!r} (first used on line {first})")
            self.aliases[alias] = stage.index
        base_image = stage.base.image.lower()
        if base_image in self.aliases and self.aliases[base_image] < stage.index:
            earlier = self.aliases[base_image]
            return set(self.apps_of[earlier]), self.inherits_of[earlier]
        return set(), base_image != "scratch"

    def _after_final(self, item: Located) -> None:
        """Nothing may follow LAUNCH or CMDS."""
        if self.final is None:
            return
        kw, fkw, fline = _kw(item.instr), _kw(self.final.instr), self.final.instr.pos.line
        if isinstance(item.instr, ins.Launch | ins.Cmds):
            if fkw == kw:
                raise _at(self.src, item, "", f"{kw} may appear only once (first on line {fline})")
            raise _at(self.src, item, "",
                      f"LAUNCH and CMDS cannot both be used ({fkw} on line {fline})")
        raise _at(self.src, item, "",
                  f"{kw} after {fkw}: {fkw} must be the last instruction of the Kubefile",
                  hint=f"move {fkw} (line {fline}) to the end")

    def _final(self, item: Located, cmd_line: int | None, apps: set[str], inherits: bool
               ) -> None:
        """LAUNCH or CMDS: not with CMD; LAUNCH names declared apps."""
        instr = item.instr
        if cmd_line is not None:
            raise _at(self.src, item, "", f"{_kw(instr)} cannot be combined with CMD "
                      f"(line {cmd_line})",
                      hint="list the commands in CMDS, or the apps in LAUNCH, not both")
        self.final = item
        if isinstance(instr, ins.Launch) and not inherits:
            for name in instr.apps:
                if name not in apps:
                    raise _at(self.src, item, "launch",
                              f"LAUNCH names the app {name!r}, which is not declared "
                              f"before it with APP, CNI or CSI", hint=_suggest(name, apps))

    def _app_named(self, item: Located, apps: set[str]) -> None:
        """``IMAGE --app=``, APPCMDS and APPENV name an app declared before them."""
        instr = item.instr
        if isinstance(instr, ins.Image) and instr.app is not None and instr.app not in apps:
            raise _at(self.src, item, "app",
                      f"IMAGE --app={instr.app} names an app that is not declared before it "
                      "with APP, CNI or CSI", hint=_suggest(instr.app, apps))
        if isinstance(instr, ins.AppCmds | ins.AppEnv) and instr.name not in apps:
            raise _at(self.src, item, "app",
                      f"{_kw(instr)} for the app {instr.name!r}, which is not declared before it "
                      f"with APP, CNI or CSI",
                      hint=_suggest(instr.name, apps)
                      or f"declare it first: APP {instr.name} SOURCE...")


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
