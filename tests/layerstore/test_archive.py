"""OCI archives: kbuild save/load, and interop with skopeo."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from kbuild.errors import StoreError
from kbuild.layerstore import (
    Descriptor,
    Store,
    TarEntry,
    load_archive,
    pack_layer,
    save_archive,
)

needs_skopeo = pytest.mark.skipif(shutil.which("skopeo") is None, reason="skopeo not installed")


def build(store: Store, name: str, content: bytes, compression: str = "zstd") -> Descriptor:
    base = pack_layer(store, [TarEntry("etc", "dir", 0o755),
                              TarEntry("etc/os-release", "file", data=b"ID=test\n")],
                      compression=compression)
    top = pack_layer(store, [TarEntry("app", "dir", 0o755),
                             TarEntry("app/data", "file", data=content)],
                     compression=compression)
    desc = store.write_image(
        {"os": "linux", "architecture": "amd64", "created": "2026-01-01T00:00:00Z",
         "config": {"Labels": {"name": name}}}, [base, top])
    store.tag(name, desc)
    return desc


def test_save_load_round_trip(tmp_path: Path) -> None:
    src = Store(tmp_path / "src")
    one = build(src, "app:v1", b"one")
    two = build(src, "localhost:5000/team/other:v2", b"two", compression="gzip")
    archive = tmp_path / "images.tar"
    save_archive(src, ["app:v1", "localhost:5000/team/other:v2"], archive)
    first = archive.read_bytes()
    save_archive(src, ["app:v1", "localhost:5000/team/other:v2"], archive)
    assert archive.read_bytes() == first  # deterministic archive
    with tarfile.open(archive) as tf:
        names = tf.getnames()
        index = json.load(tf.extractfile("index.json"))  # type: ignore[arg-type]
    assert names[:2] == ["oci-layout", "index.json"]
    refs = [m["annotations"]["org.opencontainers.image.ref.name"] for m in index["manifests"]]
    assert refs == ["docker.io/library/app:v1", "localhost:5000/team/other:v2"]
    dst = Store(tmp_path / "dst")
    result = load_archive(dst, archive)
    assert [str(r) for r, _ in result.images] == refs
    assert dst.resolve("app:v1").digest == one.digest
    assert dst.resolve("localhost:5000/team/other:v2").digest == two.digest
    assert dst.fsck() == []
    assert result.blobs_written == len(list(dst.blob_dir.iterdir()))
    again = load_archive(dst, archive)
    assert again.blobs_written == 0


def test_load_refuses_incomplete_or_foreign_archives(tmp_path: Path) -> None:
    src = Store(tmp_path / "src")
    desc = build(src, "app", b"x")
    layout = tmp_path / "layout"
    shutil.copytree(src.oci_dir, layout)
    layer = src.read_manifest(desc)["layers"][1]["digest"]
    (layout / "blobs" / "sha256" / layer[7:]).unlink()
    broken = tmp_path / "broken.tar"
    with tarfile.open(broken, "w") as tf:
        tf.add(layout, arcname=".")
    dst = Store(tmp_path / "dst")
    with pytest.raises(StoreError, match="incomplete"):
        load_archive(dst, broken)
    assert dst.images() == []
    docker = tmp_path / "docker.tar"
    (tmp_path / "manifest.json").write_text("[]")
    with tarfile.open(docker, "w") as tf:
        tf.add(tmp_path / "manifest.json", arcname="manifest.json")
    with pytest.raises(StoreError, match="not an OCI archive"):
        load_archive(dst, docker)
    # a blob whose content does not match its name is refused
    evil = tmp_path / "evil.tar"
    shutil.copytree(src.oci_dir, tmp_path / "evil")
    blob = tmp_path / "evil" / "blobs" / "sha256" / layer[7:]
    blob.chmod(0o644)
    blob.write_bytes(b"tampered")
    with tarfile.open(evil, "w") as tf:
        tf.add(tmp_path / "evil", arcname=".")
    with pytest.raises(StoreError, match="expected digest"):
        load_archive(dst, evil)
    assert not dst.has_blob(layer)


@needs_skopeo
@pytest.mark.integration
def test_skopeo_reads_the_store_and_saved_archives(tmp_path: Path) -> None:
    store = Store(tmp_path / "root")
    desc = build(store, "app:v1", b"payload" * 1000)
    manifest = store.read_manifest(desc)
    out = subprocess.run(
        ["skopeo", "inspect", f"oci:{store.oci_dir}:docker.io/library/app:v1"],
        check=True, capture_output=True, text=True,
    )
    info = json.loads(out.stdout)
    assert info["Digest"] == desc.digest
    assert info["Layers"] == [layer["digest"] for layer in manifest["layers"]]
    archive = tmp_path / "app.tar"
    save_archive(store, ["app:v1"], archive)
    out = subprocess.run(["skopeo", "inspect", f"oci-archive:{archive}"],
                         check=True, capture_output=True, text=True)
    assert json.loads(out.stdout)["Digest"] == desc.digest
    copied = tmp_path / "copied"
    subprocess.run(["skopeo", "copy", "-q", f"oci-archive:{archive}", f"oci:{copied}:app"],
                   check=True, capture_output=True, text=True)
    index = json.loads((copied / "index.json").read_text())
    assert index["manifests"][0]["digest"] == desc.digest  # copied without conversion
    for layer in manifest["layers"]:
        data = (copied / "blobs" / "sha256" / layer["digest"][7:]).read_bytes()
        assert "sha256:" + hashlib.sha256(data).hexdigest() == layer["digest"]


@needs_skopeo
@pytest.mark.integration
def test_load_accepts_what_skopeo_writes(tmp_path: Path) -> None:
    src = Store(tmp_path / "src")
    desc = build(src, "app:v1", b"from skopeo", compression="gzip")
    named = tmp_path / "named.tar"
    subprocess.run(["skopeo", "copy", "-q", f"oci:{src.oci_dir}:docker.io/library/app:v1",
                    f"oci-archive:{named}:registry.example.com/team/app:v9"],
                   check=True, capture_output=True, text=True)
    unnamed = tmp_path / "unnamed.tar"
    subprocess.run(["skopeo", "copy", "-q", f"oci:{src.oci_dir}:docker.io/library/app:v1",
                    f"oci-archive:{unnamed}"], check=True, capture_output=True, text=True)
    dst = Store(tmp_path / "dst")
    result = load_archive(dst, named)
    assert [str(r) for r, _ in result.images] == ["registry.example.com/team/app:v9"]
    loaded = dst.resolve("registry.example.com/team/app:v9")
    assert loaded.digest == desc.digest
    assert dst.read_config(dst.read_manifest(loaded))["config"]["Labels"] == {"name": "app:v1"}
    result = load_archive(dst, unnamed)
    assert result.images[0][0] is None
    assert dst.fsck() == []
