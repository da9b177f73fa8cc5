"""A passphrase-sealed byte stream: scrypt, then AES-256-GCM in chunks.

Layout (all integers big-endian)::

    header   "KBSEAL\\0\\1" | salt (16) | log2 N, r, p (1 each) | nonce prefix (7) | chunk size (4)
    mac      HMAC-SHA256 of the header with the MAC key (32)
    records  final flag (1) | length (4) | AES-GCM ciphertext+tag of one chunk

scrypt turns the passphrase and salt into 64 bytes: an AES key and a MAC key.
The header MAC tells a wrong passphrase apart from a damaged file before any
chunk is opened. Each chunk's nonce is the prefix, its counter and the final
flag, and the header is its associated data, so chunks cannot be reordered,
moved between files or cut off (a stream without its final record is
truncated).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from kbuild.errors import BackupError

__all__ = ["MAGIC", "SealReader", "SealWriter", "is_sealed"]

MAGIC = b"KBSEAL\x00\x01"
_HEADER = struct.Struct(">8s16sBBB7sI")
_RECORD = struct.Struct(">BI")
_MAC_LEN = 32
_TAG = 16
CHUNK = 1 << 20
LOG2_N, R, P = 15, 8, 1
"""scrypt cost: 32 MiB of memory, a tenth of a second here."""
_MAX_LOG2_N = 20


def is_sealed(head: bytes) -> bool:
    """True when a file starting with ``head`` is sealed."""
    return head.startswith(MAGIC)


def _keys(passphrase: str, salt: bytes, log2n: int, r: int, p: int) -> tuple[bytes, bytes]:
    key = hashlib.scrypt(
        passphrase.encode(), salt=salt, n=1 << log2n, r=r, p=p, maxmem=1 << 30, dklen=64
    )
    return key[:32], key[32:]


def _nonce(prefix: bytes, counter: int, final: bool) -> bytes:
    return prefix + struct.pack(">IB", counter, int(final))


class SealWriter:
    """Encrypts what is written to it onto ``out``; :meth:`close` writes the
    final record (and does not close ``out``)."""

    def __init__(self, out: BinaryIO, passphrase: str, *, chunk: int = CHUNK) -> None:
        if not passphrase:
            raise BackupError("an empty passphrase cannot seal a backup")
        salt, prefix = os.urandom(16), os.urandom(7)
        self._header = _HEADER.pack(MAGIC, salt, LOG2_N, R, P, prefix, chunk)
        key, mac_key = _keys(passphrase, salt, LOG2_N, R, P)
        self._aead = AESGCM(key)
        self._prefix = prefix
        self._chunk = chunk
        self._out = out
        self._buf = bytearray()
        self._counter = 0
        self._closed = False
        out.write(self._header + hmac.digest(mac_key, self._header, "sha256"))

    def write(self, data: bytes) -> int:
        """Buffer ``data``; full chunks go out sealed."""
        self._buf += data
        while len(self._buf) > self._chunk:
            self._record(bytes(self._buf[: self._chunk]), final=False)
            del self._buf[: self._chunk]
        return len(data)

    def _record(self, plain: bytes, *, final: bool) -> None:
        sealed = self._aead.encrypt(_nonce(self._prefix, self._counter, final), plain, self._header)
        self._out.write(_RECORD.pack(int(final), len(sealed)) + sealed)
        self._counter += 1

    def flush(self) -> None:
        """Nothing to flush before the final record."""

    def close(self) -> None:
        """Write what is left as the final record."""
        if not self._closed:
            self._closed = True
            self._record(bytes(self._buf), final=True)
            self._buf.clear()


class SealReader:
    """Decrypts a sealed stream (a file-like ``read``); every error names ``where``."""

    def __init__(self, src: BinaryIO, passphrase: str, *, where: str) -> None:
        self._src = src
        self._where = where
        header = self._exact(_HEADER.size, "its header")
        magic, salt, log2n, r, p, prefix, chunk = _HEADER.unpack(header)
        if magic != MAGIC:
            raise BackupError(f"{where}: not a sealed kbuild backup")
        if not (10 <= log2n <= _MAX_LOG2_N and 1 <= r <= 32 and 1 <= p <= 16 and chunk > 0):
            raise BackupError(f"{where}: the sealed header is damaged")
        mac = self._exact(_MAC_LEN, "its header")
        key, mac_key = _keys(passphrase, salt, log2n, r, p)
        if not hmac.compare_digest(mac, hmac.digest(mac_key, header, "sha256")):
            raise BackupError(
                f"{where}: wrong passphrase (or a damaged header)",
                hint="give the passphrase the backup was made with",
            )
        self._header = header
        self._aead = AESGCM(key)
        self._prefix = prefix
        self._max = chunk + _TAG
        self._counter = 0
        self._done = False
        self._buf = b""

    def _exact(self, n: int, what: str) -> bytes:
        data = self._src.read(n)
        if len(data) != n:
            raise BackupError(f"{self._where}: truncated (in {what})")
        return data

    def _next(self) -> None:
        final, length = _RECORD.unpack(self._exact(_RECORD.size, "a record"))
        if final > 1 or length > self._max or length < _TAG:
            raise BackupError(f"{self._where}: damaged (record {self._counter})")
        sealed = self._exact(length, f"record {self._counter}")
        try:
            self._buf = self._aead.decrypt(
                _nonce(self._prefix, self._counter, bool(final)), sealed, self._header
            )
        except InvalidTag:
            raise BackupError(f"{self._where}: damaged (record {self._counter})") from None
        self._counter += 1
        if final:
            self._done = True
            if self._src.read(1):
                raise BackupError(f"{self._where}: data after the final record")

    def read(self, n: int = -1) -> bytes:
        """Up to ``n`` decrypted bytes (all when ``n < 0``); b"" at the end."""
        out = bytearray()
        while n < 0 or len(out) < n:
            if not self._buf:
                if self._done:
                    break
                self._next()
                continue
            take = len(self._buf) if n < 0 else min(n - len(out), len(self._buf))
            out += self._buf[:take]
            self._buf = self._buf[take:]
        return bytes(out)
