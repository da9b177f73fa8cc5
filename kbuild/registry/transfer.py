"""Push and pull of whole images between the local store and a registry."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from kbuild.errors import BlobNotFound, DigestMismatch, RegistryError, StoreError
from kbuild.layerstore import (
    Descriptor,
    MediaType,
    Platform,
    Reference,
    check_document,
    index_platforms,
    is_index,
    load_json,
    pick_manifest,
)

from .blobs import pull_blob, push_blob
from .client import ClientOptions, RegistryClient
from .events import BlobDone, ManifestDone, Progress

if TYPE_CHECKING:
    from kbuild.layerstore import Store

ACCEPT = (MediaType.OCI_INDEX, MediaType.OCI_MANIFEST, MediaType.DOCKER_LIST,
          MediaType.DOCKER_MANIFEST)
INDEX_RECORD = "registry-index"
_COMMIT_ROUNDS = 3


def _parallel(jobs: int, tasks: list[Callable[[], BlobDone]]) -> list[BlobDone]:
    """Run ``tasks`` on ``jobs`` threads; the first failure cancels what has not started."""
    if not tasks:
        return []
    pool = ThreadPoolExecutor(max_workers=max(1, min(jobs, len(tasks))),
                              thread_name_prefix="kbuild-blob")
    futures: list[Future[BlobDone]] = [pool.submit(t) for t in tasks]
    try:
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        for f in done:
            exc = f.exception()
            if exc is not None:
                raise exc
        return [f.result() for f in futures]
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _ref(ref: str | Reference) -> Reference:
    return ref if isinstance(ref, Reference) else Reference.parse(ref)


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _media_type(doc: dict[str, Any], fallback: str) -> str:
    return str(doc.get("mediaType") or fallback)


def push_image(store: Store, name: str | Reference, dest_ref: str | Reference, *,
               progress: Progress | None = None,
               options: ClientOptions | None = None) -> Descriptor:
    """Push the local image ``name`` to ``dest_ref``; returns the pushed descriptor.

    Blobs go first (in parallel, skipping what the registry has, mounting
    what another repository of the registry has), then manifests, then the
    index, each with its exact Content-Type.
    """
    ref = _ref(dest_ref)
    desc = store.resolve(name)
    options = options or ClientOptions()
    with RegistryClient(ref.registry, options, api_host=ref.api_host,
                        progress=progress) as client:
        repo = ref.repository
        client.push_repositories.add(repo)  # one pull,push token serves every request
        top = store.read_bytes(desc.digest)
        top_doc = store.read_manifest(desc)
        top_type = _media_type(top_doc, desc.media_type)
        manifests: list[tuple[str, bytes, dict[str, Any], str]] = []
        if is_index(top_doc):
            for entry in top_doc["manifests"]:
                child = Descriptor.from_dict(entry)
                if not store.has_blob(child.digest):
                    raise BlobNotFound(f"{name}: manifest {child.digest} of the index is not "
                                       "in the local store")
                doc = store.read_manifest(child)
                manifests.append((child.digest, store.read_bytes(child.digest), doc,
                                  _media_type(doc, child.media_type)))
        else:
            manifests.append((desc.digest, top, top_doc, top_type))
        blobs: dict[str, int] = {}
        for _, _, doc, _ in manifests:
            if is_index(doc):
                raise RegistryError(f"{name}: an index inside an index cannot be pushed")
            for b in [doc["config"], *doc["layers"]]:
                if not store.has_blob(b["digest"]):
                    raise BlobNotFound(f"{name}: blob {b['digest']} is not in the local store")
                blobs[b["digest"]] = b["size"]
        _parallel(options.jobs, [
            partial(push_blob, client, store, repo, d, s) for d, s in blobs.items()
        ])
        tag = ref.digest if ref.digest else (ref.tag or "latest")
        for digest, data, _, mtype in manifests:
            reference = digest if (is_index(top_doc) or ref.digest) else tag
            _put_manifest(client, repo, reference, data, mtype, digest)
        if is_index(top_doc):
            _put_manifest(client, repo, ref.digest or tag, top, top_type, desc.digest)
    return Descriptor(top_type, desc.digest, len(top), platform=desc.platform)


def _put_manifest(client: RegistryClient, repo: str, reference: str, data: bytes,
                  media_type: str, digest: str) -> None:
    got = client.put_manifest(repo, reference, data, media_type)
    if got and got != digest:
        raise DigestMismatch(digest, got, what=f"{client.registry}/{repo}:{reference} manifest")
    client.emit(ManifestDone(f"{client.registry}/{repo}:{reference}", digest, media_type))


def _fetch_manifest(client: RegistryClient, ref: Reference, reference: str,
                    expected: str | None) -> tuple[bytes, dict[str, Any], str, str]:
    what = f"{ref.registry}/{ref.repository}:{reference}"
    data, ctype, header_digest = client.get_manifest(ref.repository, reference, ACCEPT)
    digest = _sha256(data)
    if expected and digest != expected:
        raise DigestMismatch(expected, digest, what=f"manifest {what}")
    if header_digest and header_digest.startswith("sha256:") and header_digest != digest:
        raise DigestMismatch(header_digest, digest, what=f"manifest {what}")
    doc = parse_manifest(data, what)
    return data, doc, _media_type(doc, ctype), digest


def parse_manifest(data: bytes, what: str) -> dict[str, Any]:
    """A manifest or index a registry sent, checked; ``RegistryError`` naming ``what``."""
    doc = load_json(data, what=f"{what}: manifest", error=RegistryError)
    if isinstance(doc, dict) and doc.get("schemaVersion") == 1:
        raise RegistryError(f"{what}: Docker schema 1 manifests are not supported",
                            hint="re-push the image with a current tool")
    return check_document(doc, "image", what=f"{what}: manifest", error=RegistryError)


def select_manifest(index: dict[str, Any], wanted: Platform, what: str) -> dict[str, Any]:
    """The entry of ``index["manifests"]`` for ``wanted``; raises naming what exists."""
    entry = pick_manifest(index, wanted)
    if entry is None:
        have = index_platforms(index)
        raise RegistryError(f"{what}: no image for platform {wanted}",
                            hint=f"available: {', '.join(have) or 'none'}; choose with --platform")
    return entry


@dataclass
class _Pulled:
    """The manifest a pull resolved to (and the index it came from, if any)."""

    ref: Reference
    data: bytes
    doc: dict[str, Any]
    media_type: str
    digest: str
    platform: dict[str, Any] | None = None
    index: tuple[bytes, str] | None = None


def _resolve(client: RegistryClient, ref: Reference, wanted: Platform) -> _Pulled:
    """Fetch the manifest of ``ref``, going through an index to ``wanted``'s entry."""
    data, doc, mtype, digest = _fetch_manifest(client, ref, ref.digest or ref.tag or "latest",
                                               ref.digest)
    pulled = _Pulled(ref, data, doc, mtype, digest)
    if is_index(doc):
        entry = select_manifest(doc, wanted, f"{ref.familiar}")
        data, doc, mtype, digest = _fetch_manifest(client, ref, entry["digest"], entry["digest"])
        pulled = _Pulled(ref, data, doc, _media_type(doc, entry.get("mediaType") or mtype),
                         digest, entry.get("platform"), (pulled.data, pulled.digest))
    if is_index(pulled.doc) or pulled.media_type not in MediaType.MANIFESTS:
        raise RegistryError(f"{ref.familiar}: unsupported manifest type {pulled.media_type!r}")
    return pulled


