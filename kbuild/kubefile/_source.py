"""The pre-pass: parser directives, comments, continuations and heredocs.

A Kubefile is read as physical lines. Parser directives (``# escape=`` …)
may only open the file. Comment and blank lines are dropped. A line ending in
the escape character (optionally followed by blanks) continues on the next
line; comment and blank lines inside a continuation are skipped, as Docker
does. The joined text of one instruction is a :class:`LogicalLine`, which
maps every offset of its text back to a physical line and column so errors
point at the exact place. Heredoc bodies (``RUN <<EOF``) are cut out of the
line stream here and attached to the logical line that announced them.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from kbuild.errors import KubefileError

_DIRECTIVE = re.compile(r"^\s*#\s*([A-Za-z][A-Za-z0-9_-]*)\s*=\s*(.*?)\s*$")
_KNOWN_DIRECTIVES = ("escape", "syntax", "check")
#: Instructions whose shell form may announce heredocs.
HEREDOC_INSTRUCTIONS = frozenset({"RUN"})
_HEREDOC_WORD = re.compile(r"^(\d*)<<(-?)(?:\"([^\"]+)\"|'([^']+)'|([^\s<>|;&()\"'`]+))")
_MAX_HEREDOCS = 64


@dataclass
class Heredoc:
    """One heredoc: its delimiter, body and where it was announced."""

    name: str
    body: str
    quoted: bool
    offset: int  # of the ``<<`` in the logical line


@dataclass
class LogicalLine:
    """The joined text of one instruction and the map back to the file."""

    text: str
    #: (offset in ``text``, physical line, column of that offset), ascending.
    segments: list[tuple[int, int, int]]
    end_line: int
    heredocs: list[Heredoc] = field(default_factory=list)

    @property
    def line(self) -> int:
        """Physical line where the instruction starts."""
        return self.segments[0][1]

    @property
    def column(self) -> int:
        """Column where the instruction starts."""
        return self.segments[0][2]

    def locate(self, offset: int) -> tuple[int, int]:
        """Physical (line, column) of ``offset`` in :attr:`text`.

        An offset at or past the end maps just after the last character.
        """
        offset = max(0, min(offset, len(self.text)))
        starts = [s[0] for s in self.segments]
        i = bisect.bisect_right(starts, offset) - 1
        start, line, col = self.segments[max(i, 0)]
        return line, col + (offset - start)


@dataclass
class Source:
    """A Kubefile split into its physical lines, directives and logical lines."""

    filename: str
    lines: list[str]
    escape: str
    logical: list[LogicalLine]

    def error(
        self, message: str, line: int, column: int, *, hint: str | None = None
    ) -> KubefileError:
        """A :class:`KubefileError` pointing at ``line``:``column``."""
        src = self.lines[line - 1] if 1 <= line <= len(self.lines) else None
        return KubefileError(
            message,
            filename=self.filename,
            line=line,
            column=column,
            source_line=src,
            hint=hint,
        )

    def error_at(
        self, ll: LogicalLine, offset: int, message: str, *, hint: str | None = None
    ) -> KubefileError:
        """A :class:`KubefileError` at ``offset`` of logical line ``ll``."""
        line, col = ll.locate(offset)
        return self.error(message, line, col, hint=hint)


def split_lines(text: str) -> list[str]:
    """Physical lines of ``text`` (``\\n``, ``\\r\\n`` and ``\\r`` end a line)."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def read_source(text: str, filename: str) -> Source:
    """Run the pre-pass over ``text`` (a leading byte-order mark is dropped)."""
    lines = split_lines(text.removeprefix("\ufeff"))
    src = Source(filename=filename, lines=lines, escape="\\", logical=[])
    _read_directives(src)
    src.logical = list(_logical_lines(src))
    return src


