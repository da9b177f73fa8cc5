"""A directory tree as tar entries (hard links found, overlay whiteouts read), and packing it."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING

from kbuild.errors import StoreError

from ._pack import TarEntry, pack_layer, tar_name
from ._types import LayerInfo
from .events import Progress

if TYPE_CHECKING:
    from ._layout import Layout

_OVERLAY_OPAQUE_XATTRS = ("trusted.overlay.opaque", "user.overlay.opaque")
_KEPT_XATTRS = ("security.capability",)
_SPECIAL = {stat.S_IFCHR: "char", stat.S_IFBLK: "block", stat.S_IFIFO: "fifo"}
_Found = list[tuple[TarEntry, "tuple[int, int] | None"]]


def _xattr(path: str, name: str) -> bytes | None:
    try:
        return os.getxattr(path, name, follow_symlinks=False)
    except OSError as exc:
        if exc.errno in (errno.ENODATA, errno.ENOTSUP, errno.EPERM, errno.EACCES):
            return None
        raise


def _entries_of(de: os.DirEntry[str], relpath: str, overlay_upper: bool) -> _Found:
    """The entries one directory entry stands for (a hard-link key for files
    with several links); none for a socket, which is not part of an image."""
    st = de.stat(follow_symlinks=False)
    mode, mtime = stat.S_IMODE(st.st_mode), int(st.st_mtime)
    fmt = stat.S_IFMT(st.st_mode)
    if fmt == stat.S_IFDIR:
        out: _Found = [(TarEntry(relpath, "dir", mode, mtime=mtime), None)]
        if overlay_upper and any(_xattr(de.path, x) == b"y" for x in _OVERLAY_OPAQUE_XATTRS):
            out.append((TarEntry(relpath, "opaque", 0, mtime=mtime), None))
        return out
    if fmt == stat.S_IFREG:
        xattrs = {x: v for x in _KEPT_XATTRS if (v := _xattr(de.path, x)) is not None}
        key = (st.st_dev, st.st_ino) if st.st_nlink > 1 else None
        return [(TarEntry(relpath, "file", mode, source=de.path, size=st.st_size, mtime=mtime,
                          xattrs=xattrs or None), key)]
    if fmt == stat.S_IFLNK:
        return [(TarEntry(relpath, "symlink", 0o777, linkname=os.readlink(de.path),
                          mtime=mtime), None)]
    if fmt == stat.S_IFCHR and overlay_upper and st.st_rdev == 0:
        return [(TarEntry(relpath, "whiteout", 0, mtime=mtime), None)]
    if fmt in _SPECIAL:
        return [(TarEntry(relpath, _SPECIAL[fmt], mode, rdev=st.st_rdev, mtime=mtime), None)]
    return []


def tree_entries(root_dir: Path | str, *, overlay_upper: bool = False) -> list[TarEntry]:
    """The entries of a directory tree (hard links detected, sorted by tar name)."""
    root = os.fspath(root_dir)
    if not os.path.isdir(root):
        raise StoreError(f"{root}: not a directory")
    found: _Found = []
    stack = [""]
    while stack:
        rel = stack.pop()
        with os.scandir(os.path.join(root, rel) if rel else root) as it:
            for de in it:
                relpath = f"{rel}/{de.name}" if rel else de.name
                entries = _entries_of(de, relpath, overlay_upper)
                found += entries
                if entries and entries[0][0].kind == "dir":
                    stack.append(relpath)
    found.sort(key=lambda fk: tar_name(fk[0]).encode("utf-8", "surrogateescape"))
    first: dict[tuple[int, int], str] = {}
    out: list[TarEntry] = []
    for entry, key in found:
        if key is not None:
            if key in first:
                entry = TarEntry(entry.path, "hardlink", entry.mode, linkname=first[key],
                                 mtime=entry.mtime)
            else:
                first[key] = entry.path
        out.append(entry)
    return out


def pack_tree(
    store: Layout,
    root_dir: Path | str,
    *,
    overlay_upper: bool = False,
    compression: str = "zstd",
    level: int = 3,
    threads: int = 0,
    progress: Progress | None = None,
) -> LayerInfo:
    """Pack a directory into a layer (an overlay upper dir: whiteouts as ``.wh.`` files)."""
    return pack_layer(store, tree_entries(root_dir, overlay_upper=overlay_upper),
                      compression=compression, level=level, threads=threads, progress=progress)
