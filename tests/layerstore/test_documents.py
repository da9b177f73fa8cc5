"""Manifests, indexes, configs and archives are untrusted: bad ones give a StoreError
naming the document and the field, never a traceback, and are never tagged."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest

from kbuild.errors import StoreError
from kbuild.layerstore import (
    Descriptor,
    ImageMeta,
    MediaType,
    Store,
    TarEntry,
    load_archive,
    pack_layer,
    parse_document,
)

DIGEST = "sha256:" + "ab" * 32


def good_manifest() -> dict[str, Any]:
    return {"schemaVersion": 2, "mediaType": MediaType.OCI_MANIFEST,
            "config": {"mediaType": MediaType.OCI_CONFIG, "digest": DIGEST, "size": 2},
            "layers": [{"mediaType": MediaType.OCI_LAYER_ZSTD, "digest": DIGEST, "size": 9}]}


BAD_MANIFESTS = [
    ("layers is a string", {"layers": "oops"}, "field 'layers' must be a list of descriptors"),
    ("layers is null", {"layers": None}, "field 'layers' must be a list of descriptors, not null"),
    ("size is text", {"layers": [{"digest": DIGEST, "size": "abc"}]},
     "field 'layers[0].size' must be an integer >= 0, not \"abc\""),
    ("size is negative", {"layers": [{"digest": DIGEST, "size": -1}]}, "'layers[0].size'"),
    ("size is a bool", {"layers": [{"digest": DIGEST, "size": True}]}, "'layers[0].size'"),
    ("layer without digest", {"layers": [{"size": 1}]}, "field 'layers[0].digest' is missing"),
    ("bad digest", {"layers": [{"digest": "md5:x", "size": 1}]},
     "field 'layers[0].digest' must be a sha256 digest"),
    ("config null", {"config": None}, "field 'config' must be a JSON object, not null"),
    ("annotation not text", {"annotations": {"a": 1}}, "field 'annotations.a' must be a string"),
    ("schema version 3", {"schemaVersion": 3}, "field 'schemaVersion' must be 2"),
    ("platform without os", {"layers": [{"digest": DIGEST, "size": 1, "platform": {}}]},
     "field 'layers[0].platform.os' is missing"),
]


@pytest.mark.parametrize(("why", "change", "message"), BAD_MANIFESTS,
                         ids=[b[0] for b in BAD_MANIFESTS])
def test_bad_manifests_name_the_field(store: Store, why: str, change: dict[str, Any],
                                      message: str) -> None:
    doc = {**good_manifest(), **change}
    digest = store.put_bytes(json.dumps(doc).encode())
    with pytest.raises(StoreError) as info:
        store.read_manifest(digest)
    assert str(info.value).startswith(f"manifest {digest}: ")
    assert message in str(info.value)


def test_missing_config_and_document_types(store: Store) -> None:
    doc = good_manifest()
    del doc["config"]
    with pytest.raises(StoreError, match="field 'config' is missing"):
        parse_document(json.dumps(doc), "manifest", what="m")
    for text, message in [(b"[]", "the document must be a JSON object, not an array"),
                          (b"null", "must be a JSON object, not null"),
                          (b"{", "not JSON"), (b"\xff\xfe", "not JSON"),
                          (b"[" * 100_000 + b"]" * 100_000, "nested"),
                          (b'{"a":' * 70 + b"1" + b"}" * 70, "nested more than 64 levels"),
                          (b'{"manifests": {}}', "field 'manifests' must be a list")]:
        with pytest.raises(StoreError, match=r"^what: ") as info:
            parse_document(text, "image", what="what")
        assert message in str(info.value)
    index = {"schemaVersion": 2, "mediaType": MediaType.OCI_INDEX,
             "manifests": [{"digest": DIGEST, "size": 1, "platform": {"os": "linux",
                                                                      "architecture": 7}}]}
    with pytest.raises(StoreError, match=r"'manifests\[0\].platform.architecture' must be"):
        parse_document(json.dumps(index), "image", what="what")


@pytest.mark.parametrize(("config", "message"), [
    ({"rootfs": {"diff_ids": "x"}}, "field 'rootfs.diff_ids' must be a list of digests"),
    ({"rootfs": {"diff_ids": [1]}}, "field 'rootfs.diff_ids[0]' must be a sha256 digest"),
    ({"config": {"Env": "A=1"}}, "field 'config.Env' must be a list of strings"),
    ({"config": {"Labels": {"a": None}}}, "field 'config.Labels.a' must be a string"),
    ({"config": []}, "field 'config' must be a JSON object, not an array"),
    ({"history": [{"empty_layer": "yes"}]}, "field 'history[0].empty_layer' must be true"),
    ({"os": 1}, "field 'os' must be a string, not 1"),
])
def test_bad_configs_name_the_field(store: Store, config: dict[str, Any], message: str) -> None:
    cdigest = store.put_bytes(json.dumps(config).encode())
    manifest = {**good_manifest(), "config": {"mediaType": MediaType.OCI_CONFIG,
                                              "digest": cdigest, "size": 1}}
    with pytest.raises(StoreError) as info:
        store.read_config(manifest)
    assert str(info.value).startswith(f"image config {cdigest}: ")
    assert message in str(info.value)
    # null where Docker writes null is fine
    ok = store.put_bytes(b'{"config": {"Labels": null, "Env": null, "Cmd": null}}')
    store.read_config({**manifest, "config": {"digest": ok, "size": 1}})


def test_a_corrupt_index_json_is_a_store_error(store: Store) -> None:
    store.index_path.write_text('{"manifests": [{"digest": "sha256:x"}]}')
    with pytest.raises(StoreError, match=r"index.json: field 'manifests\[0\].digest'"):
        store.images()


def test_image_metadata_too_deep_is_a_store_error() -> None:
    labels = {"io.kbuild.image.v1": "[" * 50_000 + "]" * 50_000}
    with pytest.raises(StoreError, match=r"image x: label io\.kbuild\.image\.v1: JSON nested"):
        ImageMeta.read(labels, what="image x")
    assert ImageMeta.from_labels(labels).empty


# --------------------------------------------------------------------------- archives


def archive_of(path: Path, files: dict[str, bytes]) -> Path:
    """A tar holding ``files`` (name -> bytes)."""
    with tarfile.open(path, "w") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def blob_name(data: bytes) -> str:
    import hashlib

    return "blobs/sha256/" + hashlib.sha256(data).hexdigest()


def image_files(manifest_change: dict[str, Any] | None = None,
                config: bytes = b'{"os": "linux", "architecture": "amd64"}'
                ) -> dict[str, bytes]:
    """oci-layout, index.json and blobs of a one-layer image, the manifest changed."""
    layer = b"layer bytes"
    manifest: dict[str, Any] = {
        "schemaVersion": 2, "mediaType": MediaType.OCI_MANIFEST,
        "config": {"mediaType": MediaType.OCI_CONFIG, "digest": "sha256:" + blob_name(config)[13:],
                   "size": len(config)},
        "layers": [{"mediaType": MediaType.OCI_LAYER, "digest": "sha256:" + blob_name(layer)[13:],
                    "size": len(layer)}],
    }
    manifest.update(manifest_change or {})
    mdata = json.dumps(manifest).encode()
    index = {"schemaVersion": 2, "manifests": [
        {"mediaType": MediaType.OCI_MANIFEST, "digest": "sha256:" + blob_name(mdata)[13:],
         "size": len(mdata), "annotations": {"org.opencontainers.image.ref.name":
                                             "example.com/app:1"}}]}
    return {"oci-layout": b'{"imageLayoutVersion": "1.0.0"}',
            "index.json": json.dumps(index).encode(),
            blob_name(config): config, blob_name(layer): layer, blob_name(mdata): mdata}


@pytest.mark.parametrize(("change", "config", "message"), [
    ({"layers": "oops"}, None, "field 'layers' must be a list of descriptors"),
    ({"layers": [{"digest": DIGEST, "size": "abc"}]}, None, "'layers[0].size'"),
    ({"config": None}, None, "field 'config' must be a JSON object"),
    (None, b'{"rootfs": {"diff_ids": "x"}}', "field 'rootfs.diff_ids'"),
    (None, b"[]", "the document must be a JSON object"),
], ids=["layers string", "size text", "config null", "config diff_ids", "config array"])
def test_load_refuses_malformed_images_and_tags_nothing(
        store: Store, tmp_path: Path, change: dict[str, Any] | None, config: bytes | None,
        message: str) -> None:
    files = image_files(change) if config is None else image_files(None, config)
    good = image_files()
    good["index.json"] = json.dumps({"schemaVersion": 2, "manifests": [
        {**json.loads(good["index.json"])["manifests"][0],
         "annotations": {"org.opencontainers.image.ref.name": "example.com/good:1"}},
        *json.loads(files["index.json"])["manifests"]]}).encode()
    path = archive_of(tmp_path / "bad.tar", {**files, **{k: v for k, v in good.items()
                                                         if k.startswith("blobs/")},
                                             "index.json": good["index.json"]})
    with pytest.raises(StoreError) as info:
        load_archive(store, path)
    assert str(info.value).startswith(f"{path}: ")
    assert message in str(info.value)
    assert store.images() == []  # not even the good image of the same archive


@pytest.mark.parametrize(("index", "message"), [
    (b'{"manifests": "oops"}', "index.json: field 'manifests' must be a list"),
    (b'{"manifests": [{"size": 1}]}', "index.json: field 'manifests[0].digest' is missing"),
    (b"[]", "index.json: the document must be a JSON object"),
    (b"[" * 100_000 + b"]" * 100_000, "index.json: JSON nested too deeply"),
])
def test_load_refuses_malformed_index_json(store: Store, tmp_path: Path, index: bytes,
                                           message: str) -> None:
    files = image_files()
    files["index.json"] = index
    path = archive_of(tmp_path / "bad.tar", files)
    with pytest.raises(StoreError) as info:
        load_archive(store, path)
    assert str(info.value).startswith(f"{path}: ") and message in str(info.value)
    assert store.images() == []


def test_load_refuses_a_bad_oci_layout_and_a_truncated_archive(store: Store,
                                                                tmp_path: Path) -> None:
    files = image_files()
    files["oci-layout"] = b'["1.0.0"]'
    with pytest.raises(StoreError, match="oci-layout: the document must be a JSON object"):
        load_archive(store, archive_of(tmp_path / "a.tar", files))
    good = archive_of(tmp_path / "b.tar", image_files())
    import gzip

    truncated = tmp_path / "c.tar.gz"
    truncated.write_bytes(gzip.compress(good.read_bytes())[:300])
    with pytest.raises(StoreError, match="not a valid tar archive"):
        load_archive(store, truncated)
    assert store.images() == []


def test_a_good_archive_still_loads(store: Store, tmp_path: Path) -> None:
    result = load_archive(store, archive_of(tmp_path / "ok.tar", image_files()))
    assert [str(r) for r, _ in result.images] == ["example.com/app:1"]
    layer = pack_layer(store, [TarEntry("f", "file", data=b"x")])
    desc = store.write_image({"os": "linux", "architecture": "amd64"}, [layer])
    assert isinstance(store.resolve(desc.digest), Descriptor)
