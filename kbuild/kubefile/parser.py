"""``parse()``: Kubefile text to a :class:`~kbuild.kubefile.instructions.Kubefile`."""

from __future__ import annotations

import difflib

from lark.exceptions import LarkError, UnexpectedInput

from kbuild.errors import KubefileError
from kbuild.kubefile import instructions as ins
from kbuild.kubefile._build import Builder
from kbuild.kubefile._grammar import KEYWORDS, explain, parse_line
from kbuild.kubefile._rules import Located, check_rules
from kbuild.kubefile._source import Source, read_source

_DOCKER_ONLY = {
    "HEALTHCHECK": "HEALTHCHECK is not supported by kbuild",
    "ONBUILD": "ONBUILD is not supported by kbuild",
}


def parse(text: str, filename: str = "Kubefile") -> ins.Kubefile:
    """Parse Kubefile ``text`` (named ``filename`` in errors).

    Returns the global ARGs and the stages, every instruction with its
    position. Raises :class:`~kbuild.errors.KubefileError` for a syntax
    error or a broken rule, and never any other exception.
    """
    src = read_source(text, filename)
    located: list[Located] = []
    for ll in src.logical:
        if not ll.text.strip():
            continue
        word = ll.text.split(None, 1)[0]
        keyword = word.upper()
        if keyword not in KEYWORDS:
            raise _unknown(src, ll.line, ll.column, word)
        try:
            tree = parse_line(ll.text, src.escape)
        except UnexpectedInput as err:
            offset, message, hint = explain(err, ll.text, keyword)
            raise src.error_at(ll, offset, message, hint=hint) from None
        except LarkError as err:  # pragma: no cover - lark internals
            raise src.error_at(ll, 0, f"cannot parse {keyword}: {err}") from None
        builder = Builder(src, ll, keyword)
        for instr in builder.build(tree):
            located.append(Located(instr, builder.name_pos))
    return _assemble(src, located)


def _unknown(src: Source, line: int, column: int, word: str) -> KubefileError:
    upper = word.upper()
    if upper in _DOCKER_ONLY:
        return src.error(_DOCKER_ONLY[upper], line, column)
    shown = word if len(word) <= 40 else word[:37] + "..."
    close = difflib.get_close_matches(upper, KEYWORDS, n=1, cutoff=0.6)
    hint = f"did you mean {close[0]}?" if close else "instructions: " + ", ".join(KEYWORDS)
    return src.error(f"unknown instruction {shown!r}", line, column, hint=hint)


def _assemble(src: Source, located: list[Located]) -> ins.Kubefile:
    if not located:
        raise KubefileError(
            "the Kubefile is empty; it must start with FROM",
            filename=src.filename,
            hint="for example: FROM kubernetes:v1.30.2",
        )
    global_args: list[ins.Arg] = []
    stages: list[ins.Stage] = []
    per_stage: list[list[Located]] = []
    for item in located:
        instr = item.instr
        if isinstance(instr, ins.From):
            stages.append(ins.Stage(index=len(stages), base=instr))
            per_stage.append([item])
        elif not stages:
            if not isinstance(instr, ins.Arg):
                name = instr.original.split(None, 1)[0].upper()
                raise src.error(
                    f"{name} before the first FROM: only ARG may come before FROM",
                    instr.pos.line,
                    instr.pos.column,
                )
            global_args.append(instr)
        else:
            stages[-1].instructions.append(instr)
            per_stage[-1].append(item)
    if not stages:
        raise KubefileError(
            "the Kubefile has no FROM instruction",
            filename=src.filename,
            hint="add FROM IMAGE (or FROM scratch) after the global ARGs",
        )
    check_rules(src, stages, per_stage)
    return ins.Kubefile(
        filename=src.filename, global_args=global_args, stages=stages, escape=src.escape
    )
