"""The backup archive: manifest first, sealed with a passphrase, everything
verified before use; truncation, bit flips, wrong passphrases and forged
manifests refused with nothing left behind."""

from __future__ import annotations

import io
import json
import os
import stat
import tarfile
from pathlib import Path

import pytest
import zstandard

from kbuild.errors import BackupError
from kbuild.runtime.drivers.kubernetes import archive, sealed
from kbuild.runtime.drivers.kubernetes.archive import Manifest, read_archive, write_archive

PASS = "correct horse battery staple"


def _files(tmp: Path) -> dict[str, Path]:
    src = tmp / "src"
    src.mkdir()
    (src / "snap").write_bytes(os.urandom(3 << 20))  # spans several sealed chunks
    (src / "ca.key").write_bytes(b"-----BEGIN PRIVATE KEY-----\nsecret\n")
    return {"etcd/snapshot.db": src / "snap", "pki/ca.key": src / "ca.key"}


def _manifest() -> Manifest:
    return Manifest("c1", "v1.37.2", "ab" * 32, "2026-12-04T00:00:00Z")


@pytest.mark.parametrize("passphrase", [None, PASS])
def test_round_trip(tmp_path: Path, passphrase: str | None) -> None:
    files = _files(tmp_path)
    out = tmp_path / "b.kbk"
    write_archive(out, _manifest(), files, passphrase=passphrase)
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    dest = tmp_path / "x"
    m = read_archive(out, dest, passphrase=passphrase)
    assert stat.S_IMODE(dest.stat().st_mode) == 0o700
    assert (m.cluster, m.kubernetes, m.ca_sha256) == ("c1", "v1.37.2", "ab" * 32)
    for name, src in files.items():
        assert (dest / name).read_bytes() == src.read_bytes()
        assert stat.S_IMODE((dest / name).stat().st_mode) == 0o600
    assert set(m.members) == set(files)
    if passphrase:
        assert b"secret" not in out.read_bytes()
        assert sealed.is_sealed(out.read_bytes()[:8])


def _refused(out: Path, tmp: Path, match: str, passphrase: str | None = None) -> None:
    dest = tmp / "unpacked"
    with pytest.raises(BackupError, match=match) as info:
        read_archive(out, dest, passphrase=passphrase)
    assert str(out) in str(info.value)
    assert not dest.exists()


@pytest.mark.parametrize("passphrase", [None, PASS])
@pytest.mark.parametrize("keep", [0.1, 0.5, 0.999])
def test_truncated(tmp_path: Path, passphrase: str | None, keep: float) -> None:
    out = tmp_path / "b.kbk"
    write_archive(out, _manifest(), _files(tmp_path), passphrase=passphrase)
    data = out.read_bytes()
    out.write_bytes(data[: int(len(data) * keep)])
    _refused(out, tmp_path, "truncated|damaged", passphrase)


@pytest.mark.parametrize("passphrase", [None, PASS])
def test_bit_flips(tmp_path: Path, passphrase: str | None) -> None:
    out = tmp_path / "b.kbk"
    write_archive(out, _manifest(), _files(tmp_path), passphrase=passphrase)
    good = out.read_bytes()
    start = 200 if passphrase else 0  # past the sealed header (its own test below)
    for at in (start, len(good) // 3, len(good) // 2, len(good) - 5):
        bad = bytearray(good)
        bad[at] ^= 0x10
        out.write_bytes(bytes(bad))
        _refused(out, tmp_path, "damaged|truncated|not a kbuild backup|manifest", passphrase)


def test_wrong_or_missing_passphrase(tmp_path: Path) -> None:
    out = tmp_path / "b.kbk"
    write_archive(out, _manifest(), _files(tmp_path), passphrase=PASS)
    _refused(out, tmp_path, "wrong passphrase", "not it")
    _refused(out, tmp_path, "sealed with a passphrase", None)
    bad = bytearray(out.read_bytes())
    bad[20] ^= 1  # the salt: the header MAC no longer matches
    out.write_bytes(bytes(bad))
    _refused(out, tmp_path, "wrong passphrase", PASS)


def _raw(out: Path, members: list[tuple[str, bytes]]) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    out.write_bytes(zstandard.ZstdCompressor().compress(buf.getvalue()))


def _forged(members: dict[str, bytes], listed: dict[str, bytes]) -> bytes:
    import hashlib

    m = _manifest()
    m.members = {
        n: archive.Member(hashlib.sha256(d).hexdigest(), len(d)) for n, d in listed.items()
    }
    return m.to_json()


def test_forged_manifests(tmp_path: Path) -> None:
    out = tmp_path / "b.kbk"
    data = {"a": b"one"}
    cases = [
        ([("a", b"one")], "no manifest.json first"),
        ([(archive.MANIFEST, _forged(data, {"a": b"two"})), ("a", b"one")], "does not match"),
        ([(archive.MANIFEST, _forged(data, {})), ("a", b"one")], "not in its manifest"),
        ([(archive.MANIFEST, _forged(data, {"a": b"one", "b": b"x"})), ("a", b"one")],
         "b missing"),
        ([(archive.MANIFEST, _forged(data, {"../evil": b"one"})), ("../evil", b"one")],
         "unsafe member"),
        ([(archive.MANIFEST, _forged(data, data)), ("a", b"one"), ("a", b"one")],
         "appears twice"),
        ([(archive.MANIFEST, b"{not json")], "manifest is not valid"),
        ([(archive.MANIFEST, json.dumps({"format": "other/9"}).encode())], "format"),
    ]
    for members, match in cases:
        _raw(out, members)
        _refused(out, tmp_path, match)


def test_failed_write_leaves_nothing(tmp_path: Path) -> None:
    files = _files(tmp_path)
    files["missing"] = tmp_path / "does-not-exist"
    out = tmp_path / "b.kbk"
    with pytest.raises((BackupError, OSError)):
        write_archive(out, _manifest(), files, passphrase=PASS)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def test_failed_stream_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A fault in the middle of the stream (a disk full: no real part makes one
    on demand) leaves neither the archive nor its temp file."""
    files = _files(tmp_path)
    out = tmp_path / "b.kbk"
    write_archive(out, _manifest(), files)
    before = out.read_bytes()

    def full(*_a: object, **_k: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(archive, "_write_stream", full)
    with pytest.raises(BackupError, match="No space left"):
        write_archive(out, _manifest(), files)
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.kbk", "src"]


def test_empty_passphrase_refused(tmp_path: Path) -> None:
    with pytest.raises(BackupError, match="empty passphrase"):
        sealed.SealWriter(io.BytesIO(), "")
