"""The lark parser (built once per escape character) and its error messages.

Lark reports what it expected as terminal names; :func:`explain` turns that
into words that name the instruction and the argument that is missing, with
the instruction's usage as the hint.
"""

from __future__ import annotations

import contextlib
import functools
import re
from importlib import resources
from typing import Any

from lark import Lark, Token, Tree
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

#: Every instruction keyword the grammar knows.
KEYWORDS: tuple[str, ...] = (
    "FROM", "ARG", "ENV", "LABEL", "MAINTAINER", "COPY", "ADD", "RUN", "CMD",
    "CMDS", "LAUNCH", "APP", "CNI", "CSI", "APPCMDS", "APPENV", "KUBEVERSION",
    "ENTRYPOINT", "WORKDIR", "USER", "EXPOSE", "VOLUME", "STOPSIGNAL", "SHELL",
    "IMAGE",
)  # fmt: skip

#: How each instruction is written (the hint of a syntax error).
USAGE: dict[str, str] = {
    "FROM": "FROM [--platform=OS/ARCH] IMAGE|scratch [AS NAME]",
    "ARG": "ARG NAME[=DEFAULT] ...",
    "ENV": "ENV KEY=VALUE ...  (or the legacy ENV KEY VALUE)",
    "LABEL": "LABEL KEY=VALUE ...",
    "MAINTAINER": "MAINTAINER NAME",
    "COPY": "COPY [--from=STAGE] [--chmod=MODE] [--chown=USER] SRC... DEST  (or a JSON array)",
    "ADD": "ADD [--chmod=MODE] [--chown=USER] [--checksum=sha256:HEX] SRC... DEST",
    "RUN": 'RUN COMMAND  or  RUN ["executable", "arg", ...]  or  RUN <<EOF',
    "CMD": 'CMD COMMAND  or  CMD ["executable", "arg", ...]',
    "CMDS": 'CMDS ["command", ...]',
    "LAUNCH": 'LAUNCH ["app", ...]',
    "APP": "APP NAME SOURCE...  (SOURCE: a path, local://path or an http(s):// URL)",
    "CNI": "CNI NAME SOURCE...",
    "CSI": "CSI NAME SOURCE...",
    "APPCMDS": 'APPCMDS NAME ["command", ...]',
    "APPENV": "APPENV NAME KEY=VALUE ...",
    "KUBEVERSION": "KUBEVERSION CONSTRAINT  (e.g. >=v1.22.0 <v1.31.0)",
    "ENTRYPOINT": 'ENTRYPOINT COMMAND  or  ENTRYPOINT ["executable", "arg", ...]',
    "WORKDIR": "WORKDIR PATH",
    "USER": "USER NAME|UID[:GROUP|GID]",
    "EXPOSE": "EXPOSE PORT[/PROTOCOL] ...",
    "VOLUME": 'VOLUME PATH ...  or  VOLUME ["path", ...]',
    "STOPSIGNAL": "STOPSIGNAL SIGNAL",
    "SHELL": 'SHELL ["executable", "arg", ...]',
    "IMAGE": "IMAGE [--app=NAME] REFERENCE...  (container images to carry in registry/)",
}

_FIRST_ARG: dict[str, str] = {
    "FROM": "an image name (or scratch)",
    "ARG": "a variable name (NAME or NAME=DEFAULT)",
    "ENV": "KEY=VALUE",
    "LABEL": "KEY=VALUE",
    "MAINTAINER": "a name",
    "COPY": "a source and a destination",
    "ADD": "a source and a destination",
    "RUN": "a command",
    "CMD": "a command",
    "CMDS": 'a JSON array of commands, like ["kubectl apply -f app.yaml"]',
    "LAUNCH": 'a JSON array of app names, like ["app"]',
    "APP": "an app name",
    "CNI": "a network plugin (app) name",
    "CSI": "a storage plugin (app) name",
    "APPCMDS": "an app name",
    "APPENV": "an app name",
    "KUBEVERSION": "a version constraint, like >=v1.22.0",
    "ENTRYPOINT": "a command",
    "WORKDIR": "a directory",
    "USER": "a user name or id",
    "EXPOSE": "a port, like 80/tcp",
    "VOLUME": "a path",
    "STOPSIGNAL": "a signal name or number, like SIGTERM",
    "SHELL": 'a JSON array, like ["/bin/sh", "-c"]',
    "IMAGE": "an image reference, like quay.io/org/operator:v1.2",
}


@functools.lru_cache(maxsize=2)
def parser(escape: str = "\\") -> Lark:
    """The LALR parser for one logical line, for escape character ``escape``."""
    text = resources.files("kbuild.kubefile").joinpath("kubefile.lark").read_text("utf-8")
    esc = "\\\\" if escape == "\\" else re.escape(escape)
    return Lark(
        text.replace("@E@", esc),
        parser="lalr",
        lexer="contextual",
        maybe_placeholders=False,
        propagate_positions=False,
    )


