"""Interoperability with skopeo and oras-py, and ``FROM`` a registry image in a build."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

from kbuild.layerstore import MediaType, Reference, Store
from kbuild.registry import pull_image, push_image
from tests.fixtures.registry import RegistryServer

from .images import SKOPEO_TESTS, make_image, random_bytes, skopeo

pytestmark = SKOPEO_TESTS


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def test_what_kbuild_pushes_skopeo_and_oras_pull(open_registry: RegistryServer,
                                                 tmp_path: Path) -> None:
    store = Store(tmp_path / "s")
    desc = make_image(store, "app:1", [{"etc/a": b"a"}, {"data": random_bytes(1 << 20)}])
    ref = f"{open_registry.host}/interop/app:1"
    push_image(store, "app:1", ref)
    manifest = store.read_manifest(desc)

    layout = tmp_path / "layout"
    skopeo("copy", "--src-tls-verify=false", f"docker://{ref}", f"oci:{layout}:app")
    raw = skopeo("inspect", "--raw", f"oci:{layout}:app")
    assert "sha256:" + hashlib.sha256(raw.encode()).hexdigest() == desc.digest
    for blob in [manifest["config"], *manifest["layers"]]:
        path = layout / "blobs" / "sha256" / blob["digest"][7:]
        assert _sha256_file(path) == blob["digest"]

    import oras.client

    client = oras.client.OrasClient(hostname=open_registry.host, insecure=True)
    out = tmp_path / "oras"
    files = client.pull(target=ref, outdir=str(out),
                        allowed_media_type=[MediaType.OCI_MANIFEST])
    assert sorted(_sha256_file(Path(f)) for f in files) == sorted(
        layer["digest"] for layer in manifest["layers"])


def test_what_skopeo_pushes_kbuild_pulls_and_builds_from(open_registry: RegistryServer,
                                                         tmp_path: Path) -> None:
    """skopeo pushes from an OCI layout (as Docker schema 2, gzip); kbuild pulls it and
    builds ``FROM`` it."""
    src = Store(tmp_path / "src")
    make_image(src, "base:1", [{"etc/os-release": b"ID=kbuild-test\n"}], compression="gzip")
    name = str(Reference.parse("base:1"))
    ref = f"{open_registry.host}/skopeo/base:1"
    skopeo("copy", "--dest-tls-verify=false", "--format", "v2s2",
            f"oci:{src.root / 'oci'}:{name}", f"docker://{ref}")
    raw = json.loads(skopeo("inspect", "--tls-verify=false", "--raw", f"docker://{ref}"))
    assert raw["mediaType"] == MediaType.DOCKER_MANIFEST
    assert raw["layers"][0]["mediaType"] == MediaType.DOCKER_LAYER_GZIP

    dst = Store(tmp_path / "dst")
    got = pull_image(dst, ref)
    assert got.media_type == MediaType.DOCKER_MANIFEST
    assert dst.has_blob(raw["layers"][0]["digest"])
    assert dst.read_config(dst.read_manifest(got))["os"] == "linux"

    # FROM the registry image in a Kubefile: the build pulls it (into a fresh store)
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "hello.txt").write_text("hello\n")
    (context / "Kubefile").write_text(
        f"FROM {open_registry.host}/skopeo/base:1\nCOPY hello.txt /etc/hello.txt\n")
    root = tmp_path / "build-root"
    env = {k: v for k, v in os.environ.items() if k != "KBUILD_ROOT"}
    proc = subprocess.run(
        [sys.executable, "-m", "kbuild.cli.main", "--root", str(root), "build",
         "--progress", "plain", "-t", "derived:1", str(context)],
        capture_output=True, text=True, env=env, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    built = Store(root)
    assert built.resolve(ref).digest == got.digest
    layers = built.read_manifest(built.resolve("derived:1"))["layers"]
    assert layers[0]["digest"] == raw["layers"][0]["digest"]
    assert len(layers) == 2
