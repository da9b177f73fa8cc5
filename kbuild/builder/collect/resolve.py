"""Resolve a reference to an image in the store, for the build's platform, pinned by digest.

Order: the local store (an image built or pulled here), then what an
earlier build fetched (a ``collected-images`` record: fetched blobs stay
alive and a rebuild needs no network), then the image's registry through
the fetch function the caller gives (``kbuild.registry.fetch_image``: auth,
TLS and ``certs.d`` as for ``kbuild pull``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from kbuild.errors import ImageNotFound, KbuildError, StoreError
from kbuild.layerstore import Descriptor, MediaType, Platform, Reference, Store, platform_text

RECORD_KIND = "collected-images"


class FetchFunc(Protocol):
    """``kbuild.registry.fetch_image``'s shape (as the CLI binds it)."""

    def __call__(self, store: Store, ref: str, *, platforms: list[Platform],
                 quick: bool = ...) -> Descriptor: ...


@dataclass
class Resolved:
    """An image found: its top descriptor and every blob carried for the platform."""

    ref: Reference
    desc: Descriptor
    platforms: list[str] = field(default_factory=list)
    blobs: dict[str, int] = field(default_factory=dict)  # digest -> size, top first
    where: str = "local store"

    @property
    def size(self) -> int:
        """Bytes of every blob carried for it."""
        return sum(self.blobs.values())


def _platform_of(store: Store, manifest: dict[str, Any]) -> dict[str, Any] | None:
    config = store.read_json(manifest["config"]["digest"])
    if not config.get("os") or not config.get("architecture"):
        return None
    out = {"os": config["os"], "architecture": config["architecture"]}
    if config.get("variant"):
        out["variant"] = config["variant"]
    return out


def _complete(store: Store, ref: Reference, desc: Descriptor, platform: Platform,
              where: str) -> Resolved | None:
    """``desc`` with its blobs for ``platform`` when all are in the store, else None."""
    if not store.has_blob(desc.digest):
        return None
    found = Resolved(ref, desc, where=where)
    found.blobs[desc.digest] = store.blob_size(desc.digest)
    if desc.media_type in MediaType.INDEXES:
        entries = [e for e in store.read_json(desc.digest).get("manifests") or []
                   if platform.matches(e.get("platform"))]
    else:
        entries = [{"digest": desc.digest, "platform": None}]
    if not entries:
        return None
    for entry in entries:
        digest = str(entry["digest"])
        if not store.has_blob(digest):
            return None
        manifest = store.read_json(digest)
        plat = entry.get("platform") or _platform_of(store, manifest)
        if plat is not None and not platform.matches(plat):
            return None
        found.blobs.setdefault(digest, store.blob_size(digest))
        for blob in [manifest.get("config") or {}, *(manifest.get("layers") or [])]:
            d = str(blob.get("digest", ""))
            if not store.has_blob(d):
                return None
            found.blobs.setdefault(d, int(blob.get("size") or store.blob_size(d)))
        found.platforms.append(platform_text(plat) if plat is not None else str(platform))
    return found


def record_key(ref: Reference, platform: Platform) -> str:
    """Key of the ``collected-images`` record of a fetched image."""
    return f"{ref}\n{platform}"


def resolve(store: Store, ref: Reference, platform: Platform, fetch: FetchFunc | None, *,
            refetch: bool = False, quick: bool = False) -> Resolved:
    """The image ``ref`` names for ``platform`` (module docstring); raises ``KbuildError``."""
    local_problem = "not in the local store"
    try:
        desc = store.resolve(ref)
    except ImageNotFound:
        desc = None
    if desc is not None:
        found = _complete(store, ref, desc, platform, "local store")
        if found is not None:
            return found
        local_problem = f"the local store's copy has no complete image for {platform}"
    key = record_key(ref, platform)
    record = None if refetch else store.get_record(RECORD_KIND, key)
    if record is not None:
        desc = Descriptor(str(record["mediaType"]), str(record["digest"]), int(record["size"]))
        found = _complete(store, ref, desc, platform, "earlier fetch")
        if found is not None:
            return found
    if fetch is None:
        raise StoreError(f"{local_problem}, and this build may not use registries",
                         hint=f"build or pull it first (kbuild pull --platform {platform} {ref})")
    try:
        desc = fetch(store, str(ref), platforms=[platform], quick=quick)
    except KbuildError as exc:
        raise StoreError(f"{local_problem}, and the registry: {exc.message}",
                         hint=exc.hint) from None
    found = _complete(store, ref, desc, platform, f"registry {ref.registry}")
    if found is None:
        raise StoreError(f"{ref.registry} gave an incomplete image for {platform}")
    store.put_record(RECORD_KIND, key, {"digest": desc.digest, "mediaType": desc.media_type,
                                        "size": desc.size, "blobs": list(found.blobs)})
    return found
