"""write_registry_storage: distribution's filesystem layout, served by a real docker-registry."""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from kbuild.errors import BlobNotFound, UsageError
from kbuild.layerstore import Descriptor, Reference, Store, TarEntry, pack_layer
from kbuild.layerstore.registry_layout import (
    ROOT,
    repository_name,
    write_registry_storage,
)
from tests.fixtures import registry as registry_fixtures
from tests.fixtures.registry import RegistryServer, free_port

SKOPEO = shutil.which("skopeo")


def _image(store: Store, arch: str, payload: bytes) -> Descriptor:
    layers = [
        pack_layer(store, [TarEntry("bin", "dir", 0o755), TarEntry("bin/tool", "file", 0o755,
                                                                   data=payload)]),
        pack_layer(store, [TarEntry("etc/arch", "file", data=arch.encode())], compression="gzip"),
    ]
    config = {"architecture": arch, "os": "linux",
              "config": {"Entrypoint": ["/bin/tool"]}}
    return store.write_image(config, layers)


def _hexd(digest: str) -> str:
    return digest.split(":", 1)[1]


def _link(path: Path) -> str:
    return (path / "link").read_text()


@pytest.mark.parametrize(
    ("ref", "repo"),
    [
        ("registry.k8s.io/kube-apiserver:v1.35.0", "kube-apiserver"),
        ("docker.io/library/nginx", "library/nginx"),
        ("nginx:1.27", "library/nginx"),
        ("quay.io/coreos/flannel:v1", "coreos/flannel"),
        ("localhost:5000/a/b/c:x", "a/b/c"),
        ("registry.k8s.io/coredns/coredns:v1.12.0", "coredns/coredns"),
    ],
)
def test_repository_name(ref: str, repo: str) -> None:
    assert repository_name(ref) == repo


def test_repository_name_rename_is_validated() -> None:
    assert repository_name("quay.io/x/y:1", lambda r: "quay/" + r.repository) == "quay/x/y"
    with pytest.raises(UsageError, match="not a valid repository name"):
        repository_name("quay.io/x/y:1", lambda r: "Bad/Name")


def test_layout_files(store: Store, tmp_path: Path) -> None:
    desc = _image(store, "amd64", b"one")
    dest = tmp_path / "registry"
    report = write_registry_storage(store, [("registry.k8s.io/pause:3.10", desc)], dest)
    v2 = dest / ROOT
    manifest = store.read_manifest(desc)
    blobs = [manifest["config"]["digest"]] + [layer["digest"] for layer in manifest["layers"]]
    for digest in [*blobs, desc.digest]:
        data = v2 / "blobs/sha256" / _hexd(digest)[:2] / _hexd(digest) / "data"
        assert data.read_bytes() == store.read_bytes(digest)
    repo = v2 / "repositories/pause"
    for digest in blobs:
        assert _link(repo / "_layers/sha256" / _hexd(digest)) == digest
    assert _link(repo / "_manifests/revisions/sha256" / _hexd(desc.digest)) == desc.digest
    assert _link(repo / "_manifests/tags/3.10/current") == desc.digest
    assert _link(repo / "_manifests/tags/3.10/index/sha256" / _hexd(desc.digest)) == desc.digest
    assert report.images[0].repository == "pause"
    assert report.images[0].tag == "3.10"
    assert report.blobs_written == 4 and report.blobs_present == 0
    # same filesystem: the data files are the store's blobs, hard-linked
    assert report.blobs_linked == 4
    data = v2 / "blobs/sha256" / _hexd(desc.digest)[:2] / _hexd(desc.digest) / "data"
    assert os.stat(data).st_ino == os.stat(store.blob_path(desc.digest)).st_ino
    # nothing temporary left behind
    assert not [p for p in dest.rglob("*") if p.name.endswith(".tmp")]


def test_idempotent_and_tag_moves(store: Store, tmp_path: Path) -> None:
    first = _image(store, "amd64", b"first")
    second = _image(store, "amd64", b"second")
    dest = tmp_path / "registry"
    write_registry_storage(store, [("docker.io/library/app:1", first)], dest)
    snapshot = {p: p.stat().st_mtime_ns for p in dest.rglob("*") if p.is_file()}
    again = write_registry_storage(store, [("docker.io/library/app:1", first)], dest)
    assert again.blobs_written == 0 and again.blobs_present == 4
    assert {p: p.stat().st_mtime_ns for p in dest.rglob("*") if p.is_file()} == snapshot
    write_registry_storage(store, [("app:1", second)], dest)
    tag = dest / ROOT / "repositories/library/app/_manifests/tags/1"
    assert _link(tag / "current") == second.digest
    history = sorted(p.name for p in (tag / "index/sha256").iterdir())
    assert history == sorted([_hexd(first.digest), _hexd(second.digest)])


def test_digest_reference_gets_no_tag(store: Store, tmp_path: Path) -> None:
    desc = _image(store, "amd64", b"d")
    ref = Reference.parse("quay.io/a/b").with_digest(desc.digest)
    ref = Reference(ref.registry, ref.repository, None, desc.digest)
    write_registry_storage(store, [(ref, desc)], tmp_path / "r")
    repo = tmp_path / "r" / ROOT / "repositories/a/b/_manifests"
    assert _link(repo / "revisions/sha256" / _hexd(desc.digest)) == desc.digest
    assert not (repo / "tags").exists()


