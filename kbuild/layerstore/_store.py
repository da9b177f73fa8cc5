"""The local store: named images over the OCI layout of :class:`Layout`, and its maintenance.

Names live in index.json (annotation ``org.opencontainers.image.ref.name``).
A name is only ever written, under the store lock, for a tree whose blobs
are all present, so a concurrent GC (which holds the same lock) can never
leave a name pointing at a missing blob.
"""

from __future__ import annotations

import re
from pathlib import Path

from kbuild.errors import BlobNotFound, ImageNotFound, UsageError

from ._gc import GcReport, fsck, gc
from ._layout import Layout
from ._reference import Reference
from ._snapshot import snapshot
from ._types import REF_NAME_ANNOTATION, Descriptor, MediaType

_PREFIX_RE = re.compile(r"^(?:sha256:)?([a-f0-9]{12,64})$")
_SHORT_PREFIX_RE = re.compile(r"^(?:sha256:)?([a-f0-9]{4,64})$")


class Store(Layout):
    """Content-addressed blobs, named images and cache records under ``root``."""

    # -- names -----------------------------------------------------------

    def tag(self, name: str | Reference, desc: Descriptor) -> Reference:
        """Point ``name`` at ``desc`` (replacing what it pointed at).

        Raises :class:`BlobNotFound` unless every blob ``desc`` reaches is present.
        """
        ref = name if isinstance(name, Reference) else Reference.parse(name)
        annotations = dict(desc.annotations or {})
        annotations[REF_NAME_ANNOTATION] = str(ref)
        entry = desc.with_annotations(annotations).to_dict()
        with self.lock():
            self._check_complete(desc, ref.familiar)
            manifests = [
                m for m in self._read_index_file()["manifests"]
                if (m.get("annotations") or {}).get(REF_NAME_ANNOTATION) != str(ref)
            ]
            manifests.append(entry)
            self._write_index_file(manifests)
        return ref

    def add_untagged(self, desc: Descriptor) -> None:
        """Keep ``desc`` in index.json without a name (a GC root shown as ``<none>``)."""
        with self.lock():
            self._check_complete(desc, desc.digest)
            manifests = self._read_index_file()["manifests"]
            if any(m.get("digest") == desc.digest for m in manifests):
                return
            annotations = {
                k: v for k, v in (desc.annotations or {}).items() if k != REF_NAME_ANNOTATION
            }
            manifests.append(desc.with_annotations(annotations or None).to_dict())
            self._write_index_file(manifests)

    def _check_complete(self, desc: Descriptor, what: str) -> None:
        """Under the lock: every blob of the tree is present (GC cannot remove one now)."""
        missing = self.missing_blobs(desc.digest)
        if missing:
            raise BlobNotFound(f"cannot tag {what}: blob {missing[0]} is not in the store")

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

    # -- maintenance -----------------------------------------------------

    def gc(self, *, records: bool = False, temp_grace: float = 3600.0,
           blob_grace: float = 60.0) -> GcReport:
        """Remove blobs no image or record reaches (see ``_gc.gc``)."""
        return gc(self, records=records, temp_grace=temp_grace, blob_grace=blob_grace)

    def fsck(self) -> list[str]:
        """Re-hash every blob and check every image; returns the problems found."""
        return fsck(self)

    def snapshot(self, diff_id: str, blob_digest: str) -> Path:
        """The layer unpacked once under ``root/snapshots/<diffid-hex>/``."""
        return snapshot(self, diff_id, blob_digest)
