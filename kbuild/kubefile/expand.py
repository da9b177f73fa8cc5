"""Shell-word handling: quote removal at parse time, variable expansion later.

The parser stores every word the builder expands (FROM image, COPY sources,
ENV values …) in *expansion-ready* form: quotes are removed, and a character
that must stay literal through expansion is escaped with a backslash,
whatever the Kubefile's escape character — a ``$`` that was escaped or
single-quoted becomes ``\\$``, a literal backslash becomes ``\\\\``.
:func:`expand` then substitutes variables and drops those escapes (any other
backslash is kept as it is):

``$V``, ``${V}``
    the value of ``V``, or "" when unset;
``${V:-d}`` / ``${V-d}``
    ``d`` when ``V`` is unset or empty / unset;
``${V:+a}`` / ``${V+a}``
    ``a`` when ``V`` is set and not empty / set, else "";
``${V:?msg}`` / ``${V?msg}``
    an error when ``V`` is unset or empty / unset.

``d``, ``a`` and ``msg`` may hold further expansions.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import replace

from kbuild.errors import KubefileError
from kbuild.kubefile import instructions as ins
from kbuild.kubefile.instructions import Instruction, Position

_NAME_START = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_")
_NAME_CHARS = _NAME_START | frozenset("0123456789")
_MAX_DEPTH = 32


class _SyntaxProblem(Exception):
    def __init__(self, offset: int, message: str) -> None:
        super().__init__(message)
        self.offset = offset
        self.message = message


class _RequiredUnset(Exception):
    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name = name
        self.message = message


def unquote(word: str, escape: str = "\\") -> str:
    """Remove shell quoting from a raw ``word``, giving expansion-ready form.

    Unquoted: ``<esc>c`` is ``c``. In double quotes: ``<esc>`` escapes only
    ``"``, ``$`` and itself. In single quotes everything is literal. A ``$``
    that came out literal, and every literal escape character, are
    re-escaped with a backslash so that :func:`expand` keeps them. An
    unterminated quote runs to the end of the word. ``escape`` is the
    Kubefile's escape character (``\\`` or a backtick).
    """
    out: list[str] = []
    i, n = 0, len(word)

    def literal(c: str) -> None:
        out.append("\\" + c if c in ("$", "\\") else c)

    while i < n:
        c = word[i]
        if c == escape:
            if i + 1 < n:
                literal(word[i + 1])
                i += 2
            else:
                literal(c)
                i += 1
        elif c == "'":
            j = word.find("'", i + 1)
            j = n if j < 0 else j
            for ch in word[i + 1 : j]:
                literal(ch)
            i = j + 1
        elif c == '"':
            i += 1
            while i < n and word[i] != '"':
                ch = word[i]
                if ch == escape and i + 1 < n and word[i + 1] in ('"', "$", escape):
                    literal(word[i + 1])
                    i += 2
                else:
                    out.append("\\\\" if ch == "\\" else ch)
                    i += 1
            i += 1
        else:
            out.append("\\\\" if c == "\\" else c)
            i += 1
    return "".join(out)


def escape_literal(text: str) -> str:
    """Expansion-ready form of ``text`` taken literally (no variables)."""
    return "".join("\\" + c if c in ("$", "\\") else c for c in text)


def expand(
    word: str,
    env: Mapping[str, str],
    *,
    pos: Position,
    escape: str = "\\",
) -> str:
    """Substitute variables of ``env`` in the expansion-ready ``word``.

    Unknown variables expand to "". Raises :class:`KubefileError` at ``pos``
    for a malformed ``${…}`` or for ``${V:?msg}`` with ``V`` unset. Words from
    the parser always use ``\\`` as their escape; ``escape`` is only for
    expanding raw text written with another escape character.
    """
    try:
        value, _ = _scan(word, 0, env, escape, closing=False, depth=0)
    except _SyntaxProblem as p:
        raise KubefileError(
            f"bad variable reference in {word!r}: {p.message}",
            filename=pos.filename,
            line=pos.line,
            column=pos.column,
        ) from None
    except _RequiredUnset as r:
        raise KubefileError(
            f"{r.name}: {r.message}",
            filename=pos.filename,
            line=pos.line,
            column=pos.column,
        ) from None
    return value


def check(word: str, escape: str = "\\") -> tuple[int, str] | None:
    """Check the ``${…}`` syntax of ``word``: None, or (offset, problem)."""
    try:
        _scan(word, 0, _Everything(), escape, closing=False, depth=0)
    except _SyntaxProblem as p:
        return p.offset, p.message
    return None


def variables(word: str, escape: str = "\\") -> list[str]:
    """Names of the variables ``word`` refers to, in order, without repeats."""
    seen = _Recorder()
    with contextlib.suppress(_SyntaxProblem, _RequiredUnset):
        _scan(word, 0, seen, escape, closing=False, depth=0)
    return list(dict.fromkeys(seen.names))


class _Everything(dict[str, str]):
    """A scope in which every variable is set (for syntax checks)."""

    def __contains__(self, key: object) -> bool:
        return True

    def get(self, key: str, default: str | None = None) -> str:  # type: ignore[override]
        return "x"

    def __getitem__(self, key: str) -> str:
        return "x"


class _Recorder(_Everything):
    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []

    def __contains__(self, key: object) -> bool:
        if isinstance(key, str):
            self.names.append(key)
        return True


def _scan(
    s: str, i: int, env: Mapping[str, str], escape: str, *, closing: bool, depth: int
) -> tuple[str, int]:
    """Expand ``s`` from ``i``; with ``closing``, stop at an unescaped ``}``."""
    if depth > _MAX_DEPTH:
        raise _SyntaxProblem(i, "variable references are nested too deeply")
    out: list[str] = []
    n = len(s)
    while i < n:
        c = s[i]
        if c == escape and i + 1 < n:
            nxt = s[i + 1]
            if nxt in ("$", escape) or (closing and nxt == "}"):
                out.append(nxt)
            else:
                out.append(c + nxt)
            i += 2
        elif closing and c == "}":
            return "".join(out), i
        elif c == "$":
            value, i = _dollar(s, i, env, escape, depth)
            out.append(value)
        else:
            out.append(c)
            i += 1
    if closing:
        raise _SyntaxProblem(n, "missing '}'")
    return "".join(out), i


def _dollar(s: str, i: int, env: Mapping[str, str], escape: str, depth: int) -> tuple[str, int]:
    n = len(s)
    j = i + 1
    if j < n and s[j] == "{":
        k = j + 1
        start = k
        if k < n and s[k] in _NAME_START:
            while k < n and s[k] in _NAME_CHARS:
                k += 1
        name = s[start:k]
        if not name:
            if k >= n:
                raise _SyntaxProblem(i, "missing '}'")
            raise _SyntaxProblem(k, f"expected a variable name after '${{', found {s[k]!r}")
        if k >= n:
            raise _SyntaxProblem(i, "missing '}'")
        c = s[k]
        if c == "}":
            return env.get(name, "") if name in env else "", k + 1
        if c == ":" and k + 1 < n and s[k + 1] in "-+?":
            op = s[k : k + 2]
            k += 2
        elif c in "-+?":
            op = c
            k += 1
        else:
            raise _SyntaxProblem(
                k, f"unsupported modifier {c!r} in '${{{name}…}}' (use :- :+ :? - + ?)"
            )
        is_set = name in env
        value = env.get(name, "") if is_set else ""
        word, k = _scan(s, k, env, escape, closing=True, depth=depth + 1)
        if op == ":-":
            result = value if value else word
        elif op == "-":
            result = value if is_set else word
        elif op == ":+":
            result = word if value else ""
        elif op == "+":
            result = word if is_set else ""
        elif (op == ":?" and not value) or (op == "?" and not is_set):
            raise _RequiredUnset(name, word or "is not set")
        else:
            result = value
        return result, k + 1
    if j < n and s[j] in _NAME_START:
        k = j
        while k < n and s[k] in _NAME_CHARS:
            k += 1
        name = s[j:k]
        return (env.get(name, "") if name in env else ""), k
    return "$", j


def _pairs(
    pairs: tuple[tuple[str, str], ...], env: Mapping[str, str], pos: Position, escape: str
) -> tuple[tuple[str, str], ...]:
    return tuple(
        (expand(k, env, pos=pos, escape=escape), expand(v, env, pos=pos, escape=escape))
        for k, v in pairs
    )


def expand_instruction(
    instr: Instruction, env: Mapping[str, str], *, escape: str = "\\"
) -> Instruction:
    """A copy of ``instr`` with every expandable field expanded in ``env``.

    Expanded, as in a Dockerfile: FROM image and ``--platform``; ARG default;
    ENV and LABEL keys and values; COPY/ADD sources, destination and flags;
    APP/CNI/CSI sources; APPENV values; WORKDIR, USER, EXPOSE, VOLUME,
    STOPSIGNAL; IMAGE references. Commands (RUN, CMD, CMDS, ENTRYPOINT, SHELL, APPCMDS), app
    names, stage aliases, LAUNCH, MAINTAINER and KUBEVERSION are returned
    unchanged. All values of one ENV/LABEL see the scope from before it.
    """
    pos = instr.pos

    def x(word: str) -> str:
        return expand(word, env, pos=pos, escape=escape)

    def xo(word: str | None) -> str | None:
        return None if word is None else x(word)

    if isinstance(instr, ins.From):
        return replace(instr, image=x(instr.image), platform=xo(instr.platform))
    if isinstance(instr, ins.Arg):
        return replace(instr, default=xo(instr.default))
    if isinstance(instr, ins.Env | ins.Label | ins.AppEnv):
        return replace(instr, pairs=_pairs(instr.pairs, env, pos, escape))
    if isinstance(instr, ins.Add):
        return replace(
            instr,
            sources=tuple(x(s) for s in instr.sources),
            dest=x(instr.dest),
            chmod=xo(instr.chmod),
            chown=xo(instr.chown),
            checksum=xo(instr.checksum),
        )
    if isinstance(instr, ins.Copy):
        return replace(
            instr,
            sources=tuple(x(s) for s in instr.sources),
            dest=x(instr.dest),
            from_stage=xo(instr.from_stage),
            chmod=xo(instr.chmod),
            chown=xo(instr.chown),
        )
    if isinstance(instr, ins.App):
        return replace(instr, sources=tuple(x(s) for s in instr.sources))
    if isinstance(instr, ins.Workdir):
        return replace(instr, path=x(instr.path))
    if isinstance(instr, ins.User):
        return replace(instr, user=x(instr.user))
    if isinstance(instr, ins.Expose):
        return replace(instr, ports=tuple(x(p) for p in instr.ports))
    if isinstance(instr, ins.Volume):
        return replace(instr, paths=tuple(x(p) for p in instr.paths))
    if isinstance(instr, ins.StopSignal):
        return replace(instr, signal=x(instr.signal))
    if isinstance(instr, ins.Image):
        return replace(instr, refs=tuple(x(r) for r in instr.refs))
    return instr
