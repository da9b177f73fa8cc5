"""The OCI image layout under the kbuild root: blobs, documents, index.json, records, the lock.

Layout::

    root/oci/oci-layout, index.json, blobs/sha256/<hex>   the OCI image layout
    root/tmp/        blobs being written (renamed into place when complete)
    root/records/    build cache records (GC roots other than images)
    root/snapshots/  layers unpacked once, for overlay lower dirs
    root/cache/      the stat cache
    root/lock        fcntl lock for index.json and GC

:class:`Layout` is what the maintenance modules (GC, snapshots, packing)
work on; :class:`kbuild.layerstore.Store` adds names and maintenance on top.
Every manifest, index and config read here goes through ``_schema``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from kbuild.errors import BlobNotFound, StoreError, UsageError
from kbuild.fsutil import atomic_write

from ._blobs import BlobWriter, canonical_json, check_digest
from ._paths import default_root
from ._reference import Reference
from ._schema import check_document, child_digests, is_index, load_json, parse_document
from ._types import REF_NAME_ANNOTATION, Descriptor, LayerInfo, MediaType

_KIND_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
_JSON_LIMIT = 8 << 20
OCI_LAYOUT = {"imageLayoutVersion": "1.0.0"}


class Layout:
    """Content-addressed blobs, index.json entries and cache records under ``root``."""

    def __init__(self, root: Path | str | None = None) -> None:
        self.root = Path(root) if root is not None else default_root()
        self.oci_dir = self.root / "oci"
        self.blob_dir = self.oci_dir / "blobs" / "sha256"
        self.tmp_dir = self.root / "tmp"
        self.records_dir = self.root / "records"
        self.snapshots_dir = self.root / "snapshots"
        self.cache_dir = self.root / "cache"
        self.index_path = self.oci_dir / "index.json"
        self._lock_state = threading.local()
        self._thread_lock = threading.RLock()
        try:
            for d in (self.blob_dir, self.tmp_dir, self.records_dir, self.snapshots_dir,
                      self.cache_dir):
                d.mkdir(parents=True, exist_ok=True)
            if not (self.oci_dir / "oci-layout").exists():
                atomic_write(
                    self.oci_dir / "oci-layout", canonical_json(OCI_LAYOUT), tmp_dir=self.tmp_dir
                )
            if not self.index_path.exists():
                with self.lock():
                    if not self.index_path.exists():
                        self._write_index_file([])
        except PermissionError as exc:
            raise StoreError(
                f"cannot use store at {self.root}: {exc.strerror}",
                hint="set KBUILD_ROOT or --root to a directory you can write",
            ) from exc

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.root)!r})"

    # -- locking ---------------------------------------------------------

    @contextlib.contextmanager
    def lock(self, exclusive: bool = True) -> Iterator[None]:
        """Hold the store's fcntl lock (re-entrant within one Store object)."""
        with self._thread_lock:
            depth = getattr(self._lock_state, "depth", 0)
            if depth:
                self._lock_state.depth = depth + 1
                try:
                    yield
                finally:
                    self._lock_state.depth -= 1
                return
            fd = os.open(self.root / "lock", os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
                self._lock_state.depth = 1
                try:
                    yield
                finally:
                    self._lock_state.depth = 0
                    fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)

    # -- blobs -----------------------------------------------------------

    def blob_path(self, digest: str) -> Path:
        """Path of the blob file (whether or not it exists)."""
        return self.blob_dir / check_digest(digest)

    def has_blob(self, digest: str) -> bool:
        """Whether the blob is in the store."""
        return self.blob_path(digest).is_file()

    def touch_blob(self, digest: str) -> bool:
        """Refresh a present blob's mtime, so GC's grace period starts again; False if absent."""
        try:
            os.utime(self.blob_path(digest))
        except FileNotFoundError:
            return False
        return True

    def blob_size(self, digest: str) -> int:
        """Size of a stored blob."""
        try:
            return self.blob_path(digest).stat().st_size
        except FileNotFoundError:
            raise BlobNotFound(f"blob {digest} is not in the store at {self.root}") from None

    def open_blob(self, digest: str) -> BinaryIO:
        """Open a stored blob for reading."""
        try:
            return open(self.blob_path(digest), "rb")
        except FileNotFoundError:
            raise BlobNotFound(f"blob {digest} is not in the store at {self.root}") from None

    def blob_writer(self, expected: str | None = None, *, resume: bool = False) -> BlobWriter:
        """A :class:`BlobWriter` into this store."""
        return BlobWriter(self.blob_dir, self.tmp_dir, expected, resume=resume)

    def put_bytes(self, data: bytes) -> str:
        """Store ``data``; returns its digest."""
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        if self.touch_blob(digest):
            return digest
        with self.blob_writer(digest) as w:
            w.write(data)
        return digest

    def read_bytes(self, digest: str) -> bytes:
        """The content of a stored blob."""
        with self.open_blob(digest) as f:
            return f.read()

    # -- documents -------------------------------------------------------

    def read_json(self, digest: str) -> dict[str, Any]:
        """Parse a stored JSON blob (an object)."""
        obj = load_json(self.read_bytes(digest), what=f"blob {digest}")
        if not isinstance(obj, dict):
            raise StoreError(f"blob {digest} is not a JSON object")
        return obj

    def put_json(self, obj: Any) -> tuple[str, int, bytes]:
        """Store ``obj`` as canonical JSON; returns ``(digest, size, bytes)``."""
        data = canonical_json(obj)
        return self.put_bytes(data), len(data), data

    def read_manifest(self, desc_or_digest: Descriptor | str) -> dict[str, Any]:
        """The manifest (or index) JSON of a descriptor or digest, checked."""
        digest = desc_or_digest.digest if isinstance(desc_or_digest, Descriptor) else desc_or_digest
        return parse_document(self.read_bytes(digest), "image", what=f"manifest {digest}")

    def read_config(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """The image config a manifest points at, checked."""
        if not isinstance(manifest, dict) or is_index(manifest):
            raise StoreError("manifest has no config (is it an index?)")
        check_document(manifest, "manifest", what="manifest")
        digest = manifest["config"]["digest"]
        return parse_document(self.read_bytes(digest), "config", what=f"image config {digest}")

    def children(self, digest: str) -> list[str]:
        """Digests a stored manifest or index points at (nothing for other or bad blobs)."""
        path = self.blob_path(digest)
        try:
            if path.stat().st_size > _JSON_LIMIT:
                return []
            with open(path, "rb") as f:
                data = f.read()
        except OSError:
            return []
        if not data.startswith(b"{"):
            return []
        try:
            return child_digests(load_json(data, what=digest))
        except StoreError:
            return []

    def walk(self, *roots: str,
             children: Callable[[str], list[str]] | None = None) -> Iterator[str]:
        """Each digest of the trees under ``roots`` once (roots first, then what they reach).

        ``children`` gives a digest's children (default :meth:`children`, which
        gives none for a missing or non-JSON blob).
        """
        expand = children or self.children
        seen: set[str] = set()
        todo = list(reversed(roots))
        while todo:
            digest = todo.pop()
            if digest not in seen:
                seen.add(digest)
                yield digest
                todo += reversed(expand(digest))

    def missing_blobs(self, digest: str) -> list[str]:
        """Blobs of the tree under ``digest`` (itself, children, theirs) not in the store."""
        return [d for d in self.walk(digest) if not self.has_blob(d)]

    def write_image(
        self,
        config: dict[str, Any],
        layers: list[LayerInfo],
        *,
        annotations: dict[str, str] | None = None,
    ) -> Descriptor:
        """Write config and manifest blobs; returns the manifest descriptor.

        ``config["rootfs"]`` is set from ``layers`` (their diffIDs in order).
        """
        for layer in layers:
            if not self.has_blob(layer.digest):
                raise BlobNotFound(f"layer blob {layer.digest} is not in the store")
        config = dict(config)
        config["rootfs"] = {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]}
        cdigest, csize, _ = self.put_json(config)
        manifest: dict[str, Any] = {
            "schemaVersion": 2,
            "mediaType": MediaType.OCI_MANIFEST,
            "config": Descriptor(MediaType.OCI_CONFIG, cdigest, csize).to_dict(),
            "layers": [layer.descriptor().to_dict() for layer in layers],
        }
        if annotations:
            manifest["annotations"] = dict(sorted(annotations.items()))
        mdigest, msize, _ = self.put_json(manifest)
        platform: dict[str, Any] | None = None
        if config.get("os") and config.get("architecture"):
            platform = {"architecture": config["architecture"], "os": config["os"]}
            if config.get("variant"):
                platform["variant"] = config["variant"]
        return Descriptor(MediaType.OCI_MANIFEST, mdigest, msize, platform=platform)

    def write_index(self, manifests: list[Descriptor]) -> Descriptor:
        """Write an OCI image index over ``manifests``; returns its descriptor."""
        for m in manifests:
            if not self.has_blob(m.digest):
                raise BlobNotFound(f"manifest {m.digest} is not in the store")
        index = {
            "schemaVersion": 2,
            "mediaType": MediaType.OCI_INDEX,
            "manifests": [m.to_dict() for m in manifests],
        }
        digest, size, _ = self.put_json(index)
        return Descriptor(MediaType.OCI_INDEX, digest, size)

    # -- index.json ------------------------------------------------------

    def _read_index_file(self) -> dict[str, Any]:
        try:
            data = self.index_path.read_bytes()
        except FileNotFoundError:
            return {"schemaVersion": 2, "mediaType": MediaType.OCI_INDEX, "manifests": []}
        return parse_document(data, "index", what=str(self.index_path))

    def _write_index_file(self, manifests: list[dict[str, Any]]) -> None:
        def key(m: dict[str, Any]) -> tuple[str, str]:
            return ((m.get("annotations") or {}).get(REF_NAME_ANNOTATION, ""), m["digest"])

        index = {
            "schemaVersion": 2,
            "mediaType": MediaType.OCI_INDEX,
            "manifests": sorted(manifests, key=key),
        }
        data = json.dumps(index, indent=2).encode() + b"\n"
        atomic_write(self.index_path, data, tmp_dir=self.tmp_dir)

    def entries(self) -> list[tuple[Reference | None, Descriptor]]:
        """Every index.json entry; untagged ones (e.g. loaded without a name) have ``None``."""
        out: list[tuple[Reference | None, Descriptor]] = []
        for m in self._read_index_file()["manifests"]:
            desc = Descriptor.from_dict(m)
            name = (desc.annotations or {}).get(REF_NAME_ANNOTATION)
            ref: Reference | None = None
            if name:
                try:
                    ref = Reference.parse(name)
                except UsageError:
                    ref = None
            out.append((ref, desc))
        return out

    def images(self) -> list[tuple[Reference, Descriptor]]:
        """Named images, sorted by name."""
        return [(ref, desc) for ref, desc in self.entries() if ref is not None]

    # -- records ---------------------------------------------------------

    def _record_path(self, kind: str, key: str) -> Path:
        if not _KIND_RE.match(kind):
            raise StoreError(f"invalid record kind {kind!r}")
        return self.records_dir / kind / (hashlib.sha256(key.encode()).hexdigest() + ".json")

    def put_record(self, kind: str, key: str, data: dict[str, Any]) -> None:
        """Store a named record; ``data["blobs"]`` lists the digests it keeps alive."""
        for digest in data.get("blobs", []):
            check_digest(digest)
        path = self._record_path(kind, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, canonical_json({"key": key, "data": data}), tmp_dir=self.tmp_dir)

    def get_record(self, kind: str, key: str) -> dict[str, Any] | None:
        """The record's data, or ``None``."""
        path = self._record_path(kind, key)
        try:
            obj = load_json(path.read_bytes(), what=str(path))
        except (FileNotFoundError, StoreError):
            return None
        if not isinstance(obj, dict) or obj.get("key") != key:
            return None
        data = obj.get("data")
        return data if isinstance(data, dict) else None

    def records(self, kind: str | None = None) -> Iterator[tuple[str, str, dict[str, Any]]]:
        """``(kind, key, data)`` of every record (of one kind)."""
        kinds = [kind] if kind else sorted(p.name for p in self.records_dir.iterdir() if p.is_dir())
        for k in kinds:
            d = self.records_dir / k
            if not d.is_dir():
                continue
            for p in sorted(d.glob("*.json")):
                try:
                    obj = load_json(p.read_bytes(), what=str(p))
                except (OSError, StoreError):
                    continue
                if isinstance(obj, dict) and isinstance(obj.get("data"), dict):
                    yield k, str(obj.get("key", "")), obj["data"]

    def delete_records(self, kind: str | None = None) -> int:
        """Delete all records of ``kind`` (all kinds when ``None``); returns the count."""
        n = 0
        with self.lock():
            kinds = [kind] if kind else [p.name for p in self.records_dir.iterdir() if p.is_dir()]
            for k in kinds:
                if kind is not None:
                    self._record_path(k, "")  # validates the kind
                d = self.records_dir / k
                if not d.is_dir():
                    continue
                for p in d.glob("*.json"):
                    with contextlib.suppress(FileNotFoundError):
                        p.unlink()
                        n += 1
        return n
