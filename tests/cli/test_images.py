"""CLI: images, tag, rmi, save, load, prune, fsck."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from kbuild.cli.main import main
from kbuild.layerstore import Descriptor, MediaType, Store, TarEntry, pack_layer


def run(capsys: pytest.CaptureFixture[str], root: Path, *args: str) -> tuple[int, str, str]:
    code = 0
    try:
        main(["--root", str(root), *args])
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def build(store: Store, content: bytes, created: str = "2026-01-01T00:00:00Z") -> Descriptor:
    layer = pack_layer(store, [TarEntry("data", "file", data=content)])
    return store.write_image({"os": "linux", "architecture": "amd64", "created": created},
                             [layer])


def age_blobs(store: Store) -> None:
    t = time.time() - 3600
    for p in store.blob_dir.iterdir():
        os.utime(p, (t, t))


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "root"


def test_images_table_and_json(capsys: pytest.CaptureFixture[str], root: Path) -> None:
    store = Store(root)
    desc = build(store, b"x" * 2000)
    store.tag("app:v1", desc)
    store.tag("localhost:5000/team/app", desc)
    code, out, _ = run(capsys, root, "images")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["REPOSITORY", "TAG", "IMAGE", "ID", "CREATED", "SIZE"]
    assert lines[1].split()[:3] == ["app", "v1", desc.digest[7:19]]
    assert lines[2].split()[:3] == ["localhost:5000/team/app", "latest", desc.digest[7:19]]
    assert "ago" in lines[1]
    code, out, _ = run(capsys, root, "images", "--format", "json")
    rows = json.loads(out)
    assert [r["name"] for r in rows] == ["docker.io/library/app:v1",
                                        "localhost:5000/team/app:latest"]
    assert rows[0]["digest"] == desc.digest
    assert rows[0]["created"] == "2026-01-01T00:00:00Z"
    manifest = store.read_manifest(desc)
    assert rows[0]["size"] == desc.size + manifest["config"]["size"] + sum(
        layer["size"] for layer in manifest["layers"])


def test_tag_and_rmi(capsys: pytest.CaptureFixture[str], root: Path) -> None:
    store = Store(root)
    desc = build(store, b"1")
    store.tag("app:v1", desc)
    assert run(capsys, root, "tag", "app:v1", "app:v2")[0] == 0
    assert run(capsys, root, "tag", desc.digest[7:15], "other")[0] == 0
    assert store.resolve("other:latest").digest == desc.digest
    code, _, err = run(capsys, root, "tag", "app:v1", "Bad:Name")
    assert code == 2 and "invalid image reference 'Bad:Name'" in err
    code, _, err = run(capsys, root, "rmi", desc.digest[7:19])
    assert code == 2 and "several names" in err
    code, out, _ = run(capsys, root, "rmi", "app:v2")
    assert code == 0 and out == "Untagged: app:v2\n"
    code, out, _ = run(capsys, root, "rmi", "-f", desc.digest[7:19])
    assert code == 0
    assert "Untagged: app:v1" in out and "Untagged: other:latest" in out
    assert store.images() == []
    code, _, err = run(capsys, root, "rmi", "app:v1")
    assert code == 1 and "no image" in err and "Traceback" not in err


def test_rmi_refuses_an_ambiguous_prefix(capsys: pytest.CaptureFixture[str], root: Path) -> None:
    store = Store(root)
    seen: dict[str, bytes] = {}
    pair: tuple[bytes, bytes] | None = None
    for i in range(100000):  # two manifests whose IDs share 4 hex digits
        data = json.dumps({"schemaVersion": 2, "mediaType": MediaType.OCI_MANIFEST,
                           "layers": [], "n": i}).encode()
        prefix = hashlib.sha256(data).hexdigest()[:4]
        if prefix in seen:
            pair = (seen[prefix], data)
            break
        seen[prefix] = data
    assert pair is not None
    for n, data in enumerate(pair):
        store.tag(f"img{n}", Descriptor(MediaType.OCI_MANIFEST, store.put_bytes(data), len(data)))
    code, _, err = run(capsys, root, "rmi", prefix)
    assert code == 2 and "ambiguous" in err
    assert len(store.images()) == 2
    code, _, _ = run(capsys, root, "rmi", hashlib.sha256(pair[0]).hexdigest()[:12])
    assert code == 0
    assert [r.familiar for r, _ in store.images()] == ["img1:latest"]


def test_prune_and_fsck(capsys: pytest.CaptureFixture[str], root: Path) -> None:
    store = Store(root)
    keep = build(store, b"keep")
    drop = build(store, b"drop")
    store.tag("keep", keep)
    store.tag("drop", drop)
    store.put_record("build", "step", {"blobs": [store.put_bytes(b"cached")]})
    assert run(capsys, root, "rmi", "drop")[0] == 0
    age_blobs(store)
    code, out, _ = run(capsys, root, "prune")
    assert code == 0 and out.count("deleted: sha256:") == 3  # manifest, config, layer
    assert not store.has_blob(drop.digest) and store.has_blob(keep.digest)
    code, out, _ = run(capsys, root, "prune", "--all")
    assert "Deleted build cache records: 1" in out and out.count("deleted: sha256:") == 1
    code, out, _ = run(capsys, root, "fsck")
    assert code == 0 and out.startswith("ok:")
    layer = store.read_manifest(keep)["layers"][0]["digest"]
    store.blob_path(layer).write_bytes(b"corrupted")
    code, out, err = run(capsys, root, "fsck")
    assert code == 1 and f"blob {layer} is corrupt" in out and "1 problem" in err


@pytest.mark.integration
@pytest.mark.skipif(shutil.which("skopeo") is None, reason="skopeo not installed")
def test_save_load_with_skopeo(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    root = tmp_path / "root"
    store = Store(root)
    desc = build(store, b"interop" * 5000)
    store.tag("localhost:5000/team/app:v1", desc)
    archive = tmp_path / "app.tar"
    code, _, err = run(capsys, root, "save", "-o", str(archive), "localhost:5000/team/app:v1")
    assert code == 0, err
    info = json.loads(subprocess.run(["skopeo", "inspect", f"oci-archive:{archive}"],
                                     check=True, capture_output=True, text=True).stdout)
    assert info["Digest"] == desc.digest
    layout = tmp_path / "layout"
    subprocess.run(["skopeo", "copy", "-q", f"oci-archive:{archive}", f"oci:{layout}:app"],
                   check=True, capture_output=True)
    back = tmp_path / "back.tar"
    subprocess.run(["skopeo", "copy", "-q", f"oci:{layout}:app",
                    f"oci-archive:{back}:localhost:5000/team/app:copied"],
                   check=True, capture_output=True)
    other = tmp_path / "other"
    code, out, err = run(capsys, other, "load", "-i", str(back))
    assert code == 0, err
    assert out == "Loaded image: localhost:5000/team/app:copied\n"
    assert Store(other).resolve("localhost:5000/team/app:copied").digest == desc.digest
    code, _, err = run(capsys, other, "load", "-i", str(tmp_path / "missing.tar"))
    assert code == 1 and "missing.tar: cannot read: No such file" in err


def test_images_survives_a_missing_manifest(capsys: pytest.CaptureFixture[str],
                                            root: Path) -> None:
    store = Store(root)
    desc = build(store, b"gone")
    store.tag("broken", desc)
    store.blob_path(desc.digest).unlink()
    code, out, _ = run(capsys, root, "images")
    assert code == 0 and out.splitlines()[1].split()[:4] == [
        "broken", "latest", desc.digest[7:19], "N/A"]
    code, out, _ = run(capsys, root, "fsck")
    assert code == 1 and f"image broken:latest: blob {desc.digest} is missing" in out
