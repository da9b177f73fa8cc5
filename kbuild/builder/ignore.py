"""Ignore files of the build context (``.kbuildignore``, ``.dockerignore``).

The semantics are Docker's: one pattern per line, ``#`` starts a comment line,
blank lines are skipped, a leading ``!`` makes an exception, patterns are
cleaned (``./a`` → ``a``, a leading ``/`` dropped), ``*`` and ``?`` never
cross ``/``, ``**`` matches any number of directories (zero included), and the
last pattern that matches a path (or one of its parent directories) decides.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from pathlib import Path

IGNORE_FILES = (".kbuildignore", ".dockerignore")


@dataclass(frozen=True)
class Pattern:
    """One cleaned pattern line."""

    text: str
    exclusion: bool  # True for ``!pattern`` (re-includes)
    regex: re.Pattern[str]


def _clean(text: str) -> str:
    text = text.strip()
    if not text:
        return ""
    cleaned = posixpath.normpath(text)
    if cleaned.startswith("/"):
        cleaned = cleaned.lstrip("/") or "."
    return cleaned


def compile_pattern(pattern: str) -> re.Pattern[str]:
    """Translate one Docker ignore pattern into an anchored regular expression."""
    out = ["^"]
    i = 0
    n = len(pattern)
    while i < n:
        c = pattern[i]
        if c == "*":
            if i + 1 < n and pattern[i + 1] == "*":
                i += 2
                if i < n and pattern[i] == "/":
                    # "**/" matches zero or more whole directories.
                    out.append("(?:.*/)?")
                    i += 1
                else:
                    out.append(".*")
                continue
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "\\" and i + 1 < n:
            i += 1
            out.append(re.escape(pattern[i]))
        elif c == "[":
            end = pattern.find("]", i + 1)
            if end == -1:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1 : end]
                if body.startswith("!") or body.startswith("^"):
                    body = "^" + body[1:]
                out.append("[" + body.replace("\\", "\\\\") + "]")
                i = end
        else:
            out.append(re.escape(c))
        i += 1
    out.append("$")
    return re.compile("".join(out))


class IgnoreMatcher:
    """Decides whether a context-relative path is excluded from the context."""

    def __init__(self, lines: list[str] | None = None, *, source: str = "") -> None:
        self.source = source
        self.patterns: list[Pattern] = []
        for raw in lines or []:
            line = raw.rstrip("\r\n")
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            line = line.strip()
            exclusion = line.startswith("!")
            if exclusion:
                line = line[1:].strip()
            cleaned = _clean(line)
            if not cleaned:
                continue
            self.patterns.append(Pattern(cleaned, exclusion, compile_pattern(cleaned)))
        self.has_exceptions = any(p.exclusion for p in self.patterns)

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def excluded(self, rel: str) -> bool:
        """True when ``rel`` (``a/b/c``, no leading slash) is left out of the context."""
        if not self.patterns or rel in ("", "."):
            return False
        parts = rel.split("/")
        prefixes = ["/".join(parts[: k + 1]) for k in range(len(parts))]
        result = False
        for pat in self.patterns:
            if any(pat.regex.match(prefix) for prefix in prefixes):
                result = not pat.exclusion
        return result

    def may_include_below(self, rel_dir: str) -> bool:
        """Whether an excluded directory might still hold re-included paths.

        Lets a walk skip a whole excluded directory when no ``!`` pattern could
        reach inside it.
        """
        if not self.has_exceptions:
            return False
        prefix = rel_dir.rstrip("/") + "/"
        for pat in self.patterns:
            if not pat.exclusion:
                continue
            literal = re.split(r"[*?\[\\]", pat.text, maxsplit=1)[0]
            if literal.startswith(prefix) or prefix.startswith(literal) or not literal:
                return True
        return False


def load_ignore(context: Path) -> IgnoreMatcher:
    """Read ``.kbuildignore`` from the context root, else ``.dockerignore``, else none."""
    for name in IGNORE_FILES:
        path = context / name
        if path.is_file():
            return IgnoreMatcher(path.read_text(encoding="utf-8").splitlines(), source=name)
    return IgnoreMatcher([], source="")
