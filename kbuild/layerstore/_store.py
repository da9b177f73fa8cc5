"""The local store: an OCI image layout under the kbuild root.

Layout::

    root/oci/oci-layout, index.json, blobs/sha256/<hex>   the OCI image layout
    root/tmp/        blobs being written (renamed into place when complete)
    root/records/    build cache records (GC roots other than images)
    root/snapshots/  layers unpacked once, for overlay lower dirs
    root/cache/      the stat cache
    root/lock        fcntl lock for index.json and GC
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from kbuild.errors import BlobNotFound, ImageNotFound, StoreError, UsageError
from kbuild.fsutil import atomic_write

from ._blobs import BlobWriter, canonical_json, check_digest
from ._paths import default_root
from ._reference import Reference
from ._types import REF_NAME_ANNOTATION, Descriptor, LayerInfo, MediaType

if TYPE_CHECKING:
    from ._gc import GcReport

_PREFIX_RE = re.compile(r"^(?:sha256:)?([a-f0-9]{12,64})$")
_SHORT_PREFIX_RE = re.compile(r"^(?:sha256:)?([a-f0-9]{4,64})$")
_KIND_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
OCI_LAYOUT = {"imageLayoutVersion": "1.0.0"}


class Store:
    """Content-addressed blobs, named images and cache records under ``root``."""

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
        return f"Store({str(self.root)!r})"

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
        if self.has_blob(digest):
            with contextlib.suppress(OSError):
                os.utime(self.blob_path(digest))
            return digest
        with self.blob_writer(digest) as w:
            w.write(data)
        return digest

    def read_bytes(self, digest: str) -> bytes:
        """The content of a stored blob."""
        with self.open_blob(digest) as f:
            return f.read()

    def read_json(self, digest: str) -> dict[str, Any]:
        """Parse a stored JSON blob."""
        data = self.read_bytes(digest)
        try:
            obj = json.loads(data)
        except ValueError as exc:
            raise StoreError(f"blob {digest} is not valid JSON: {exc}") from None
        if not isinstance(obj, dict):
            raise StoreError(f"blob {digest} is not a JSON object")
        return obj

    def put_json(self, obj: Any) -> tuple[str, int, bytes]:
        """Store ``obj`` as canonical JSON; returns ``(digest, size, bytes)``."""
        data = canonical_json(obj)
        return self.put_bytes(data), len(data), data

    # -- images ----------------------------------------------------------

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

    def read_manifest(self, desc_or_digest: Descriptor | str) -> dict[str, Any]:
        """The manifest (or index) JSON of a descriptor or digest."""
        digest = desc_or_digest.digest if isinstance(desc_or_digest, Descriptor) else desc_or_digest
        return self.read_json(digest)

    def read_config(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """The image config a manifest points at."""
        try:
            digest = manifest["config"]["digest"]
        except (KeyError, TypeError):
            raise StoreError("manifest has no config (is it an index?)") from None
        return self.read_json(digest)

    def _read_index_file(self) -> dict[str, Any]:
        try:
            with open(self.index_path, "rb") as f:
                data = json.load(f)
        except FileNotFoundError:
            return {"schemaVersion": 2, "mediaType": MediaType.OCI_INDEX, "manifests": []}
        except ValueError as exc:
            raise StoreError(f"{self.index_path}: invalid JSON: {exc}") from None
        if not isinstance(data, dict) or not isinstance(data.get("manifests", []), list):
            raise StoreError(f"{self.index_path}: not an OCI image index")
        data.setdefault("manifests", [])
        return data

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

    def tag(self, name: str | Reference, desc: Descriptor) -> Reference:
        """Point ``name`` at ``desc`` (replacing what it pointed at)."""
        ref = name if isinstance(name, Reference) else Reference.parse(name)
        if not self.has_blob(desc.digest):
            raise BlobNotFound(f"cannot tag {ref.familiar}: {desc.digest} is not in the store")
        annotations = dict(desc.annotations or {})
        annotations[REF_NAME_ANNOTATION] = str(ref)
        entry = desc.with_annotations(annotations).to_dict()
        with self.lock():
            manifests = [
                m for m in self._read_index_file()["manifests"]
                if (m.get("annotations") or {}).get(REF_NAME_ANNOTATION) != str(ref)
            ]
            manifests.append(entry)
            self._write_index_file(manifests)
        return ref

    def add_untagged(self, desc: Descriptor) -> None:
        """Keep ``desc`` in index.json without a name (a GC root shown as ``<none>``)."""
        if not self.has_blob(desc.digest):
            raise BlobNotFound(f"{desc.digest} is not in the store")
        with self.lock():
            manifests = self._read_index_file()["manifests"]
            if any(m.get("digest") == desc.digest for m in manifests):
                return
            annotations = {
                k: v for k, v in (desc.annotations or {}).items() if k != REF_NAME_ANNOTATION
            }
            manifests.append(desc.with_annotations(annotations or None).to_dict())
            self._write_index_file(manifests)

    def untag(self, name: str | Reference) -> Descriptor:
        """Remove the name; returns what it pointed at."""
        ref = name if isinstance(name, Reference) else Reference.parse(name)
        with self.lock():
            manifests = self._read_index_file()["manifests"]
            keep, gone = [], []
            for m in manifests:
                if (m.get("annotations") or {}).get(REF_NAME_ANNOTATION) == str(ref):
                    gone.append(m)
                else:
                    keep.append(m)
            if not gone:
                raise ImageNotFound(f"no image {ref.familiar} in the local store",
                                    hint="see `kbuild images`")
            self._write_index_file(keep)
        return Descriptor.from_dict(gone[0])

    def remove_digest(self, digest: str) -> list[Reference | None]:
        """Remove every index.json entry pointing at ``digest``; returns their names."""
        with self.lock():
            manifests = self._read_index_file()["manifests"]
            keep = [m for m in manifests if m.get("digest") != digest]
            gone = [m for m in manifests if m.get("digest") == digest]
            if not gone:
                raise ImageNotFound(f"no image {digest} in the local store")
            self._write_index_file(keep)
        names: list[Reference | None] = []
        for m in gone:
            name = (m.get("annotations") or {}).get(REF_NAME_ANNOTATION)
            names.append(Reference.parse(name) if name else None)
        return names

    def match_id(self, prefix: str) -> list[str]:
        """Manifest digests in index.json starting with the hex ``prefix`` (4+ digits)."""
        m = _SHORT_PREFIX_RE.match(prefix)
        if not m:
            return []
        hexpart = m.group(1)
        digests = {d.digest for _, d in self.entries()}
        return sorted(d for d in digests if d[7:].startswith(hexpart))

    def resolve(self, name: str | Reference) -> Descriptor:
        """The descriptor for a name, ``name@digest``, digest or ID prefix (12+ hex)."""
        if isinstance(name, Reference):
            ref: Reference | None = name
            text = str(name)
        else:
            text = name
            ref = None
        entries = self.entries()
        if ref is None and _PREFIX_RE.match(text):
            matches = self.match_id(text)
            if len(matches) > 1:
                raise UsageError(
                    f"image ID prefix {text!r} is ambiguous: "
                    + ", ".join(d[7:19] for d in matches),
                    hint="give more digits of the ID",
                )
            if matches:
                return self._descriptor_for(matches[0], entries)
            if text.startswith("sha256:"):
                if len(text) == 71 and self.has_blob(text):
                    return self._descriptor_for(text, entries)
                raise ImageNotFound(f"no image {text} in the local store",
                                    hint="see `kbuild images`")
        if ref is None:
            ref = Reference.parse(text)
        if ref.digest:
            if not self.has_blob(ref.digest):
                raise ImageNotFound(f"no image {ref.familiar} in the local store",
                                    hint="see `kbuild images`")
            return self._descriptor_for(ref.digest, entries)
        for eref, desc in entries:
            if eref is not None and str(eref) == str(ref):
                return desc
        raise ImageNotFound(f"no image {ref.familiar} in the local store",
                            hint="see `kbuild images`")

    def _descriptor_for(
        self, digest: str, entries: list[tuple[Reference | None, Descriptor]]
    ) -> Descriptor:
        for _, desc in entries:
            if desc.digest == digest:
                return desc
        obj = self.read_json(digest)
        media = obj.get("mediaType") or (
            MediaType.OCI_INDEX if "manifests" in obj else MediaType.OCI_MANIFEST
        )
        return Descriptor(str(media), digest, self.blob_size(digest))

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
            obj = json.loads(path.read_bytes())
        except (FileNotFoundError, ValueError):
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
                    obj = json.loads(p.read_bytes())
                except (OSError, ValueError):
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

    # -- maintenance -----------------------------------------------------

    def gc(self, *, records: bool = False, temp_grace: float = 3600.0,
           blob_grace: float = 60.0) -> GcReport:
        """Remove blobs no image or record reaches (see :func:`kbuild.layerstore._gc.gc`)."""
        from ._gc import gc

        return gc(self, records=records, temp_grace=temp_grace, blob_grace=blob_grace)

    def fsck(self) -> list[str]:
        """Re-hash every blob and check every image; returns the problems found."""
        from ._gc import fsck

        return fsck(self)

    def snapshot(self, diff_id: str, blob_digest: str) -> Path:
        """The layer unpacked once under ``root/snapshots/<diffid-hex>/``."""
        from ._snapshot import snapshot

        return snapshot(self, diff_id, blob_digest)
