"""The backup archive: a zstd tar whose first member, ``manifest.json``, lists
every other member with its size and sha256; sealed with a passphrase
(:mod:`.sealed`) when one is given.

:func:`write_archive` writes it atomically with mode 0600 (a failed write
leaves nothing). :func:`read_archive` unpacks it into a private (0700)
directory and checks every member against the manifest, and the manifest
against the members, before anything is used; a truncated, damaged or
forged archive, or a wrong passphrase, raises :class:`BackupError` naming
the file, and leaves no directory behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import shutil
import tarfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, BinaryIO

import zstandard

from kbuild.errors import BackupError
from kbuild.fsutil import fsync_dir, replacing
from kbuild.runtime.drivers.kubernetes.sealed import MAGIC, SealReader, SealWriter, is_sealed

__all__ = ["FORMAT", "MANIFEST", "Manifest", "Member", "read_archive", "write_archive"]

FORMAT = "kbuild-backup/1"
MANIFEST = "manifest.json"
_MAX_MANIFEST = 1 << 20
_NAME = re.compile(r"[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*")
_COPY = 1 << 20


@dataclass(frozen=True)
class Member:
    """One file of the archive."""

    sha256: str
    size: int


@dataclass
class Manifest:
    """What a backup holds: whose it is and its members."""

    cluster: str
    kubernetes: str
    ca_sha256: str
    """sha256 of the cluster's kubeadm CA certificate (PEM): a restore checks it."""
    created: str
    members: dict[str, Member] = field(default_factory=dict)
    format: str = FORMAT

    def to_json(self) -> bytes:
        """The manifest as archive member."""
        doc: dict[str, Any] = {
            "format": self.format, "cluster": self.cluster, "kubernetes": self.kubernetes,
            "caSha256": self.ca_sha256, "created": self.created,
            "members": {n: {"sha256": m.sha256, "size": m.size}
                        for n, m in sorted(self.members.items())},
        }  # fmt: skip
        return json.dumps(doc, indent=2).encode() + b"\n"

    @classmethod
    def parse(cls, data: bytes, where: str) -> Manifest:
        """A manifest read from an archive (every field checked)."""
        try:
            doc = json.loads(data)
            if doc["format"] != FORMAT:
                raise BackupError(f"{where}: format {doc['format']!r}, kbuild reads {FORMAT}")
            members = {
                str(n): Member(str(m["sha256"]), int(m["size"]))
                for n, m in dict(doc["members"]).items()
            }
            out = cls(str(doc["cluster"]), str(doc["kubernetes"]), str(doc["caSha256"]),
                      str(doc["created"]), members)  # fmt: skip
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise BackupError(f"{where}: its manifest is not valid ({exc})") from None
        for name in members:
            _check_name(name, where)
        return out


def _check_name(name: str, where: str) -> None:
    if name == MANIFEST or not _NAME.fullmatch(name) or ".." in name.split("/"):
        raise BackupError(f"{where}: the manifest names an unsafe member {name!r}")


def _hash_file(path: Path) -> Member:
    h = hashlib.sha256()
    size = 0
    with path.open("rb") as fh:
        while chunk := fh.read(_COPY):
            h.update(chunk)
            size += len(chunk)
    return Member(h.hexdigest(), size)


