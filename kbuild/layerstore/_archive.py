"""OCI archives: a tar of an OCI image layout (``kbuild save`` / ``kbuild load``)."""

from __future__ import annotations

import os
import re
import shutil
import tarfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kbuild.errors import BlobNotFound, StoreError, UsageError
from kbuild.fsutil import fsync_dir, replacing

from . import _tarwriter as tw
from ._blobs import canonical_json
from ._reference import Reference
from ._schema import is_index, parse_document
from ._types import CONTAINERD_NAME_ANNOTATION, REF_NAME_ANNOTATION, Descriptor
from .events import BytesDone, Progress

if TYPE_CHECKING:
    from ._store import Store

_BLOB_RE = re.compile(r"^blobs/sha256/([a-f0-9]{64})$")
_ID_RE = re.compile(r"^[a-f0-9]{12,64}$")
_TAG_ONLY_RE = re.compile(r"^[\w][\w.-]{0,127}$")
_JSON_LIMIT = 16 << 20
_CHUNK = 1 << 20


def _closure(store: Store, digest: str, out: dict[str, None]) -> None:
    missing = store.missing_blobs(digest)
    if missing:
        raise BlobNotFound(f"blob {missing[0]} is missing from the store (run `kbuild fsck`)")
    out.update(dict.fromkeys(store.walk(digest)))


def _check_tree(store: Store, desc: Descriptor, where: str) -> None:
    """Every manifest, index and config under ``desc`` is in the store and well-formed."""

    def checked_children(digest: str) -> list[str]:
        if not store.has_blob(digest):
            raise StoreError(f"{where}: archive is incomplete: blob {digest} is missing")
        try:
            doc = store.read_manifest(digest)
            if is_index(doc):
                return [m["digest"] for m in doc["manifests"]]
            config = doc["config"]["digest"]
            if not store.has_blob(config):
                raise StoreError(f"archive is incomplete: config {config} is missing")
            store.read_config(doc)
        except StoreError as exc:
            raise StoreError(f"{where}: {exc}") from None
        for layer in doc["layers"]:
            if not store.has_blob(layer["digest"]):
                raise StoreError(f"{where}: archive is incomplete: "
                                 f"layer {layer['digest']} is missing")
        return []

    for _ in store.walk(desc.digest, children=checked_children):
        pass


def save_archive(store: Store, names: list[str], output: Path | str,
                 progress: Progress | None = None) -> list[Descriptor]:
    """Write the images ``names`` (names or IDs) as one OCI archive at ``output``."""
    if not names:
        raise UsageError("save needs at least one image")
    output = Path(output)
    entries: list[dict[str, Any]] = []
    blobs: dict[str, None] = {}
    saved: list[Descriptor] = []
    for name in names:
        desc = store.resolve(name)
        annotations = {k: v for k, v in (desc.annotations or {}).items()
                       if k not in (REF_NAME_ANNOTATION, CONTAINERD_NAME_ANNOTATION)}
        is_id = name.startswith("sha256:") or (
            _ID_RE.match(name) is not None and bool(store.match_id(name)))
        ref = None if is_id else Reference.parse(name)
        if ref is not None:
            if ref.tag and ref.digest:
                ref = Reference(ref.registry, ref.repository, ref.tag, None)
            annotations[REF_NAME_ANNOTATION] = str(ref)
            annotations[CONTAINERD_NAME_ANNOTATION] = str(ref)
        entry = desc.with_annotations(annotations or None).to_dict()
        if entry not in entries:
            entries.append(entry)
        _closure(store, desc.digest, blobs)
        saved.append(desc)
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
             "manifests": entries}
    total = sum(store.blob_size(d) for d in blobs)
    done = 0
    output.parent.mkdir(parents=True, exist_ok=True)
    with replacing(output) as tmp, open(tmp, "wb") as f:
        def member(name: str, data: bytes) -> None:
            f.write(tw.header(name, mode=0o644, size=len(data)))
            f.write(data + b"\0" * tw.padding(len(data)))

        member("oci-layout", canonical_json({"imageLayoutVersion": "1.0.0"}))
        member("index.json", canonical_json(index))
        f.write(tw.header("blobs/", mode=0o755, typeflag=tw.DIRTYPE))
        f.write(tw.header("blobs/sha256/", mode=0o755, typeflag=tw.DIRTYPE))
        for digest in sorted(blobs):
            with store.open_blob(digest) as src:
                size = os.fstat(src.fileno()).st_size
                f.write(tw.header(f"blobs/sha256/{digest[7:]}", mode=0o644, size=size))
                copied = 0
                while chunk := src.read(_CHUNK):
                    f.write(chunk)
                    copied += len(chunk)
                if copied != size:
                    raise StoreError(f"blob {digest} changed while saving")
                f.write(b"\0" * tw.padding(size))
            done += size
            if progress is not None:
                progress(BytesDone("save", done, total))
        f.write(tw.END_OF_ARCHIVE)
        f.flush()
        os.fsync(f.fileno())
    fsync_dir(output.parent)
    return saved