def _fetch_blobs(client: RegistryClient, store: Store, pulled: _Pulled, jobs: int) -> None:
    blobs = {b["digest"]: b["size"] for b in [pulled.doc["config"], *pulled.doc["layers"]]}
    try:
        _parallel(jobs, [partial(pull_blob, client, store, pulled.ref.repository, d, s)
                         for d, s in blobs.items()])
    except DigestMismatch as exc:
        raise DigestMismatch(exc.expected, exc.actual,
                             what=f"{pulled.ref.familiar}: blob") from None


def _commit(store: Store, pulled: _Pulled, wanted: Platform) -> Descriptor:
    """Store the manifest, check the config, tag. ``BlobNotFound`` if a blob went missing."""
    ref = pulled.ref
    if store.put_bytes(pulled.data) != pulled.digest:
        raise DigestMismatch(pulled.digest, _sha256(pulled.data), what=f"{ref.familiar}: manifest")
    try:
        config = store.read_config(pulled.doc)
    except BlobNotFound:
        raise
    except StoreError as exc:
        raise RegistryError(f"{ref.familiar}: {exc}") from None
    plat = pulled.platform
    if plat is None and config.get("os") and config.get("architecture"):
        plat = {"os": config["os"], "architecture": config["architecture"]}
        if config.get("variant"):
            plat["variant"] = config["variant"]
    desc = Descriptor(pulled.media_type, pulled.digest, len(pulled.data), platform=plat)
    with store.lock():  # GC holds it too: what is checked here stays until tagged
        if pulled.index is not None:
            store.put_bytes(pulled.index[0])
            store.put_record(INDEX_RECORD, str(ref), {
                "blobs": [pulled.index[1], pulled.digest], "index": pulled.index[1],
                "manifest": pulled.digest, "platform": str(wanted)})
        store.tag(ref, desc)
    return desc


def pull_image(store: Store, ref: str | Reference, *, platform: str | Platform | None = None,
               progress: Progress | None = None,
               options: ClientOptions | None = None) -> Descriptor:
    """Pull ``ref`` into the store and tag it locally under ``ref``.

    An index (or Docker manifest list) is resolved to the manifest for
    ``platform`` (default: this machine); the index blob is stored too and
    kept alive by a ``registry-index`` record. Returns the tagged manifest
    descriptor (with its platform).

    A blob already in the store is refreshed (GC's grace period starts
    again) instead of downloaded. The tag is written under the store lock
    only when every blob is present; if a concurrent ``prune`` removed one
    meanwhile, it is fetched again (at most ``_COMMIT_ROUNDS`` times).
    """
    ref = _ref(ref)
    wanted = platform if isinstance(platform, Platform) else Platform.parse(platform)
    options = options or ClientOptions()
    with RegistryClient(ref.registry, options, api_host=ref.api_host,
                        progress=progress) as client:
        pulled = _resolve(client, ref, wanted)
        for round_ in range(1, _COMMIT_ROUNDS + 1):
            _fetch_blobs(client, store, pulled, options.jobs)
            try:
                desc = _commit(store, pulled, wanted)
                break
            except BlobNotFound as exc:
                if round_ == _COMMIT_ROUNDS:
                    raise RegistryError(
                        f"{ref.familiar}: blobs were removed from the store while pulling "
                        f"({exc})", hint="is a `kbuild prune --grace 0` running? "
                                         "pull again when it is done") from None
        client.emit(ManifestDone(str(ref), pulled.digest, pulled.media_type))
    return desc