def parse_line(text: str, escape: str) -> Tree[Token]:
    """Parse one logical line; lark errors propagate (see :func:`explain`)."""
    return parser(escape).parse(text)


def _tokens(values: list[Any]) -> list[Token]:
    out: list[Token] = []
    for v in values:
        if isinstance(v, Token):
            out.append(v)
        elif isinstance(v, Tree):
            out.extend(_tokens(list(v.children)))
    return out


def explain(err: UnexpectedInput, text: str, keyword: str) -> tuple[int, str, str]:
    """(offset in ``text``, message, hint) for a lark error on ``text``."""
    usage = "usage: " + USAGE.get(keyword, keyword)
    expected: set[str] = set()
    seen: list[Token] = []
    at_end = False
    offset = len(text)
    got = ""
    if isinstance(err, UnexpectedToken):
        expected = set(err.expected)
        state = err.state
        if state is not None:
            seen = _tokens(list(state.value_stack))
            with contextlib.suppress(AttributeError, KeyError, TypeError):
                expected |= set(state.parse_conf.states[state.position].keys())
        if err.token.type == "$END":
            at_end = True
        else:
            offset = err.token.start_pos or 0
            got = str(err.token)
    elif isinstance(err, UnexpectedCharacters):
        expected = set(err.allowed or ())
        offset = err.pos_in_stream or 0
        got = text[offset:]
    elif isinstance(err, UnexpectedEOF):
        expected = set(err.expected)
        at_end = True
    if offset >= len(text.rstrip()):
        at_end = True
        offset = len(text.rstrip())

    if "<END-OF-FILE>" in expected:
        expected = (expected - {"<END-OF-FILE>"}) | {"$END"}
    last = seen[-1].type if seen else keyword
    want = _wanted(keyword, expected, last, seen)
    if not at_end and got[:1] in ('"', "'") and expected & {"WORD", "PAIR", "FLAG"}:
        return offset, f"unterminated quoted string (missing closing {got[0]})", usage
    if at_end:
        after = _after(keyword, last, seen)
        return offset, f"expected {want} after {after}", usage
    shown = got.split()[0] if got.split() else got
    if len(shown) > 30:
        shown = shown[:27] + "..."
    if got.startswith("[") and "JSON_ARRAY" in expected:
        return (
            offset,
            f"not a JSON array of strings: {shown!r}",
            ('write each item in double quotes, separated by commas, like ["a", "b"]; ' + usage),
        )
    return offset, f"unexpected {shown!r}: expected {want}", usage


def _after(keyword: str, last: str, seen: list[Token]) -> str:
    if last == keyword or not seen:
        return keyword
    if last == "AS":
        return "AS"
    if last == "FLAG":
        return f"the flag {seen[-1]}"
    if last == "NAME" and keyword in ("APP", "CNI", "CSI", "APPCMDS", "APPENV"):
        return f"the app name {str(seen[-1])!r}"
    if last == "NAME":
        return f"the name {str(seen[-1])!r}"
    if keyword in ("COPY", "ADD") and last == "WORD":
        return "the source"
    return f"{str(seen[-1])!r}"


def _wanted(keyword: str, expected: set[str], last: str, seen: list[Token]) -> str:
    end_ok = "$END" in expected
    core = expected - {"$END"}
    if keyword == "FROM":
        if last == "AS":
            return "a stage name"
        if core == {"AS"}:
            return "AS NAME or the end of the line"
    if keyword in ("ENV", "LABEL") and last == "NAME":
        return "a value"
    if keyword in ("COPY", "ADD") and last == "WORD":
        return "a destination"
    if keyword in ("APP", "CNI", "CSI") and last == "NAME":
        return "at least one source (a path, local://path or an http(s):// URL)"
    if keyword == "APPCMDS" and last == "NAME":
        return 'a JSON array of commands, like ["bash install.sh"]'
    if keyword == "APPENV" and "PAIR" in core:
        return "KEY=VALUE" + (" or the end of the line" if end_ok else "")
    if last in (keyword, "FLAG") or not seen:
        return _FIRST_ARG.get(keyword, "an argument")
    if not core and end_ok:
        return "the end of the line"
    words = {
        "WORD": "another argument",
        "PAIR": "KEY=VALUE",
        "FLAG": "a flag",
        "JSON_ARRAY": "a JSON array of strings",
        "NAME": "a name",
        "REST": "an argument",
        "AS": "AS NAME",
    }
    parts = sorted({words.get(t, t.lower()) for t in core})
    if end_ok:
        parts.append("the end of the line")
    return " or ".join(parts) if parts else "the end of the line"
