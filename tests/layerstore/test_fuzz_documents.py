"""Property tests: whatever a manifest, index, config or archive holds, reading it
returns a checked document or raises a kbuild error (StoreError), never a traceback.

Derandomized and database-less like the Kubefile fuzz, every example with a
deadline and a bounded count, so each property takes a few seconds.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kbuild.errors import StoreError
from kbuild.layerstore import (
    ImageMeta,
    MediaType,
    Store,
    check_document,
    load_archive,
    parse_document,
)

pytestmark = pytest.mark.timeout(120)

FUZZ = settings(max_examples=200, derandomize=True, database=None, deadline=2000,
                suppress_health_check=[HealthCheck.too_slow,
                                       HealthCheck.function_scoped_fixture])
DIGEST = "sha256:" + "cd" * 32
DEEP = "\x00deep\x00"

SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
    st.sampled_from([DIGEST, "sha256:xyz", MediaType.OCI_MANIFEST, MediaType.OCI_INDEX,
                     MediaType.DOCKER_LIST, "", "linux", "amd64", DEEP]),
)
JSON = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.text(max_size=10), inner, max_size=4)),
    max_leaves=16,
)


def manifest() -> dict[str, Any]:
    return {"schemaVersion": 2, "mediaType": MediaType.OCI_MANIFEST,
            "config": {"mediaType": MediaType.OCI_CONFIG, "digest": DIGEST, "size": 7},
            "layers": [{"mediaType": MediaType.OCI_LAYER_ZSTD, "digest": DIGEST, "size": 9,
                        "annotations": {"a": "b"}}],
            "annotations": {"k": "v"}}


def index() -> dict[str, Any]:
    return {"schemaVersion": 2, "mediaType": MediaType.OCI_INDEX,
            "manifests": [{"mediaType": MediaType.OCI_MANIFEST, "digest": DIGEST, "size": 3,
                           "platform": {"os": "linux", "architecture": "amd64"}}]}


def config() -> dict[str, Any]:
    return {"os": "linux", "architecture": "amd64", "created": "2026-01-01T00:00:00Z",
            "rootfs": {"type": "layers", "diff_ids": [DIGEST]},
            "config": {"Env": ["A=1"], "Cmd": ["sh"], "Labels": {"l": "v"},
                       "ExposedPorts": {"80/tcp": {}}, "WorkingDir": "/"},
            "history": [{"created_by": "COPY", "empty_layer": False}]}


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for n, v in enumerate(doc):
            out += _paths(v, (*prefix, n))
    return out


@st.composite
def mutated(draw: st.DrawFn, base: dict[str, Any]) -> bytes:
    """``base`` with a few of its values replaced or deleted, as JSON text (maybe deep)."""
    doc = json.loads(json.dumps(base))
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        paths = [p for p in _paths(doc) if p]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        if draw(st.booleans()) and isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(JSON)
    text = json.dumps(doc)
    depth = draw(st.sampled_from([1, 63, 65, 900, 5000]))
    return text.replace(json.dumps(DEEP), "[" * depth + "]" * depth).encode()


RAW = st.one_of(st.binary(max_size=64), JSON.map(lambda v: json.dumps(v).encode()))


def _only_store_errors(data: bytes, kind: str) -> None:
    try:
        doc = parse_document(data, kind, what="doc")
    except StoreError as exc:
        assert str(exc).startswith("doc: ")
        return
    assert isinstance(doc, dict)
    check_document(doc, kind, what="again")  # a checked document stays valid


@FUZZ
@given(st.one_of(mutated(manifest()), mutated(index()), RAW), st.sampled_from(
    ["manifest", "index", "image", "layout"]))
def test_manifests_and_indexes(data: bytes, kind: str) -> None:
    _only_store_errors(data, kind)


@FUZZ
@given(st.one_of(mutated(config()), RAW))
def test_configs(data: bytes) -> None:
    _only_store_errors(data, "config")


@FUZZ
@given(data=st.one_of(mutated(manifest()), mutated(index()), RAW),
       cfg=st.one_of(mutated(config()), RAW))
def test_store_reads_through_read_manifest_and_read_config(
        tmp_path: Path, data: bytes, cfg: bytes) -> None:
    store = Store(tmp_path / "store")
    cdigest = store.put_bytes(cfg)
    digest = store.put_bytes(data.replace(DIGEST.encode(), cdigest.encode()))
    try:
        doc = store.read_manifest(digest)
        store.read_config(doc)
    except StoreError:
        return
    assert isinstance(doc, dict)


@FUZZ
@given(st.one_of(JSON.map(json.dumps), st.text(max_size=40),
                 st.integers(1, 3000).map(lambda n: "[" * n + "]" * n)))
def test_image_metadata_label(text: str) -> None:
    try:
        ImageMeta.read({"io.kbuild.image.v1": text}, what="image t")
    except StoreError as exc:
        assert str(exc).startswith("image t: ")
    assert isinstance(ImageMeta.from_labels({"io.kbuild.image.v1": text}), ImageMeta)


def _blob(files: dict[str, bytes], data: bytes) -> str:
    hexd = hashlib.sha256(data).hexdigest()
    files["blobs/sha256/" + hexd] = data
    return "sha256:" + hexd


@st.composite
def archives(draw: st.DrawFn) -> bytes:
    """A tar of an OCI layout where any of index.json, manifest, config may be mutated."""
    files: dict[str, bytes] = {}
    cdata = draw(st.one_of(st.just(json.dumps(config()).encode()), mutated(config())))
    cdigest = _blob(files, cdata)
    ldigest = _blob(files, b"layer")
    m = manifest()
    m["config"].update(digest=cdigest, size=len(cdata))
    m["layers"][0].update(digest=ldigest, size=5)
    mdata = draw(st.one_of(st.just(json.dumps(m).encode()), mutated(m)))
    mdigest = _blob(files, mdata)
    idx = {"schemaVersion": 2, "manifests": [
        {"mediaType": MediaType.OCI_MANIFEST, "digest": mdigest, "size": len(mdata),
         "annotations": {"org.opencontainers.image.ref.name": "example.com/fuzz:1"}}]}
    files["index.json"] = draw(st.one_of(st.just(json.dumps(idx).encode()), mutated(idx), RAW))
    files["oci-layout"] = draw(st.one_of(st.just(b'{"imageLayoutVersion": "1.0.0"}'), RAW))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name in draw(st.permutations(sorted(files))):
            info = tarfile.TarInfo(name)
            info.size = len(files[name])
            tf.addfile(info, io.BytesIO(files[name]))
    raw = buf.getvalue()
    cut = draw(st.one_of(st.none(), st.integers(0, len(raw))))
    return raw if cut is None else raw[:cut]


@settings(FUZZ, max_examples=80)
@given(archives())
def test_load_archive(tmp_path: Path, archive: bytes) -> None:
    with tempfile.TemporaryDirectory(dir=tmp_path) as work:
        path = Path(work) / "a.tar"
        path.write_bytes(archive)
        store = Store(Path(work) / "store")
        try:
            result = load_archive(store, path)
        except StoreError as exc:
            assert str(exc).startswith(str(path))
            assert store.images() == []
            return
        for _, desc in result.images:  # what was tagged is a complete, checked image
            store.read_config(store.read_manifest(desc))
        assert store.fsck() == []
