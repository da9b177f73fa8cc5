"""A registry is untrusted: a malformed manifest or config it serves is a RegistryError
naming the reference and the field, and nothing is tagged.

The real registry (distribution) serves what its Go types accept (null lists,
missing digests, negative sizes, deeply nested unknown fields); manifests are
planted in its storage the way it stores pushed ones. What Go cannot even
unmarshal (``layers: "oops"``) is covered by the parser's fuzz test.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kbuild.errors import ImageNotFound, RegistryError
from kbuild.layerstore import MediaType, Store, TarEntry, pack_layer
from kbuild.registry import pull_image, push_image
from kbuild.registry.transfer import parse_manifest
from tests.fixtures.registry import RegistryServer

from .images import make_image

FUZZ = settings(max_examples=200, derandomize=True, database=None, deadline=2000,
                suppress_health_check=[HealthCheck.too_slow])


def plant_manifest(reg: RegistryServer, repo: str, tag: str, data: bytes) -> str:
    """Store ``data`` as ``repo:tag`` directly in the registry's filesystem storage."""
    hexd = hashlib.sha256(data).hexdigest()
    digest = "sha256:" + hexd
    root = reg.storage / "docker/registry/v2"
    blob = root / "blobs/sha256" / hexd[:2] / hexd / "data"
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.write_bytes(data)
    manifests = root / "repositories" / repo / "_manifests"
    for link in (manifests / "revisions/sha256" / hexd / "link",
                 manifests / "tags" / tag / "current/link",
                 manifests / "tags" / tag / "index/sha256" / hexd / "link"):
        link.parent.mkdir(parents=True, exist_ok=True)
        link.write_text(digest)
    return digest


def pushed_manifest(reg: RegistryServer, tmp_path: Path) -> dict[str, Any]:
    store = Store(tmp_path / "src")
    desc = make_image(store, "app:1", [{"f": b"content"}])
    push_image(store, "app:1", f"{reg.host}/good/app:1")
    return store.read_manifest(desc)


@pytest.mark.integration
@pytest.mark.parametrize(("change", "message"), [
    ({"layers": None}, "field 'layers' must be a list of descriptors, not null"),
    ({"config": None}, "field 'config' must be a JSON object, not null"),
    ({"layers": [{"mediaType": MediaType.OCI_LAYER}]}, "field 'layers[0].digest' is missing"),
    ({"layers": [{"digest": "sha256:" + "0" * 64, "size": -5}]},
     "field 'layers[0].size' must be an integer >= 0, not -5"),
    ({"x-deep": "DEEP"}, "JSON nested"),
], ids=["null layers", "null config", "layer without digest", "negative size", "deep nesting"])
def test_malformed_manifest_from_a_registry(open_registry: RegistryServer, tmp_path: Path,
                                            change: dict[str, Any], message: str) -> None:
    manifest = {**pushed_manifest(open_registry, tmp_path), **change}
    data = json.dumps(manifest).replace('"DEEP"', "[" * 5000 + "]" * 5000).encode()
    plant_manifest(open_registry, "bad/app", "1", data)
    ref = f"{open_registry.host}/bad/app:1"
    dst = Store(tmp_path / "dst")
    with pytest.raises(RegistryError) as info:
        pull_image(dst, ref)
    assert str(info.value).startswith(f"{ref}: manifest: ")
    assert message in str(info.value)
    with pytest.raises(ImageNotFound):
        dst.resolve(ref)


@pytest.mark.integration
def test_malformed_config_from_a_registry_is_not_tagged(open_registry: RegistryServer,
                                                        tmp_path: Path) -> None:
    src = Store(tmp_path / "src")
    layer = pack_layer(src, [TarEntry("f", "file", data=b"x")])
    config = json.dumps({"os": "linux", "architecture": "amd64",
                         "rootfs": {"type": "layers", "diff_ids": "not a list"}}).encode()
    cdigest = src.put_bytes(config)
    manifest = {"schemaVersion": 2, "mediaType": MediaType.OCI_MANIFEST,
                "config": {"mediaType": MediaType.OCI_CONFIG, "digest": cdigest,
                           "size": len(config)},
                "layers": [layer.descriptor().to_dict()]}
    from kbuild.layerstore import Descriptor

    mdigest, msize, _ = src.put_json(manifest)
    src.tag("bad:1", Descriptor(MediaType.OCI_MANIFEST, mdigest, msize))
    ref = f"{open_registry.host}/badcfg/app:1"
    push_image(src, "bad:1", ref)
    dst = Store(tmp_path / "dst")
    with pytest.raises(RegistryError) as info:
        pull_image(dst, ref)
    assert str(info.value) == (f"{open_registry.host}/badcfg/app:1: image config {cdigest}: "
                               "field 'rootfs.diff_ids' must be a list of digests, "
                               "not \"not a list\"")
    assert dst.images() == []


def test_layers_oops_and_other_documents_go_never_accepts() -> None:
    good = {"schemaVersion": 2, "config": {"digest": "sha256:" + "a" * 64, "size": 1},
            "layers": []}
    for change, message in [({"layers": "oops"}, "field 'layers' must be a list"),
                            ({"layers": [{"digest": "sha256:" + "a" * 64, "size": "abc"}]},
                             "field 'layers[0].size'"),
                            ({"schemaVersion": 1}, "Docker schema 1 manifests are not supported"),
                            ({"manifests": 3, "mediaType": MediaType.OCI_INDEX},
                             "field 'manifests' must be a list")]:
        with pytest.raises(RegistryError, match=r"^reg/app:1: ") as info:
            parse_manifest(json.dumps({**good, **change}).encode(), "reg/app:1")
        assert message in str(info.value)


JSON = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=8),
              st.sampled_from(["sha256:" + "a" * 64, MediaType.OCI_INDEX,
                               MediaType.OCI_MANIFEST])),
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.sampled_from(
                                ["schemaVersion", "mediaType", "config", "layers", "manifests",
                                 "digest", "size", "platform", "annotations", "os",
                                 "architecture"]) | st.text(max_size=6), inner, max_size=5)),
    max_leaves=24)


@FUZZ
@given(st.one_of(JSON.map(lambda v: json.dumps(v).encode()), st.binary(max_size=64),
                 st.integers(1, 3000).map(lambda n: b"[" * n + b"]" * n)))
def test_parse_manifest_raises_only_registry_errors(data: bytes) -> None:
    try:
        doc = parse_manifest(data, "reg/app:1")
    except RegistryError as exc:
        assert str(exc).startswith("reg/app:1: ")
        return
    assert isinstance(doc, dict)
