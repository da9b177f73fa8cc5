"""One-pass layer packing: deterministic tar → zstd/gzip → blob, hashing both streams."""

from __future__ import annotations

import itertools
import os
import queue
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import zstandard

from kbuild.errors import StoreError

from . import _tarwriter as tw
from ._pipeline import TarConsumer, WriterThread
from ._types import WHITEOUT_OPAQUE, WHITEOUT_PREFIX, LayerInfo, MediaType
from .events import BytesDone, Progress

if TYPE_CHECKING:
    from ._layout import Layout

KINDS = frozenset({"file", "dir", "symlink", "hardlink", "whiteout", "opaque", "char", "block",
                   "fifo"})
_BUF = 2 << 20
_FLUSH_AT = 2 << 20
_POOL = 4
_SMALL = 256 << 10
_PROGRESS_EVERY = 8 << 20


@dataclass
class TarEntry:
    """One entry of a layer.

    ``path`` is relative (``usr/bin/x``). ``kind`` is one of ``file``, ``dir``,
    ``symlink``, ``hardlink`` (``linkname`` = the other path in the layer),
    ``whiteout`` (``path`` is deleted), ``opaque`` (``path`` is a directory
    whose lower content is hidden), or ``char``/``block``/``fifo``
    (``rdev``). A ``file`` reads ``source``, or holds ``data``.
    """

    path: str
    kind: str
    mode: int = 0o644
    source: Path | str | None = None
    linkname: str | None = None
    size: int = 0
    mtime: int = 0
    data: bytes | None = None
    rdev: int = 0
    xattrs: dict[str, bytes] | None = field(default=None)


def normalize_path(path: str) -> str:
    """``./a//b/`` → ``a/b``; refuses ``..`` and empty paths."""
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if not parts or ".." in parts:
        raise StoreError(f"invalid path for a layer entry: {path!r}")
    return "/".join(parts)


def tar_name(entry: TarEntry) -> str:
    """The member name the entry gets in the tar (whiteouts become ``.wh.`` files)."""
    path = normalize_path(entry.path)
    if entry.kind == "whiteout":
        head, _, base = path.rpartition("/")
        return (head + "/" if head else "") + WHITEOUT_PREFIX + base
    if entry.kind == "opaque":
        return path + "/" + WHITEOUT_OPAQUE
    return path


class _Out(Protocol):
    def write(self, data: bytes | bytearray | memoryview) -> object: ...


class _Compressor(Protocol):
    def write(self, data: bytes | bytearray | memoryview) -> object: ...
    def close(self) -> None: ...


class _Gzip:
    def __init__(self, out: _Out, level: int) -> None:
        self._out = out
        self._z = zlib.compressobj(max(1, min(level, 9)), zlib.DEFLATED, 31)

    def write(self, data: bytes | bytearray | memoryview) -> int:
        chunk = self._z.compress(data)
        if chunk:
            self._out.write(chunk)
        return len(data)

    def close(self) -> None:
        self._out.write(self._z.flush())


class _Plain:
    def __init__(self, out: _Out) -> None:
        self._out = out

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self._out.write(bytes(data))
        return len(data)

    def close(self) -> None:
        pass


class _Zstd:
    def __init__(self, out: _Out, level: int, threads: int) -> None:
        cctx = zstandard.ZstdCompressor(
            level=level, threads=threads, write_content_size=False, write_checksum=False
        )
        self._w = cctx.stream_writer(out, write_size=_BUF, closefd=False)  # type: ignore[arg-type]

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self._w.write(data)
        return len(data)

    def close(self) -> None:
        self._w.flush(zstandard.FLUSH_FRAME)
        self._w.close()


def _compressor(out: _Out, compression: str, level: int, threads: int) -> tuple[
    _Compressor, str
]:
    if compression == "zstd":
        n = threads if threads > 0 else (os.cpu_count() or 1)
        return _Zstd(out, level, n), MediaType.OCI_LAYER_ZSTD
    if compression == "gzip":
        return _Gzip(out, level), MediaType.OCI_LAYER_GZIP
    if compression in ("none", "uncompressed"):
        return _Plain(out), MediaType.OCI_LAYER
    raise StoreError(f"unknown compression {compression!r} (zstd, gzip or none)")


def source_date_epoch() -> int | None:
    """``$SOURCE_DATE_EPOCH`` as an int, or ``None`` when unset."""
    value = os.environ.get("SOURCE_DATE_EPOCH")
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise StoreError(f"SOURCE_DATE_EPOCH must be an integer, not {value!r}") from None


