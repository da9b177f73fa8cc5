"""Layer blobs as tar streams: zstd, gzip or plain tar, by media type or by the first bytes.

The one place that knows layer compressions on the reading side; the packer
(``_pack``) is the one that writes them. :func:`open_layer_stream` is public:
the runtime, ``builder.inspect`` and ADD's archive detection read layers
through it.
"""

from __future__ import annotations

import gzip
import hashlib
import zlib
from types import TracebackType
from typing import IO, BinaryIO, Protocol, cast

import zstandard

from kbuild.errors import StoreError

from ._types import layer_compression

CHUNK = 1 << 20
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
GZIP_MAGIC = b"\x1f\x8b"


class Reader(Protocol):
    """Anything with ``read(n)`` returning bytes (a file, a decompressor, a socket stream)."""

    def read(self, n: int = -1, /) -> bytes: ...


def sniff_compression(head: bytes) -> str:
    """``zstd``, ``gzip`` or ``none`` from the first (up to 4) bytes of a blob."""
    if head.startswith(ZSTD_MAGIC):
        return "zstd"
    if head.startswith(GZIP_MAGIC):
        return "gzip"
    return "none"


class HashReader:
    """A read-only stream that hashes (sha256) and counts what passes through it."""

    def __init__(self, raw: Reader) -> None:
        self._raw = raw
        self.hash = hashlib.sha256()
        self.size = 0

    def read(self, n: int = -1) -> bytes:
        data = self._raw.read(n)
        self.hash.update(data)
        self.size += len(data)
        return data

    def readable(self) -> bool:
        return True

    def drain(self) -> None:
        """Read to the end (so the hash covers everything)."""
        while self.read(CHUNK):
            pass


class _Prefixed:
    """``head`` (bytes already read for sniffing) followed by the rest of ``raw``."""

    def __init__(self, head: bytes, raw: Reader) -> None:
        self._head = head
        self._raw = raw

    def read(self, n: int = -1) -> bytes:
        if not self._head:
            return self._raw.read(n)
        if n < 0:
            data, self._head = self._head + self._raw.read(), b""
            return data
        data, self._head = self._head[:n], self._head[n:]
        if len(data) < n:
            data += self._raw.read(n - len(data))
        return data

    def readable(self) -> bool:
        return True


class LayerStream:
    """The decompressed tar stream of a layer blob.

    ``compression`` says what was found. Corrupt compressed data raises
    :class:`StoreError` from ``read``. Closing it leaves ``blob`` open.
    """

    def __init__(self, blob: Reader, media_type: str | None) -> None:
        source: Reader = blob
        if media_type is None:
            head = b""
            while len(head) < 4 and (chunk := blob.read(4 - len(head))):
                head += chunk
            self.compression = sniff_compression(head)
            source = _Prefixed(head, blob)
        else:
            self.compression = layer_compression(media_type)
        file_like = cast(IO[bytes], source)  # both decompressors only call read()
        self._reader: Reader
        self._closer: IO[bytes] | gzip.GzipFile | None = None
        if self.compression == "zstd":
            self._closer = zstandard.ZstdDecompressor().stream_reader(
                file_like, read_size=CHUNK, read_across_frames=True, closefd=False)
        elif self.compression == "gzip":
            self._closer = gzip.GzipFile(fileobj=file_like, mode="rb")
        elif self.compression != "none":
            raise StoreError(f"unsupported layer media type {media_type!r}")
        self._reader = self._closer if self._closer is not None else source

    def read(self, n: int = -1) -> bytes:
        try:
            return self._reader.read(n)
        except (zstandard.ZstdError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
            raise StoreError(f"layer stream is corrupt: {exc}") from None

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        """Release the decompressor (not the blob)."""
        if self._closer is not None:
            self._closer.close()

    def __enter__(self) -> LayerStream:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def open_layer_stream(blob: Reader, media_type: str | None) -> BinaryIO:
    """``blob`` (a layer, or any tar archive) decompressed as a tar stream.

    ``media_type`` picks the compression (``…tar+zstd``, ``…tar+gzip``,
    Docker's ``…tar.gzip``, plain ``…tar``); ``None`` detects it from the
    first bytes. An unknown media type raises :class:`StoreError`, corrupt
    compressed data a :class:`StoreError` from ``read``. The result is a
    :class:`LayerStream` (``read``, ``close``, a context manager); closing it
    leaves ``blob`` open.
    """
    return cast(BinaryIO, LayerStream(blob, media_type))


def open_hashed_tar(stream: Reader, media_type: str | None) -> tuple[HashReader, HashReader]:
    """``(blob reader, tar reader)``: both hash what they pass (blob digest, diffID)."""
    blob = HashReader(stream)
    return blob, HashReader(open_layer_stream(blob, media_type))
