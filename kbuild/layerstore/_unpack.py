"""Unpacking layers safely: a layer from a registry is untrusted input.

Entries that would land outside the target are refused with
:class:`UnsafeLayerError` naming the entry: absolute names, ``..``,
symlinks whose relative target climbs above the root, writing through a
symlink that leads out (or is absolute), hard links out of the layer, and
device files unless allowed. Whiteouts are applied (``whiteouts="apply"``)
or kept in overlayfs form (``whiteouts="overlay"``: 0/0 char devices and the
``trusted.overlay.opaque`` xattr) for overlay lower dirs.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from kbuild.errors import DigestMismatch, StoreError, UnsafeLayerError

from ._inroot import check_symlink, components, resolve_in_root
from ._streams import open_hashed_tar
from ._types import WHITEOUT_OPAQUE, WHITEOUT_PREFIX

_CHUNK = 1 << 20


class _Applier:
    """Walks a tar stream; writes it under ``target`` unless ``target`` is None."""

    def __init__(self, target: Path | None, *, allow_devices: bool, whiteouts: str) -> None:
        if whiteouts not in ("apply", "overlay"):
            raise StoreError(f"whiteouts must be 'apply' or 'overlay', not {whiteouts!r}")
        self.target = target
        self.allow_devices = allow_devices
        self.whiteouts = whiteouts
        self.links: dict[str, str] = {}
        self.created: set[str] = set()
        self.dirs: list[tuple[str, int]] = []
        self.new_links = False
        self.as_root = os.geteuid() == 0

    # -- the view of the tree -------------------------------------------

    def lookup(self, rel: str) -> str | None:
        if self.target is None:
            return self.links.get(rel)
        try:
            st = os.lstat(self.target / rel)
        except FileNotFoundError:
            return None
        if stat.S_ISLNK(st.st_mode):
            return os.readlink(self.target / rel)
        return None

    def full(self, rel: list[str]) -> Path:
        assert self.target is not None
        return self.target.joinpath(*rel) if rel else self.target

    def _clear(self, path: Path) -> None:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(path)
        else:
            os.unlink(path)

    def _ensure_parent(self, parent: list[str], what: str) -> None:
        path = self.full(parent)
        try:
            path.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise StoreError(f"layer entry {what!r}: a parent is not a directory") from None

    # -- entries ---------------------------------------------------------

    def apply(self, tf: tarfile.TarFile, m: tarfile.TarInfo) -> None:
        what = m.name
        parts = components(m.name, what)
        if not parts:
            return  # the root directory itself
        parent = resolve_in_root(parts[:-1], self.lookup, what)
        base = parts[-1]
        if base == WHITEOUT_OPAQUE:
            self._opaque(parent, what)
            return
        if base.startswith(WHITEOUT_PREFIX):
            name = base[len(WHITEOUT_PREFIX):]
            if name in ("", ".", "..") or name.startswith(WHITEOUT_PREFIX):
                raise UnsafeLayerError(f"layer entry {what!r} is an invalid whiteout")
            self._whiteout([*parent, name])
            return
        rel_list = [*parent, base]
        rel = "/".join(rel_list)
        link_rel = self._check(m, rel)
        if m.issym():
            self.links[rel] = m.linkname
        else:
            self.links.pop(rel, None)
        self.created.add(rel)
        if self.target is not None:
            self._ensure_parent(parent, what)
            self._write(tf, m, rel_list, link_rel)

    def _check(self, m: tarfile.TarInfo, rel: str) -> list[str]:
        """Refuse an entry that leads out or is not allowed; a hard link's resolved target."""
        what = m.name
        if m.issym():
            check_symlink(rel, m.linkname, self.lookup)
            self.new_links = True
        elif m.islnk():
            if m.linkname.startswith("/") or ".." in m.linkname.split("/"):
                why = "an absolute path" if m.linkname.startswith("/") else "'..'"
                raise UnsafeLayerError(
                    f"layer entry {what!r} is a hard link to {m.linkname!r} ({why}), "
                    "which leads outside the target"
                )
            link_parts = components(m.linkname, what)
            if not link_parts:
                raise UnsafeLayerError(f"layer entry {what!r} is a hard link to the root")
            return [*resolve_in_root(link_parts[:-1], self.lookup, what), link_parts[-1]]
        elif m.ischr() or m.isblk():
            if not self.allow_devices:
                raise UnsafeLayerError(
                    f"layer entry {what!r} is a device file; devices are not allowed here"
                )
        elif not (m.isreg() or m.isdir() or m.isfifo()):
            raise UnsafeLayerError(f"layer entry {what!r} has an unsupported type {m.type!r}")
        return []

    def _write(self, tf: tarfile.TarFile, m: tarfile.TarInfo, rel_list: list[str],
               link_rel: list[str]) -> None:
        what = m.name
        path = self.full(rel_list)
        if m.isdir():
            if not path.is_dir() or path.is_symlink():
                self._clear(path)
                path.mkdir()
            self.dirs.append(("/".join(rel_list), int(m.mtime)))
        else:
            self._clear(path)
            if m.isreg():
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
                with os.fdopen(fd, "wb") as out:
                    src = tf.extractfile(m)
                    if src is not None:
                        shutil.copyfileobj(src, out, _CHUNK)
            elif m.issym():
                os.symlink(m.linkname, path)
            elif m.islnk():
                src_path = self.full(link_rel)
                try:
                    if stat.S_ISDIR(os.lstat(src_path).st_mode):
                        raise UnsafeLayerError(
                            f"layer entry {what!r} is a hard link to a directory"
                        )
                    os.link(src_path, path, follow_symlinks=False)
                except FileNotFoundError:
                    raise StoreError(
                        f"layer entry {what!r}: hard link target {m.linkname!r} does not exist"
                    ) from None
            elif m.isfifo():
                os.mkfifo(path, 0o600)
            else:
                dev_type = stat.S_IFCHR if m.ischr() else stat.S_IFBLK
                os.mknod(path, dev_type | 0o600, os.makedev(m.devmajor, m.devminor))
        self._metadata(path, m)

    def _metadata(self, path: Path, m: tarfile.TarInfo) -> None:
        if m.islnk():
            return  # the inode is the link target's: owner and mode already set
        if self.as_root:
            with contextlib.suppress(OSError):
                os.lchown(path, m.uid, m.gid)
            for key, value in m.pax_headers.items():
                if key.startswith("SCHILY.xattr."):
                    with contextlib.suppress(OSError):
                        os.setxattr(path, key[len("SCHILY.xattr."):],
                                    value.encode("utf-8", "surrogateescape"),
                                    follow_symlinks=False)
        if m.issym():
            with contextlib.suppress(OSError, NotImplementedError):
                os.utime(path, (m.mtime, m.mtime), follow_symlinks=False)
            return
        os.chmod(path, m.mode & 0o7777)
        if not m.isdir():
            os.utime(path, (m.mtime, m.mtime), follow_symlinks=False)

    def _whiteout(self, rel_list: list[str]) -> None:
        rel = "/".join(rel_list)
        self.links.pop(rel, None)
        if self.target is None:
            return
        path = self.full(rel_list)
        if self.whiteouts == "apply":
            self._clear(path)
        else:
            self._ensure_parent(rel_list[:-1], rel)
            self._clear(path)
            os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(0, 0))

    def _opaque(self, parent: list[str], what: str) -> None:
        prefix = "/".join(parent)
        for key in [k for k in self.links if k.startswith(prefix + "/")]:
            if key not in self.created:
                del self.links[key]
        if self.target is None:
            return
        self._ensure_parent(parent, what)
        path = self.full(parent)
        if self.whiteouts == "overlay":
            os.setxattr(path, "trusted.overlay.opaque", b"y")
            return
        with os.scandir(path) as it:
            for de in it:
                rel = f"{prefix}/{de.name}" if prefix else de.name
                if rel not in self.created:
                    self._clear(Path(de.path))

    def finish(self) -> None:
        """Check every symlink again (a later link can change where an earlier one
        leads), then set the directories' mtimes."""
        if self.target is None:
            for rel, linkname in list(self.links.items()):
                check_symlink(rel, linkname, self.lookup)
            return
        if self.new_links:
            for rel, linkname in self._links_on_disk():
                check_symlink(rel, linkname, self.lookup)
        for rel, mtime in reversed(self.dirs):
            with contextlib.suppress(FileNotFoundError):
                os.utime(self.target / rel, (mtime, mtime), follow_symlinks=False)

    def _links_on_disk(self) -> Iterator[tuple[str, str]]:
        """``(rel, linkname)`` of every symlink under the target (earlier layers' too)."""
        assert self.target is not None
        for dirpath, dirnames, filenames in os.walk(self.target):
            dirnames.sort()
            base = os.path.relpath(dirpath, self.target)
            for name in sorted(dirnames + filenames):
                path = os.path.join(dirpath, name)
                if os.path.islink(path):
                    rel = name if base == "." else f"{base}/{name}"
                    yield rel, os.readlink(path)