@dataclass
class LoadResult:
    """What ``load_archive`` brought in."""

    images: list[tuple[Reference | None, Descriptor]] = field(default_factory=list)
    blobs_written: int = 0
    warnings: list[str] = field(default_factory=list)


def _entry_name(m: dict[str, Any], warnings: list[str]) -> Reference | None:
    annotations = m.get("annotations") or {}
    name = annotations.get(CONTAINERD_NAME_ANNOTATION) or annotations.get(REF_NAME_ANNOTATION)
    if not name:
        return None
    if _TAG_ONLY_RE.match(name) and annotations.get(CONTAINERD_NAME_ANNOTATION) is None:
        warnings.append(f"{m.get('digest', '?')[:19]}: ref name {name!r} is only a tag; "
                        "loaded without a name (use `kbuild tag ID NAME`)")
        return None
    try:
        return Reference.parse(name)
    except UsageError as exc:
        warnings.append(f"{m.get('digest', '?')[:19]}: {exc}; loaded without a name")
        return None


def _read_archive(store: Store, path: Path, result: LoadResult,
                  progress: Progress | None) -> dict[str, Any]:
    """Stream the tar: blobs into the store (verified); returns the checked index.json."""
    docs: dict[str, dict[str, Any]] = {}
    done = 0
    try:
        total: int | None = path.stat().st_size
    except OSError as exc:
        raise StoreError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        with tarfile.open(path, mode="r|*") as tf:
            for m in tf:
                name = "/".join(p for p in m.name.split("/") if p not in ("", "."))
                if not m.isreg():
                    continue
                if name in ("index.json", "oci-layout"):
                    if m.size > _JSON_LIMIT:
                        raise StoreError(f"{path}: {name} is too large")
                    src = tf.extractfile(m)
                    docs[name] = parse_document(src.read() if src is not None else b"",
                                                "index" if name == "index.json" else "layout",
                                                what=f"{path}: {name}")
                    continue
                match = _BLOB_RE.match(name)
                src = tf.extractfile(m) if match else None
                if match and src is not None and not store.has_blob("sha256:" + match[1]):
                    with store.blob_writer("sha256:" + match[1]) as w:
                        shutil.copyfileobj(src, w, _CHUNK)
                    result.blobs_written += 1
                done += m.size if match else 0
                if match and progress is not None:
                    progress(BytesDone("load", done, total))
    except (tarfile.TarError, EOFError, zlib.error) as exc:
        raise StoreError(f"{path}: not a valid tar archive: {exc}") from None
    except FileNotFoundError:
        raise StoreError(f"{path}: no such file") from None
    layout = docs.get("oci-layout")
    if "index.json" not in docs or layout is None or layout["imageLayoutVersion"] != "1.0.0":
        raise StoreError(f"{path}: not an OCI archive (no index.json / oci-layout)",
                         hint="create one with `kbuild save` or `skopeo copy ... oci-archive:FILE`")
    return docs["index.json"]


def load_archive(store: Store, path: Path | str, progress: Progress | None = None) -> LoadResult:
    """Import an OCI archive (tar of an OCI layout, optionally compressed).

    Every image is checked (documents well-formed, blobs present) before any is tagged.
    """
    path = Path(path)
    result = LoadResult()
    index = _read_archive(store, path, result, progress)
    if not index["manifests"]:
        raise StoreError(f"{path}: index.json lists no images")
    entries = [(m, Descriptor.from_dict(m)) for m in index["manifests"]]
    for _, desc in entries:
        _check_tree(store, desc, str(path))
    for m, desc in entries:
        ref = _entry_name(m, result.warnings)
        plain = desc.with_annotations({k: v for k, v in (desc.annotations or {}).items()
                                       if k not in (REF_NAME_ANNOTATION,
                                                    CONTAINERD_NAME_ANNOTATION)} or None)
        if ref is not None:
            store.tag(ref, plain)
        else:
            store.add_untagged(plain)
        result.images.append((ref, plain))
    return result
