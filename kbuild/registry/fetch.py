"""Fetch an image into the store for carrying it: the whole top manifest, the chosen platforms.

Unlike :func:`pull_image`, nothing is tagged: the builder's image collection
keeps what it fetched alive with its own records. An index is stored as
is (its digest is the one a cluster image pins) with the manifests, configs
and layers of the wanted platforms only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

from kbuild.errors import DigestMismatch, RegistryError
from kbuild.layerstore import Descriptor, MediaType, Platform, Reference

from .blobs import pull_blob
from .client import ClientOptions, RegistryClient
from .events import Progress
from .transfer import _COMMIT_ROUNDS, _fetch_manifest, _parallel, _ref
from .transport import RetryPolicy

if TYPE_CHECKING:
    from kbuild.layerstore import Store

QUICK_RETRY = RetryPolicy(attempts=2, max_time=15.0)
"""Retries for a guess (a custom resource's image): a missing image is not worth a minute."""


def fetch_image(store: Store, ref: str | Reference, *,
                platforms: Sequence[Platform | str] | None = None,
                quick: bool = False, progress: Progress | None = None,
                options: ClientOptions | None = None,
                all_platforms: bool = False) -> Descriptor:
    """Download ``ref`` into ``store`` (no tag) and return its top descriptor.

    ``platforms`` (default: this machine) choose the manifests of an index,
    ``all_platforms`` takes every one; none matching raises ``RegistryError``
    naming what the index has. ``quick`` retries little (for references that
    may well not exist).
    """
    ref = _ref(ref)
    wanted = [p if isinstance(p, Platform) else Platform.parse(p) for p in platforms or [""]]
    options = options or ClientOptions()
    if quick:
        options = dataclasses.replace(options, retry=QUICK_RETRY)
    with RegistryClient(ref.registry, options, api_host=ref.api_host,
                        progress=progress) as client:
        data, doc, mtype, digest = _fetch_manifest(client, ref, ref.digest or ref.tag or "latest",
                                                   ref.digest)
        manifests: list[tuple[bytes, dict[str, Any], str]] = []
        if mtype in MediaType.INDEXES:
            entries = [e for e in doc.get("manifests") or []
                       if all_platforms or any(p.matches(e.get("platform")) for p in wanted)]
            if not entries:
                have = [str(e.get("platform")) for e in doc.get("manifests") or []]
                raise RegistryError(f"{ref.familiar}: no image for {', '.join(map(str, wanted))}",
                                    hint=f"the index has: {', '.join(have) or 'nothing'}")
            for entry in entries:
                cdata, cdoc, _ctype, cdigest = _fetch_manifest(client, ref, entry["digest"],
                                                               entry["digest"])
                manifests.append((cdata, cdoc, cdigest))
        elif mtype in MediaType.MANIFESTS:
            manifests.append((data, doc, digest))
        else:
            raise RegistryError(f"{ref.familiar}: unsupported manifest type {mtype!r}")
        blobs: dict[str, int] = {}
        for _data, mdoc, _digest in manifests:
            for b in [mdoc.get("config"), *mdoc.get("layers", [])]:
                if isinstance(b, dict) and "digest" in b:
                    blobs[str(b["digest"])] = int(b.get("size", 0))
        try:
            _parallel(options.jobs, [partial(pull_blob, client, store, ref.repository, d, s)
                                     for d, s in blobs.items() if not store.has_blob(d)])
        except DigestMismatch as exc:
            raise DigestMismatch(exc.expected, exc.actual, what=f"{ref.familiar}: blob") from None
        for mdata, _doc, mdigest in manifests:
            _put(store, mdata, mdigest, ref)
        _put(store, data, digest, ref)
    return Descriptor(mtype, digest, len(data))


def pull_all(store: Store, ref: str | Reference, *, progress: Progress | None = None,
             options: ClientOptions | None = None) -> Descriptor:
    """Pull ``ref`` with every platform of its index (``kbuild pull --all-platforms``)
    and tag it locally under ``ref``: the index itself, as ``skopeo copy --all``
    keeps it. A single-platform image is pulled as is."""
    ref = _ref(ref)
    for _ in range(_COMMIT_ROUNDS):
        desc = fetch_image(store, ref, all_platforms=True, progress=progress, options=options)
        with store.lock():  # GC holds it too: what is checked here stays until tagged
            if not store.missing_blobs(desc.digest):
                store.tag(ref, desc)
                return desc
    raise RegistryError(f"{ref.familiar}: blobs were removed from the store while pulling "
                        f"({_COMMIT_ROUNDS} times)", hint="is a `kbuild prune --grace 0` running? "
                        "pull again when it is done")


def _put(store: Store, data: bytes, digest: str, ref: Reference) -> None:
    got = store.put_bytes(data)
    if got != digest:
        raise DigestMismatch(digest, got, what=f"{ref.familiar}: manifest")