def _run(
    stream: BinaryIO, target: Path | None, media_type: str | None, *, allow_devices: bool,
    whiteouts: str,
) -> tuple[str, str]:
    blob, tar = open_hashed_tar(stream, media_type)
    applier = _Applier(target, allow_devices=allow_devices, whiteouts=whiteouts)
    try:
        with tarfile.open(fileobj=tar, mode="r|", errorlevel=2) as tf:  # type: ignore[call-overload]
            for member in tf:
                applier.apply(tf, member)
    except tarfile.TarError as exc:
        raise StoreError(f"layer is not a valid tar stream: {exc}") from None
    except OSError as exc:
        if exc.errno is None:
            raise StoreError(f"layer stream is corrupt: {exc}") from None
        raise StoreError(f"cannot unpack layer into {target}: {exc}") from None
    applier.finish()
    tar.drain()
    blob.drain()
    return "sha256:" + tar.hash.hexdigest(), "sha256:" + blob.hash.hexdigest()


def unpack_layer(
    stream: BinaryIO,
    target: Path,
    *,
    media_type: str | None,
    allow_devices: bool = False,
    whiteouts: str = "apply",
) -> str:
    """Unpack a layer blob into ``target``; returns its diffID (sha256 of the tar).

    ``media_type=None`` detects zstd/gzip/plain from the first bytes.
    """
    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    diff_id, _ = _run(stream, target, media_type, allow_devices=allow_devices,
                      whiteouts=whiteouts)
    return diff_id


def check_layer(stream: BinaryIO, media_type: str | None, *, allow_devices: bool = False) -> str:
    """Run every safety check of :func:`unpack_layer` without writing; returns the diffID."""
    diff_id, _ = _run(stream, None, media_type, allow_devices=allow_devices, whiteouts="apply")
    return diff_id


def unpack_verified(
    stream: BinaryIO, target: Path, *, media_type: str | None, diff_id: str, digest: str,
    allow_devices: bool = False, whiteouts: str = "apply",
) -> None:
    """:func:`unpack_layer`, raising :class:`DigestMismatch` if a digest does not match."""
    target.mkdir(parents=True, exist_ok=True)
    got_diff, got_digest = _run(stream, target, media_type, allow_devices=allow_devices,
                                whiteouts=whiteouts)
    if got_digest != digest:
        raise DigestMismatch(digest, got_digest, what="layer blob")
    if got_diff != diff_id:
        raise DigestMismatch(diff_id, got_diff, what="layer diffID")
