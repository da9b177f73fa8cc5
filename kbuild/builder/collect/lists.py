"""Image lists: sealer's ``imageList`` files, ``--image-list`` and ``--ignored-image-list``.

One reference per line; blank lines and ``#`` comments are skipped. An
exclusion is a reference (normalized as Docker does, so ``nginx`` and
``docker.io/library/nginx:latest`` are one) or a glob (``quay.io/org/*``)
matched against the normalized reference.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from pathlib import Path

from kbuild.errors import UsageError
from kbuild.layerstore import ImageSource

from .found import Found, check_reference, parse_reference

IMAGE_LIST = "imageList"


def list_lines(text: str) -> list[tuple[int, str]]:
    """(line number, entry) of a list file's non-comment lines."""
    out = []
    for n, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if line:
            out.append((n, line))
    return out


def scan_image_list(text: str, file: str, app: str | None) -> list[Found]:
    """The references of an ``imageList`` file (each must be a valid reference)."""
    found = []
    for n, entry in list_lines(text):
        source = ImageSource(file, n, app, "imageList")
        found.append(Found(check_reference(entry, source), source))
    return found


def read_list_file(path: Path, what: str) -> str:
    """A list file's text; ``UsageError`` naming the flag when it cannot be read."""
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"{what} {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise UsageError(f"{what} {path}: not a text file") from None


class Exclusions:
    """References and globs excluded from collection (``--ignored-image-list``)."""

    def __init__(self, entries: Iterable[tuple[str, str]] = ()) -> None:
        self.exact: set[str] = set()
        self.globs: list[str] = []
        for entry, where in entries:
            if any(c in entry for c in "*?["):
                self.globs.append(entry)
                continue
            ref = parse_reference(entry)
            if ref is None:
                raise UsageError(f"{where}: {entry!r} is not an image reference or a glob")
            self.exact.add(str(ref))

    @classmethod
    def from_files(cls, files: Iterable[Path], refs: Iterable[str] = ()) -> Exclusions:
        """Exclusions from list files and single references."""
        entries = [(r, "--exclude-image") for r in refs]
        for path in files:
            text = read_list_file(path, "--ignored-image-list")
            entries += [(e, f"{path}:{n}") for n, e in list_lines(text)]
        return cls(entries)

    def key(self) -> list[str]:
        """A stable form for cache keys."""
        return sorted(self.exact) + sorted(self.globs)

    def excluded(self, ref: str) -> bool:
        """Whether ``ref`` (as found) is excluded."""
        parsed = parse_reference(ref)
        name = str(parsed) if parsed is not None else ref
        return name in self.exact or any(
            fnmatch.fnmatchcase(name, g) or fnmatch.fnmatchcase(ref, g) for g in self.globs)
