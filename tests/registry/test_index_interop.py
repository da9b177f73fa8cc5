"""Multi-platform images (OCI indexes) between kbuild, skopeo (``--all``), a real
registry and OCI archives: push, pull of every platform, save, load, inspect."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

from kbuild.builder.inspect import inspect_image
from kbuild.layerstore import Descriptor, MediaType, Store, load_archive, save_archive
from kbuild.registry import push_image
from tests.fixtures.registry import RegistryServer

from .images import SKOPEO_TESTS, make_image, skopeo

pytestmark = SKOPEO_TESTS


def _digest(raw: str) -> str:
    return "sha256:" + hashlib.sha256(raw.encode()).hexdigest()


def _kbuild(root: Path, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if k != "KBUILD_ROOT"}
    proc = subprocess.run([sys.executable, "-m", "kbuild.cli.main", "--root", str(root), *args],
                          capture_output=True, text=True, env=env, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def _two_platforms(store: Store, name: str) -> tuple[Descriptor, dict[str, Descriptor]]:
    mine = {arch: make_image(store, None, [{"bin/arch": arch.encode()}], arch=arch)
            for arch in ("amd64", "arm64")}
    index = store.write_index([
        Descriptor(d.media_type, d.digest, d.size, platform={"architecture": a, "os": "linux"})
        for a, d in mine.items()])
    store.tag(name, index)
    return index, mine


def _every_blob(store: Store, per_arch: dict[str, Descriptor]) -> list[str]:
    out = []
    for desc in per_arch.values():
        doc = store.read_manifest(desc)
        out += [desc.digest, doc["config"]["digest"], *(b["digest"] for b in doc["layers"])]
    return out


def test_index_push_skopeo_copy_all_and_back_pull_all_platforms(
        open_registry: RegistryServer, tmp_path: Path) -> None:
    src = Store(tmp_path / "src")
    index, per_arch = _two_platforms(src, "multi:1")
    ref = f"{open_registry.host}/idx/multi:1"
    assert push_image(src, "multi:1", ref).digest == index.digest
    assert _digest(skopeo("inspect", "--tls-verify=false", "--raw", f"docker://{ref}")) \
        == index.digest

    layout = tmp_path / "layout"
    skopeo("copy", "--all", "--src-tls-verify=false", f"docker://{ref}", f"oci:{layout}:multi")
    for digest in [index.digest, *_every_blob(src, per_arch)]:
        assert (layout / "blobs" / "sha256" / digest[7:]).is_file(), digest
    back = f"{open_registry.host}/idx/from-skopeo:1"
    skopeo("copy", "--all", "--dest-tls-verify=false", f"oci:{layout}:multi", f"docker://{back}")
    raw = skopeo("inspect", "--tls-verify=false", "--raw", f"docker://{back}")
    assert json.loads(raw)["mediaType"] == MediaType.OCI_INDEX

    root = tmp_path / "root"
    out = _kbuild(root, "pull", "--all-platforms", "--tls-verify=false", "-q", back)
    assert out.strip() == _digest(raw) == index.digest
    dst = Store(root)
    assert dst.resolve(back).digest == index.digest
    assert not [d for d in _every_blob(src, per_arch) if not dst.has_blob(d)]
    shown = inspect_image(dst, back, "linux/arm64")
    assert shown["index"] == index.digest and shown["digest"] == per_arch["arm64"].digest
    assert [p["platform"] for p in shown["platforms"]] == ["linux/amd64", "linux/arm64"]
    text = _kbuild(root, "inspect", "--platform", "linux/arm64", back)
    assert f"index {index.digest}" in text and f"showing {per_arch['arm64'].digest}" in text
    assert f"linux/amd64  {per_arch['amd64'].digest}" in text
    dst.gc()  # the tag keeps every platform alive
    assert not dst.missing_blobs(index.digest)


def test_index_save_is_read_by_skopeo_and_skopeo_archive_loads(
        open_registry: RegistryServer, tmp_path: Path) -> None:
    src = Store(tmp_path / "src")
    index, _ = _two_platforms(src, "multi:2")
    archive = tmp_path / "multi.tar"
    save_archive(src, ["multi:2"], archive)
    raw = skopeo("inspect", "--raw", f"oci-archive:{archive}")
    assert _digest(raw) == index.digest
    ref = f"{open_registry.host}/idx/saved:2"
    skopeo("copy", "--all", "--dest-tls-verify=false", f"oci-archive:{archive}",
            f"docker://{ref}")

    theirs = tmp_path / "theirs.tar"
    skopeo("copy", "--all", "--src-tls-verify=false", f"docker://{ref}",
            f"oci-archive:{theirs}:localhost/loaded:2")
    dst = Store(tmp_path / "dst")
    result = load_archive(dst, theirs)
    [(name, desc)] = result.images
    assert name is not None and name.familiar == "localhost/loaded:2"
    assert desc.digest == index.digest and desc.media_type == MediaType.OCI_INDEX
    assert not dst.missing_blobs(index.digest)
    assert {p["platform"] for p in inspect_image(dst, "localhost/loaded:2")["platforms"]} == {
        "linux/amd64", "linux/arm64"}
