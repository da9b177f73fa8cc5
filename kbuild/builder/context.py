"""Source trees of COPY/ADD/APP: the build context (with its ignore file) or a stage rootfs.

A source is resolved inside its tree and never leaves it: ``..`` that climbs
out is refused, parent directories that are symlinks are resolved only while
they stay inside, and a symlink that is itself a source or lies under one is
copied as a link, never followed.
"""

from __future__ import annotations

import fnmatch
import os
import posixpath
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from kbuild.errors import BuildError

from .ignore import IgnoreMatcher

FileDigest = Callable[[str, os.stat_result], str]

_GLOB_CHARS = frozenset("*?[")


def has_glob(text: str) -> bool:
    """True when ``text`` holds a glob character."""
    return any(c in _GLOB_CHARS for c in text)


@dataclass(slots=True)
class Item:
    """One file, directory or symlink found under a source."""

    rel: str  # relative to the source itself ("" for the source)
    path: str  # where it lives on this machine
    st: os.stat_result  # lstat

    @property
    def kind(self) -> str:
        """``file``, ``dir``, ``symlink`` or ``other``."""
        mode = self.st.st_mode
        if stat.S_ISLNK(mode):
            return "symlink"
        if stat.S_ISDIR(mode):
            return "dir"
        if stat.S_ISREG(mode):
            return "file"
        return "other"


@dataclass(frozen=True)
class Source:
    """A resolved source: its path in the tree and what lies under it."""

    rel: str  # path inside the tree, "a/b" ("." for the tree root)
    path: Path
    st: os.stat_result

    @property
    def is_dir(self) -> bool:
        """True for a real directory (a symlink to one is a link)."""
        return stat.S_ISDIR(self.st.st_mode)

    @property
    def basename(self) -> str:
        """The last path component ("" for the tree root)."""
        return "" if self.rel == "." else posixpath.basename(self.rel)


class SourceTree:
    """A directory that COPY reads from: the build context or a stage's rootfs."""

    def __init__(self, root: Path, *, ignore: IgnoreMatcher | None = None, what: str) -> None:
        self.root = Path(root)
        self.real_root = Path(os.path.realpath(root))
        self.ignore = ignore or IgnoreMatcher([])
        self.what = what

    # -- resolution ----------------------------------------------------------

    def _clean(self, src: str, where: str) -> str:
        text = src.lstrip("/") or "."
        cleaned = posixpath.normpath(text)
        if cleaned == ".." or cleaned.startswith("../"):
            raise BuildError(
                f"{where}: source {src!r} is outside the {self.what}",
                hint="sources must lie inside the build context; move the file into it",
            )
        return cleaned

    def _host_path(self, rel: str, src: str, where: str) -> Path:
        """Host path of ``rel`` with parent symlinks resolved inside the tree."""
        if rel == ".":
            return self.real_root
        parent, name = posixpath.split(rel)
        parent_path = Path(os.path.realpath(self.real_root / parent)) if parent else self.real_root
        if parent_path != self.real_root and self.real_root not in parent_path.parents:
            raise BuildError(
                f"{where}: source {src!r} leads outside the {self.what} through a symlink"
            )
        return parent_path / name

    def resolve(self, src: str, where: str) -> list[Source]:
        """The sources ``src`` names (globs expanded, sorted); errors name ``where``."""
        cleaned = self._clean(src, where)
        if has_glob(cleaned):
            found = self._glob(cleaned, where)
            if not found:
                raise BuildError(f"{where}: no file in the {self.what} matches {src!r}")
            return found
        path = self._host_path(cleaned, src, where)
        try:
            st = path.lstat()
        except FileNotFoundError:
            st = None
        if st is None:
            raise BuildError(f"{where}: {src!r} not found in the {self.what}")
        if cleaned != "." and self.ignore.excluded(cleaned):
            raise BuildError(
                f"{where}: {src!r} is excluded from the {self.what} by "
                f"{self.ignore.source or 'the ignore file'}")
        return [Source(cleaned, path, st)]

    def _glob(self, pattern: str, where: str) -> list[Source]:
        parts = pattern.split("/")
        current: list[str] = ["."]
        for part in parts:
            nxt: list[str] = []
            for base in current:
                base_path = self._host_path(base, pattern, where) if base != "." else self.real_root
                if not has_glob(part):
                    cand = part if base == "." else f"{base}/{part}"
                    if os.path.lexists(base_path / part):
                        nxt.append(cand)
                    continue
                try:
                    names = sorted(os.listdir(base_path))
                except (NotADirectoryError, FileNotFoundError):
                    continue
                for name in names:
                    if fnmatch.fnmatchcase(name, part):
                        nxt.append(name if base == "." else f"{base}/{name}")
            current = nxt
        out = []
        for rel in current:
            if self.ignore.excluded(rel):
                continue
            path = self._host_path(rel, pattern, where)
            out.append(Source(rel, path, path.lstat()))
        return out

    # -- walking -------------------------------------------------------------

    def walk(self, source: Source) -> Iterator[Item]:
        """The source and, for a directory, everything under it not ignored (sorted)."""
        yield Item("", str(source.path), source.st)
        if source.is_dir:
            prefix = "" if source.rel == "." else source.rel + "/"
            yield from self._walk_dir(str(source.path), prefix, "")

    def _walk_dir(self, path: str, ctx_prefix: str, rel_prefix: str) -> Iterator[Item]:
        try:
            with os.scandir(path) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            raise BuildError(f"cannot read {path}: {exc.strerror}") from exc
        for entry in entries:
            ctx_rel = ctx_prefix + entry.name
            rel = rel_prefix + entry.name
            st = entry.stat(follow_symlinks=False)
            is_dir = stat.S_ISDIR(st.st_mode)
            if self.ignore.excluded(ctx_rel):
                if is_dir and self.ignore.may_include_below(ctx_rel):
                    below = list(self._walk_dir(entry.path, ctx_rel + "/", rel + "/"))
                    if below:
                        yield Item(rel, entry.path, st)
                        yield from below
                continue
            yield Item(rel, entry.path, st)
            if is_dir:
                yield from self._walk_dir(entry.path, ctx_rel + "/", rel + "/")