class TarStream:
    """Writes tar members into a compressor while hashing the tar bytes (the diffID).

    Hashing and compression run in a helper thread (:class:`TarConsumer`);
    large files are read into a small pool of buffers that return to the
    pool once consumed, so memory stays bounded.
    """

    def __init__(self, comp: _Compressor, progress: Progress | None = None,
                 total: int | None = None) -> None:
        self._comp = comp
        self._consumer = TarConsumer(comp)
        self.size = 0
        self._pending = bytearray()
        self._pool: queue.Queue[bytearray] = queue.Queue()
        for _ in range(_POOL):
            self._pool.put(bytearray(_BUF))
        self._progress = progress
        self._total = total
        self._next_report = _PROGRESS_EVERY

    def hexdigest(self) -> str:
        """sha256 of the tar stream (after :meth:`finish`)."""
        return self._consumer.hash.hexdigest()

    def _emit(self, data: bytes | bytearray | memoryview, pool: object = None) -> None:
        self._consumer.put((data, pool))
        self.size += len(data)
        if self._progress is not None and self.size >= self._next_report:
            self._next_report = self.size + _PROGRESS_EVERY
            self._progress(BytesDone("layer", self.size, self._total))

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Append raw tar bytes (buffered into large writes)."""
        self._pending += data
        if len(self._pending) >= _FLUSH_AT:
            self.flush()

    def flush(self) -> None:
        """Push buffered bytes to the compressor."""
        if self._pending:
            self._emit(self._pending)
            self._pending = bytearray()

    def copy_file(self, f: object, size: int, what: str) -> None:
        """Append ``size`` bytes read from the raw file ``f`` (plus padding)."""
        readinto = f.readinto  # type: ignore[attr-defined]
        self.flush()
        remaining = size
        while remaining:
            buf = self._pool.get()
            want = min(remaining, _BUF)
            try:
                n = readinto(memoryview(buf)[:want])
            except BaseException:
                self._pool.put(buf)
                raise
            if not n:
                self._pool.put(buf)
                raise StoreError(f"{what}: file shrank while it was being packed")
            self._emit(memoryview(buf)[:n], self._pool)
            remaining -= n
        pad = tw.padding(size)
        if pad:
            self.write(tw.ZEROS[:pad])

    def finish(self) -> None:
        """Write the end-of-archive marker, flush, and wait for the hash."""
        self.write(tw.END_OF_ARCHIVE)
        self.flush()
        self._consumer.close()
        if self._progress is not None:
            self._progress(BytesDone("layer", self.size, self._total))

    def abort(self) -> None:
        """Stop the helper thread after an error."""
        self._consumer.__exit__(RuntimeError, None, None)


def _prepared(entries: Iterable[TarEntry]) -> list[tuple[str, TarEntry]]:
    named: list[tuple[str, TarEntry]] = []
    for e in entries:
        if e.kind not in KINDS:
            raise StoreError(f"{e.path}: unknown entry kind {e.kind!r}")
        named.append((tar_name(e), e))
    named = _relink(named)
    named.sort(key=lambda ne: ne[0].encode("utf-8", "surrogateescape"))
    for (a, _), (b, _) in itertools.pairwise(named):
        if a == b:
            raise StoreError(f"duplicate layer entry {a!r}")
    return named


def _relink(named: list[tuple[str, TarEntry]]) -> list[tuple[str, TarEntry]]:
    """Make the first name (in tar order) of each hard-link group carry the content."""
    by_name = {n: e for n, e in named}
    groups: dict[str, list[str]] = {}
    for n, e in named:
        if e.kind == "hardlink":
            target = normalize_path(e.linkname or "")
            if by_name.get(target) is None or by_name[target].kind != "file":
                raise StoreError(f"{e.path}: hard link to {target!r}, which is not a file of "
                                 "the layer")
            groups.setdefault(target, []).append(n)
    if not groups:
        return named
    replace: dict[str, TarEntry] = {}
    for target, links in groups.items():
        first = min([target, *links], key=lambda x: x.encode("utf-8", "surrogateescape"))
        if first == target:
            continue
        content = by_name[target]
        replace[first] = TarEntry(first, "file", content.mode, source=content.source,
                                  size=content.size, mtime=content.mtime,
                                  data=content.data, xattrs=content.xattrs)
        for other in [target, *links]:
            if other != first:
                replace[other] = TarEntry(other, "hardlink", by_name[other].mode,
                                          linkname=first, mtime=by_name[other].mtime)
    return [(n, replace.get(n, e)) for n, e in named]


def _write_file(stream: TarStream, name: str, e: TarEntry, mode: int, mtime: int) -> None:
    assert e.source is not None
    try:
        fd = os.open(e.source, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise StoreError(f"{e.source}: cannot read: {exc.strerror}") from None
    try:
        size = os.fstat(fd).st_size
        head = tw.header(name, mode=mode, size=size, mtime=mtime, xattrs=e.xattrs)
        if size <= _SMALL:
            data = os.read(fd, size + 1) if size else b""
            while len(data) < size:
                more = os.read(fd, size - len(data))
                if not more:
                    raise StoreError(f"{e.source}: file shrank while it was being packed")
                data += more
            stream.write(head)
            stream.write(data[:size])
            pad = tw.padding(size)
            if pad:
                stream.write(tw.ZEROS[:pad])
            return
        stream.write(head)
        with open(fd, "rb", buffering=0, closefd=False) as f:
            stream.copy_file(f, size, str(e.source))
    finally:
        os.close(fd)


def write_entries(stream: TarStream, named: list[tuple[str, TarEntry]], clamp: int | None) -> None:
    """Write sorted ``(tar name, entry)`` pairs to ``stream``."""
    files: set[str] = set()
    for name, e in named:
        mtime = max(0, int(e.mtime))
        if clamp is not None and mtime > clamp:
            mtime = clamp
        mode = e.mode & 0o7777
        kind = e.kind
        if kind == "file":
            if e.data is not None:
                stream.write(tw.header(name, mode=mode, size=len(e.data), mtime=mtime,
                                       xattrs=e.xattrs))
                stream.write(e.data)
                pad = tw.padding(len(e.data))
                if pad:
                    stream.write(b"\0" * pad)
            elif e.source is not None:
                _write_file(stream, name, e, mode, mtime)
            else:
                stream.write(tw.header(name, mode=mode, size=0, mtime=mtime, xattrs=e.xattrs))
            files.add(name)
        elif kind == "dir":
            stream.write(tw.header(name + "/", mode=mode, mtime=mtime, typeflag=tw.DIRTYPE,
                                   xattrs=e.xattrs))
        elif kind == "symlink":
            if not e.linkname:
                raise StoreError(f"{e.path}: symlink without a target")
            stream.write(tw.header(name, mode=0o777, mtime=mtime, typeflag=tw.SYMTYPE,
                                   linkname=e.linkname))
        elif kind == "hardlink":
            target = normalize_path(e.linkname or "")
            if target not in files:
                raise StoreError(f"{e.path}: hard link to {target!r}, which is not a file")
            stream.write(tw.header(name, mode=mode, mtime=mtime, typeflag=tw.LNKTYPE,
                                   linkname=target))
        elif kind in ("whiteout", "opaque"):
            stream.write(tw.header(name, mode=0, mtime=mtime))
        else:
            typeflag = {"char": tw.CHRTYPE, "block": tw.BLKTYPE, "fifo": tw.FIFOTYPE}[kind]
            stream.write(tw.header(name, mode=mode, mtime=mtime, typeflag=typeflag,
                                   devmajor=os.major(e.rdev), devminor=os.minor(e.rdev)))
    stream.finish()


def pack_layer(
    store: Layout,
    entries: Iterable[TarEntry],
    *,
    compression: str = "zstd",
    level: int = 3,
    threads: int = 0,
    progress: Progress | None = None,
) -> LayerInfo:
    """Pack ``entries`` into a layer blob of ``store`` in one streaming pass.

    Entries are sorted by name, owners are 0/0, mtimes are clamped to
    ``$SOURCE_DATE_EPOCH`` when it is set. ``threads=0`` uses every core for
    zstd. Returns the digest (of the compressed blob) and the diffID (of the tar).
    """
    named = _prepared(entries)
    clamp = source_date_epoch()
    total = sum(len(e.data) if e.data is not None else e.size for _, e in named) or None
    try:
        with store.blob_writer() as writer, WriterThread(writer) as out:
            comp, media_type = _compressor(out, compression, level, threads)
            stream = TarStream(comp, progress, total)
            try:
                write_entries(stream, named, clamp)
                comp.close()
            except BaseException:
                stream.abort()
                raise
    except OSError as exc:
        raise StoreError(f"cannot write a layer into {store.root}: "
                         f"{exc.strerror or exc}") from exc
    return LayerInfo(
        digest=writer.digest,
        diff_id="sha256:" + stream.hexdigest(),
        size=writer.size,
        uncompressed_size=stream.size,
        media_type=media_type,
    )
