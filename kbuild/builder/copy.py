"""COPY, ADD and APP: from resolved sources to planned layer entries and a content digest.

Planning is cheap (stat calls, hashes from the stat cache); only a cache miss
materializes the entries (extracting archives, downloading URLs that have a
checksum) and packs them.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import stat
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import xxhash

from kbuild.errors import BuildError, KbuildError, StoreError
from kbuild.layerstore import open_layer_stream, unpack_layer

from .context import FileDigest, Item, Source, SourceTree
from .fetch import fetch_url, is_url, url_basename

RACY_NS = 2_000_000_000  # a file changed this recently may change again within its mtime tick


@dataclass(slots=True)
class Planned:
    """One entry of a layer being planned.

    ``kind`` is ``item`` (a file/dir/symlink from a tree), ``dir`` (a parent
    directory the step creates), ``archive`` (a local tar to extract into
    ``dest``), ``url`` (a download to ``dest``) or ``opaque`` (hide what lower
    layers hold under ``dest``).
    """

    kind: str
    dest: str  # path in the image, no leading slash
    item: Item | None = None
    mode: int | None = None
    url: str = ""
    digest: str = ""  # content digest when known (url, archive)
    download: Path | None = None  # where a URL was already downloaded


def layer_path(path: str) -> str:
    """Normalize an image path to the layer form (``a/b``, no leading slash)."""
    cleaned = posixpath.normpath("/" + path).lstrip("/")
    return cleaned


def parse_chmod(text: str | None, where: str) -> int | None:
    """``--chmod=0755`` → 0o755 (octal only)."""
    if not text:
        return None
    try:
        value = int(text, 8)
    except ValueError:
        value = -1
    if not 0 <= value <= 0o7777:
        raise BuildError(f"{where}: --chmod={text} is not an octal mode")
    return value


def is_tar_archive(path: Path) -> bool:
    """Whether ``path`` is a tar archive, plain or compressed (zstd, gzip), by content."""
    try:
        with open(path, "rb") as f, open_layer_stream(f, None) as tar:
            block = b""
            while len(block) < 512 and (chunk := tar.read(512 - len(block))):
                block += chunk
    except (OSError, StoreError):
        return False
    if len(block) < 512:
        return False
    if block[257:262] == b"ustar":
        return True
    try:
        tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
    except tarfile.TarError:
        return False
    return True


class CopyPlanner:
    """Turns the sources of one COPY/ADD/APP into planned entries."""

    def __init__(self, tree: SourceTree, where: str, *, chmod: int | None = None) -> None:
        self.tree = tree
        self.where = where
        self.chmod = chmod
        self.entries: list[Planned] = []

    def add_parents(self, dest: str) -> None:
        """Directory entries for every parent of ``dest`` (for a layer on scratch)."""
        parts = dest.split("/")[:-1]
        for k in range(len(parts)):
            self.entries.append(Planned("dir", "/".join(parts[: k + 1]), mode=0o755))

    def add_local(self, sources: list[Source], dest: str, dest_is_dir: bool, *,
                  extract: bool = False) -> None:
        """Sources from the tree: directories by content, files/links by name."""
        for src in sources:
            if src.is_dir:
                prefix = dest + "/" if dest else ""
                for item in self.tree.walk(src):
                    path = prefix + item.rel if item.rel else dest
                    if path:
                        self._add_item(path, item)
                continue
            target = posixpath.join(dest, src.basename) if dest_is_dir else dest
            item = Item("", str(src.path), src.st)
            if extract and item.kind == "file" and is_tar_archive(src.path):
                self.entries.append(Planned("archive", dest, item=item))
                continue
            self._add_item(target, item)

    def _add_item(self, path: str, item: Item) -> None:
        if item.kind == "other":
            return
        mode = stat.S_IMODE(item.st.st_mode)
        if self.chmod is not None and item.kind != "symlink":
            mode = self.chmod
        self.entries.append(Planned("item", path, item=item, mode=mode))

    def add_url(self, url: str, dest: str, dest_is_dir: bool, *, checksum: str | None,
                tmp_dir: Path) -> None:
        """A download; without a checksum it is fetched now (its bytes make the key)."""
        target = posixpath.join(dest, url_basename(url)) if dest_is_dir else dest
        mode = self.chmod if self.chmod is not None else 0o644
        if checksum is not None:
            self.entries.append(Planned("url", target, url=url, digest=checksum, mode=mode))
            return
        fd, name = tempfile.mkstemp(prefix="download-", dir=tmp_dir)
        os.close(fd)
        file = Path(name)
        try:
            digest = fetch_url(url, file, where=self.where)
        except BaseException:
            file.unlink(missing_ok=True)
            raise
        self.entries.append(
            Planned("url", target, url=url, digest=digest, mode=mode, download=file)
        )

    def add_opaque(self, dest: str) -> None:
        """Hide what lower layers hold under ``dest`` (an app replaced)."""
        self.entries.append(Planned("opaque", dest))

    @property
    def total_bytes(self) -> int:
        """Bytes of the regular files planned so far (for progress)."""
        return sum(
            e.item.st.st_size
            for e in self.entries
            if e.item is not None and e.kind in ("item", "archive") and e.item.kind == "file"
        )

    def signature(self) -> tuple[str, bool]:
        """A key of the plan from stat data only, and whether a file is too fresh to trust it.

        Same idea as the stat cache, for a whole COPY: when no entry's
        device, inode, size, mtime, ctime or mode changed, neither did the
        content digest, and it can be reused without a lookup per file.
        """
        lines = []
        newest = 0
        for e in self.entries:
            if e.item is not None:
                st = e.item.st
                lines.append(f"{e.dest}\0{e.kind}\0{e.mode}\0{st.st_dev}\0{st.st_ino}\0"
                             f"{st.st_size}\0{st.st_mtime_ns}\0{st.st_ctime_ns}\0{st.st_mode}")
                newest = max(newest, st.st_mtime_ns, st.st_ctime_ns)
            else:
                lines.append(f"{e.dest}\0{e.kind}\0{e.mode}\0{e.digest}")
        data = "\n".join(lines).encode("utf-8", "surrogateescape")
        racy = time.time_ns() - newest < RACY_NS
        return "stat-tree:" + xxhash.xxh3_128_hexdigest(data), racy

    def digest(self, file_digest: FileDigest) -> str:
        """Content digest of the plan: paths, types, modes, sizes and bytes, no mtimes."""
        h = hashlib.sha256()
        for e in self.entries:
            if e.kind == "item" and e.item is not None:
                kind = e.item.kind
                if kind == "file":
                    extra = file_digest(e.item.path, e.item.st)
                    size = e.item.st.st_size
                elif kind == "symlink":
                    extra, size = os.readlink(e.item.path), 0
                else:
                    extra, size = "", 0
                line = f"{e.dest}\0{kind}\0{e.mode:o}\0{size}\0{extra}"
            elif e.kind == "archive" and e.item is not None:
                line = f"{e.dest}\0archive\0{file_digest(e.item.path, e.item.st)}"
            elif e.kind == "url":
                line = f"{e.dest}\0url\0{e.mode:o}\0{e.digest}"
            else:
                line = f"{e.dest}\0{e.kind}\0{e.mode or 0:o}"
            h.update(line.encode("utf-8", "surrogateescape") + b"\n")
        return "sha256:" + h.hexdigest()


EntryTuple = tuple[str, str, int, str | Path | None, str | None, int, int]


def iter_tar_entries(planner: CopyPlanner, tmp_dir: Path) -> Iterator[EntryTuple]:
    """Materialize a plan as (path, kind, mode, source, linkname, size, mtime) tuples.

    Extracts archives and downloads URLs (with their checksum) into ``tmp_dir``.
    """
    for n, e in enumerate(planner.entries):
        if e.kind == "dir":
            yield (e.dest, "dir", e.mode or 0o755, None, None, 0, 0)
        elif e.kind == "opaque":
            yield (e.dest, "opaque", 0o755, None, None, 0, 0)
        elif e.kind == "item" and e.item is not None:
            item = e.item
            mtime = int(item.st.st_mtime)
            mode = e.mode if e.mode is not None else stat.S_IMODE(item.st.st_mode)
            if item.kind == "file":
                yield (e.dest, "file", mode, item.path, None, item.st.st_size, mtime)
            elif item.kind == "dir":
                yield (e.dest, "dir", mode, None, None, 0, mtime)
            elif item.kind == "symlink":
                yield (e.dest, "symlink", 0o777, None, os.readlink(item.path), 0, mtime)
        elif e.kind == "url":
            file = e.download
            if file is None:
                file = tmp_dir / f"url-{n}"
                fetch_url(e.url, file, checksum=e.digest, where=planner.where)
            size = file.stat().st_size
            yield (e.dest, "file", e.mode or 0o644, file, None, size, 0)
        elif e.kind == "archive" and e.item is not None:
            target = tmp_dir / f"archive-{n}"
            target.mkdir()
            with open(e.item.path, "rb") as f:
                try:
                    unpack_layer(f, target, media_type=None)
                except KbuildError:
                    raise
                except Exception as exc:
                    name = os.path.basename(e.item.path)
                    raise BuildError(f"{planner.where}: cannot extract {name}: {exc}") from exc
            tree = SourceTree(target, what="archive")
            src = Source(".", target, target.lstat())
            for item in tree.walk(src):
                if not item.rel:
                    continue
                path = posixpath.join(e.dest, item.rel) if e.dest else item.rel
                mtime = int(item.st.st_mtime)
                mode = stat.S_IMODE(item.st.st_mode)
                if item.kind == "file":
                    yield (path, "file", mode, item.path, None, item.st.st_size, mtime)
                elif item.kind == "dir":
                    yield (path, "dir", mode, None, None, 0, mtime)
                elif item.kind == "symlink":
                    yield (path, "symlink", 0o777, None, os.readlink(item.path), 0, mtime)


def is_remote(source: str) -> bool:
    """True for URL sources."""
    return is_url(source)