def _read_directives(src: Source) -> None:
    seen: dict[str, int] = {}
    for number, raw in enumerate(src.lines, start=1):
        m = _DIRECTIVE.match(raw)
        if not m:
            return
        key, value = m.group(1).lower(), m.group(2)
        if key not in _KNOWN_DIRECTIVES:
            return  # an unknown directive is a comment and ends the directives
        if key in seen:
            raise src.error(
                f"the '{key}' parser directive is given twice (first on line {seen[key]})",
                number,
                raw.index("#") + 1,
            )
        seen[key] = number
        if key == "escape":
            if value not in ("\\", "`"):
                raise src.error(
                    f"invalid escape character {value!r}: expected \\ or `",
                    number,
                    raw.index(value, raw.index("=")) + 1 if value else len(raw) + 1,
                )
            src.escape = value


def _is_skippable(raw: str) -> bool:
    stripped = raw.lstrip()
    return not stripped or stripped.startswith("#")


def _logical_lines(src: Source) -> Iterator[LogicalLine]:
    lines, n = src.lines, len(src.lines)
    cont = re.compile(re.escape(src.escape) + r"[ \t]*$")
    i = 0
    while i < n:
        raw = lines[i]
        if _is_skippable(raw):
            i += 1
            continue
        indent = len(raw) - len(raw.lstrip())
        parts: list[str] = []
        segments: list[tuple[int, int, int]] = []
        offset = 0
        piece, col = raw[indent:], indent + 1
        while True:
            m = cont.search(piece)
            body = piece[: m.start()] if m else piece
            segments.append((offset, i + 1, col))
            parts.append(body)
            offset += len(body)
            last = i + 1
            i += 1
            if not m:
                break
            while i < n and _is_skippable(lines[i]):
                i += 1
            if i >= n:
                break
            piece, col = lines[i], 1
        ll = LogicalLine(text="".join(parts).rstrip(), segments=segments, end_line=last)
        keyword = ll.text.split(None, 1)[0].upper() if ll.text.strip() else ""
        if keyword in HEREDOC_INSTRUCTIONS:
            i = _read_heredocs(src, ll, i)
        yield ll


def find_heredoc_markers(text: str, escape: str) -> list[tuple[int, str, bool, bool]]:
    """Heredoc markers in the shell-form text of an instruction.

    Returns (offset, delimiter, strip_tabs, quoted) for every word that starts
    with ``<<`` (optionally after a file descriptor number), outside quotes.
    A JSON exec form has no heredocs.
    """
    kw = re.match(r"\s*\S+\s*", text)
    rest_start = kw.end() if kw else len(text)
    if text[rest_start:].startswith("["):
        return []
    found: list[tuple[int, str, bool, bool]] = []
    i, n = rest_start, len(text)
    while i < n:
        while i < n and text[i].isspace():
            i += 1
        start = i
        quote: str | None = None
        while i < n:
            c = text[i]
            if c == escape and quote != "'":
                i += 2
                continue
            if quote:
                if c == quote:
                    quote = None
            elif c in "\"'":
                quote = c
            elif c.isspace():
                break
            i += 1
        word = text[start:i]
        m = _HEREDOC_WORD.match(word)
        if m and not word.startswith("<<<", len(m.group(1))):
            name = m.group(3) or m.group(4) or m.group(5)
            quoted = m.group(5) is None
            found.append((start + len(m.group(1)), name, m.group(2) == "-", quoted))
    return found


def _read_heredocs(src: Source, ll: LogicalLine, i: int) -> int:
    markers = find_heredoc_markers(ll.text, src.escape)
    if len(markers) > _MAX_HEREDOCS:
        raise src.error_at(ll, markers[_MAX_HEREDOCS][0], "too many heredocs in one instruction")
    lines = src.lines
    for offset, name, strip_tabs, quoted in markers:
        body: list[str] = []
        while True:
            if i >= len(lines):
                raise src.error_at(
                    ll,
                    offset,
                    f"heredoc '{name}' is never closed",
                    hint=f"end it with a line that holds only {name}",
                )
            raw = lines[i]
            i += 1
            candidate = raw.lstrip("\t") if strip_tabs else raw
            if candidate == name:
                break
            body.append(candidate + "\n")
        ll.heredocs.append(Heredoc(name=name, body="".join(body), quoted=quoted, offset=offset))
        ll.end_line = i
    return i
