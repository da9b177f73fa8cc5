"""Push and pull against a real, open distribution registry."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kbuild.errors import DigestMismatch, ImageNotFound
from kbuild.layerstore import MediaType, Store
from kbuild.registry import BlobDone, ClientOptions, RetryPolicy, pull_image, push_image
from tests.fixtures.registry import RegistryServer

from .images import make_image, pushed_and_pulled, random_bytes

pytestmark = pytest.mark.integration


def _uploads(log: list[str]) -> list[str]:
    return [line for line in log if "/blobs/uploads/" in line]


def test_round_trip_identical_digests(open_registry: RegistryServer, tmp_path: Path) -> None:
    src = Store(tmp_path / "a")
    desc = make_image(src, "app:1", [{"etc/hello": b"hello"}, {"bin/big": random_bytes(3 << 20)}])
    events: list[object] = []
    ref = f"{open_registry.host}/team/app:1"
    pushed = push_image(src, "app:1", ref, progress=events.append)
    assert pushed.digest == desc.digest
    assert sorted(e.how for e in events if isinstance(e, BlobDone)) == ["uploaded"] * 3

    dst = Store(tmp_path / "b")
    pulled = pull_image(dst, ref)
    assert pulled.digest == desc.digest
    assert dst.resolve(ref).digest == desc.digest
    manifest = dst.read_manifest(pulled)
    assert manifest == src.read_manifest(desc)
    for blob in [manifest["config"], *manifest["layers"]]:
        assert dst.read_bytes(blob["digest"]) == src.read_bytes(blob["digest"])
    # the registry's own idea of the manifest digest is ours
    assert any(line == "PUT /v2/team/app/manifests/1" for line in open_registry.access_log())


def test_second_push_uploads_nothing_and_second_repo_mounts(
        open_registry: RegistryServer, tmp_path: Path) -> None:
    store = Store(tmp_path / "s")
    make_image(store, "app:1", [{"a": random_bytes(1 << 20)}, {"b": random_bytes(1 << 20)}])
    push_image(store, "app:1", f"{open_registry.host}/one/app:1")
    before = len(open_registry.access_log())

    events: list[object] = []
    push_image(store, "app:1", f"{open_registry.host}/one/app:1", progress=events.append)
    again = open_registry.access_log()[before:]
    assert _uploads(again) == []
    assert not [line for line in again if line.startswith(("PATCH", "POST"))]
    done = [e for e in events if isinstance(e, BlobDone)]
    assert {e.how for e in done} == {"exists"} and sum(e.transferred for e in done) == 0

    before = len(open_registry.access_log())
    events.clear()
    push_image(store, "app:1", f"{open_registry.host}/two/app:1", progress=events.append)
    second = open_registry.access_log()[before:]
    posts = [line for line in second if line.startswith("POST")]
    assert posts and all("mount=" in line and "from=one%2Fapp" in line for line in posts)
    assert not [line for line in second if line.startswith("PATCH")
                or (line.startswith("PUT") and "/blobs/" in line)]
    assert {e.how for e in events if isinstance(e, BlobDone)} == {"mounted"}
    pulled = pull_image(Store(tmp_path / "p"), f"{open_registry.host}/two/app:1")
    assert pulled.digest == store.resolve("app:1").digest


def test_corrupted_blob_is_refused_and_nothing_enters_the_store(
        open_registry: RegistryServer, tmp_path: Path) -> None:
    src = Store(tmp_path / "a")
    desc = make_image(src, "app:1", [{"data": random_bytes(256 << 10)}])
    ref = f"{open_registry.host}/c/app:1"
    push_image(src, "app:1", ref)
    layer = src.read_manifest(desc)["layers"][0]["digest"]
    data_path = open_registry.blob_data_path(layer)
    raw = bytearray(data_path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    data_path.write_bytes(bytes(raw))

    dst = Store(tmp_path / "b")
    with pytest.raises(DigestMismatch) as info:
        pull_image(dst, ref, options=ClientOptions(retry=RetryPolicy(attempts=2, max_time=5)))
    assert layer in str(info.value)
    assert not dst.has_blob(layer)
    assert not dst.has_blob(desc.digest)
    with pytest.raises(ImageNotFound):
        dst.resolve(ref)
    assert not list((dst.root / "tmp").glob(f"*{layer[7:]}*"))


def test_multi_arch_index_push_and_platform_pull(
        open_registry: RegistryServer, tmp_path: Path) -> None:
    src = Store(tmp_path / "a")
    amd = make_image(src, None, [{"arch": b"amd64"}], arch="amd64")
    arm = make_image(src, None, [{"arch": b"arm64"}], arch="arm64")
    index = src.write_index([amd, arm])
    src.tag("multi:1", index)
    ref = f"{open_registry.host}/m/multi:1"
    pushed = push_image(src, "multi:1", ref)
    assert pushed.digest == index.digest
    log = open_registry.access_log()
    assert f"PUT /v2/m/multi/manifests/{amd.digest}" in log
    assert f"PUT /v2/m/multi/manifests/{arm.digest}" in log

    dst = Store(tmp_path / "b")
    got = pull_image(dst, ref, platform="linux/arm64")
    assert got.digest == arm.digest
    assert got.platform == {"architecture": "arm64", "os": "linux"}
    assert dst.resolve(ref).digest == arm.digest
    assert dst.has_blob(index.digest)
    arm_layer = src.read_manifest(arm)["layers"][0]["digest"]
    amd_layer = src.read_manifest(amd)["layers"][0]["digest"]
    assert dst.has_blob(arm_layer) and not dst.has_blob(amd_layer)
    assert not dst.has_blob(amd.digest)
    record = dst.get_record("registry-index", ref)
    assert record is not None and record["index"] == index.digest
    # the index survives a GC of the store
    dst.gc()
    assert dst.has_blob(index.digest)

    other = pull_image(Store(tmp_path / "c"), ref, platform="linux/amd64")
    assert other.digest == amd.digest
    with pytest.raises(Exception, match="no image for platform linux/s390x"):
        pull_image(Store(tmp_path / "d"), ref, platform="linux/s390x")


def test_docker_schema2_gzip_image_pulls(open_registry: RegistryServer, tmp_path: Path) -> None:
    src = Store(tmp_path / "a")
    desc = make_image(src, None, [{"x": b"gzip layer"}], compression="gzip")
    oci = src.read_manifest(desc)
    config_digest = oci["config"]["digest"]
    manifest = {
        "schemaVersion": 2,
        "mediaType": MediaType.DOCKER_MANIFEST,
        "config": {"mediaType": MediaType.DOCKER_CONFIG, "digest": config_digest,
                   "size": oci["config"]["size"]},
        "layers": [{"mediaType": MediaType.DOCKER_LAYER_GZIP, "digest": layer["digest"],
                    "size": layer["size"]} for layer in oci["layers"]],
    }
    data = json.dumps(manifest, indent=3).encode()
    digest = src.put_bytes(data)
    from kbuild.layerstore import Descriptor

    src.tag("docker:1", Descriptor(MediaType.DOCKER_MANIFEST, digest, len(data)))
    ref = f"{open_registry.host}/d/docker:1"
    push_image(src, "docker:1", ref)
    dst = Store(tmp_path / "b")
    got = pull_image(dst, ref)
    assert got.digest == digest and got.media_type == MediaType.DOCKER_MANIFEST
    assert dst.read_bytes(digest) == data
    assert dst.has_blob(oci["layers"][0]["digest"])


def test_pull_skips_blobs_already_in_store(open_registry: RegistryServer, tmp_path: Path) -> None:
    dst, ref = pushed_and_pulled(open_registry.host, tmp_path, 512 << 10)
    before = len(open_registry.access_log())
    events: list[object] = []
    pull_image(dst, ref, progress=events.append)
    again = open_registry.access_log()[before:]
    assert not [line for line in again if "/blobs/" in line]
    assert {e.how for e in events if isinstance(e, BlobDone)} == {"present"}