def test_digest_must_match_descriptor(store: Store, tmp_path: Path) -> None:
    a = _image(store, "amd64", b"a")
    b = _image(store, "amd64", b"b")
    with pytest.raises(UsageError, match="not the descriptor's"):
        write_registry_storage(store, [(f"x/y:1@{a.digest}", b)], tmp_path / "r")


def test_copies_across_filesystems(store: Store) -> None:
    if not Path("/dev/shm").is_dir() or os.stat("/dev/shm").st_dev == os.stat(store.root).st_dev:
        pytest.skip("no second filesystem (/dev/shm) to copy to")
    desc = _image(store, "amd64", b"x" * 100_000)
    dest = Path(tempfile.mkdtemp(dir="/dev/shm", prefix="kbuild-layout-"))
    try:
        report = write_registry_storage(store, [("x:1", desc)], dest)
        assert report.blobs_copied == 4 and report.blobs_linked == 0
        assert report.bytes_copied == sum(
            store.blob_size(d) for d in _all_blobs(store, desc)
        )
        for digest in _all_blobs(store, desc):
            data = dest / ROOT / "blobs/sha256" / _hexd(digest)[:2] / _hexd(digest) / "data"
            assert data.read_bytes() == store.read_bytes(digest)
    finally:
        shutil.rmtree(dest)


def _all_blobs(store: Store, desc: Descriptor) -> list[str]:
    m = store.read_manifest(desc)
    return [desc.digest, m["config"]["digest"], *(la["digest"] for la in m["layers"])]


def test_missing_blob_names_the_image(store: Store, tmp_path: Path) -> None:
    desc = _image(store, "amd64", b"gone")
    layer = store.read_manifest(desc)["layers"][0]["digest"]
    store.blob_path(layer).unlink()
    with pytest.raises(BlobNotFound, match=r"registry\.k8s\.io/etcd:3.6.*" + _hexd(layer)):
        write_registry_storage(store, [("registry.k8s.io/etcd:3.6", desc)], tmp_path / "r")


# --------------------------------------------------------------------------- served for real


def _cached_registry() -> str | None:
    """distribution v3 as the Kubernetes base image ships it (build cache), if built."""
    for path in sorted(glob.glob("/var/cache/kbuild/kubernetes/*/bin/registry"), reverse=True):
        if os.access(path, os.X_OK):
            return path
    return None


@pytest.fixture(
    params=[
        pytest.param(None, id="debian-distribution-2.8"),
        pytest.param("cache", id="distribution-3-from-the-build-cache",
                     marks=pytest.mark.skipif(_cached_registry() is None,
                                              reason="distribution 3 not built yet")),
    ]
)
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
           monkeypatch: pytest.MonkeyPatch) -> Iterator[RegistryServer]:
    """A registry server whose storage the test fills before starting it."""
    if request.param == "cache":
        monkeypatch.setattr(registry_fixtures, "REGISTRY_BIN", _cached_registry())
    reg = RegistryServer(tmp_path_factory.mktemp("layout-registry"), free_port())
    try:
        yield reg
    finally:
        reg.stop()


def _skopeo(*args: str) -> str:
    assert SKOPEO is not None
    out = subprocess.run([SKOPEO, *args], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.mark.integration
@pytest.mark.skipif(SKOPEO is None, reason="skopeo is not installed")
def test_served_by_docker_registry(store: Store, served: RegistryServer, tmp_path: Path) -> None:
    single = _image(store, "amd64", b"single image")
    amd = _image(store, "amd64", b"multi amd64")
    arm = _image(store, "arm64", b"multi arm64")
    index = store.write_index([amd, arm])
    write_registry_storage(
        store,
        [("registry.k8s.io/kube-apiserver:v1.35.0", single),
         ("docker.io/library/multi:1", index)],
        served.storage,
    )
    served.start()
    base = f"docker://{served.host}"
    tls = "--tls-verify=false"

    info = json.loads(_skopeo("inspect", tls, f"{base}/kube-apiserver:v1.35.0"))
    assert info["Digest"] == single.digest
    assert info["Layers"] == [la["digest"] for la in store.read_manifest(single)["layers"]]

    raw = _skopeo("inspect", tls, "--raw", f"{base}/library/multi:1")
    assert raw.encode() == store.read_bytes(index.digest)
    for arch, child in (("amd64", amd), ("arm64", arm)):
        got = json.loads(_skopeo("inspect", tls, "--override-arch", arch,
                                 f"{base}/library/multi:1"))
        # skopeo reports the tag's (index) digest and the chosen child's content
        assert got["Digest"] == index.digest
        assert got["Architecture"] == arch
        assert got["Layers"] == [la["digest"] for la in store.read_manifest(child)["layers"]]

    out = tmp_path / "copy"
    _skopeo("copy", "--all", "--preserve-digests", "--src-tls-verify=false",
            f"{base}/library/multi:1", f"oci:{out}:multi")
    copied = {p.name for p in (out / "blobs/sha256").iterdir()}
    wanted = {_hexd(index.digest)}
    for child in (amd, arm):
        wanted |= {_hexd(d) for d in _all_blobs(store, child)}
    assert copied == wanted
    for name in copied:
        assert (out / "blobs/sha256" / name).read_bytes() == store.read_bytes("sha256:" + name)
    oci_index = json.loads((out / "index.json").read_text())
    assert oci_index["manifests"][0]["digest"] == index.digest

    # by digest, as containerd asks for children of an index
    got = json.loads(_skopeo("inspect", tls, f"{base}/library/multi@{arm.digest}"))
    assert got["Digest"] == arm.digest