def _tarinfo(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, 0o600, 0
    return info


def write_archive(
    path: Path, manifest: Manifest, files: Mapping[str, Path], *, passphrase: str | None = None
) -> Manifest:
    """Write ``files`` (member name → local file) and their manifest to
    ``path`` (0600, atomically; sealed with ``passphrase`` when given)."""
    for name in files:
        _check_name(name, str(path))
    manifest.members = {name: _hash_file(p) for name, p in sorted(files.items())}
    try:
        with replacing(path) as tmp:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as out:
                os.fchmod(out.fileno(), 0o600)
                _write_stream(out, manifest, files, passphrase)
                out.flush()
                os.fsync(out.fileno())
    except OSError as exc:
        raise BackupError(f"{path}: cannot write the backup: {exc.strerror or exc}") from None
    fsync_dir(path.parent)
    return manifest


def _write_stream(
    out: BinaryIO, manifest: Manifest, files: Mapping[str, Path], passphrase: str | None
) -> None:
    sealer = SealWriter(out, passphrase) if passphrase else None
    target: Any = sealer if sealer is not None else out
    zw = zstandard.ZstdCompressor(level=3, write_checksum=True).stream_writer(
        target, closefd=False
    )
    with zw, tarfile.open(fileobj=zw, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        data = manifest.to_json()
        tar.addfile(_tarinfo(MANIFEST, len(data)), io.BytesIO(data))
        for name, member in sorted(manifest.members.items()):
            with files[name].open("rb") as fh:
                tar.addfile(_tarinfo(name, member.size), fh)
    if sealer is not None:
        sealer.close()


@contextlib.contextmanager
def _opened(path: Path, passphrase: str | None) -> Iterator[IO[bytes]]:
    where = str(path)
    try:
        fh = path.open("rb")
    except OSError as exc:
        raise BackupError(f"{where}: cannot read it: {exc.strerror}") from None
    with fh:
        sealed = is_sealed(fh.read(len(MAGIC)))
        fh.seek(0)
        if sealed and not passphrase:
            raise BackupError(
                f"{where} is sealed with a passphrase",
                hint="give it with --passphrase-stdin, --passphrase-file or "
                "$KBUILD_BACKUP_PASSPHRASE",
            )
        src: Any = SealReader(fh, passphrase, where=where) if sealed and passphrase else fh
        with zstandard.ZstdDecompressor().stream_reader(src, closefd=False) as zr:
            yield zr


def read_archive(path: Path, dest: Path, *, passphrase: str | None = None) -> Manifest:
    """Unpack the archive ``path`` into the new directory ``dest`` (0700) and
    verify it; on any problem ``dest`` is removed and :class:`BackupError` raised."""
    dest.mkdir(mode=0o700)
    try:
        with _opened(path, passphrase) as stream:
            return _unpack(stream, dest, str(path))
    except BaseException as exc:
        shutil.rmtree(dest, ignore_errors=True)
        if isinstance(exc, (tarfile.TarError, zstandard.ZstdError, EOFError)):
            raise BackupError(f"{path}: truncated or damaged ({exc})") from None
        raise


def _unpack(stream: IO[bytes], dest: Path, where: str) -> Manifest:
    with tarfile.open(fileobj=stream, mode="r|") as tar:
        first = tar.next()
        if first is None or first.name != MANIFEST or not first.isfile():
            raise BackupError(f"{where}: not a kbuild backup (no {MANIFEST} first)")
        if first.size > _MAX_MANIFEST:
            raise BackupError(f"{where}: its manifest is too large")
        fh = tar.extractfile(first)
        assert fh is not None
        manifest = Manifest.parse(fh.read(), where)
        seen: set[str] = set()
        while (info := tar.next()) is not None:
            if info.name in seen:
                raise BackupError(f"{where}: member {info.name} appears twice")
            _extract(tar, info, manifest, dest, where)
            seen.add(info.name)
        missing = sorted(set(manifest.members) - seen)
        if missing:
            raise BackupError(f"{where}: truncated or damaged: {', '.join(missing)} missing")
    return manifest


def _extract(
    tar: tarfile.TarFile, info: tarfile.TarInfo, manifest: Manifest, dest: Path, where: str
) -> None:
    want = manifest.members.get(info.name)
    if want is None or not info.isfile():
        raise BackupError(f"{where}: member {info.name!r} is not in its manifest")
    target = dest / info.name
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    src = tar.extractfile(info)
    assert src is not None
    h = hashlib.sha256()
    size = 0
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        while chunk := src.read(_COPY):
            h.update(chunk)
            size += len(chunk)
            out.write(chunk)
    if size != want.size or h.hexdigest() != want.sha256:
        raise BackupError(f"{where}: member {info.name} does not match its manifest (damaged)")
