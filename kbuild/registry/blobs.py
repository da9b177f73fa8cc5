"""Moving one blob: upload (HEAD skip, mount, monolithic or chunked with resume) and download.

Uploads stream from the blob file (never the whole blob in memory). A blob
larger than ``chunk_size`` goes up in ``PATCH`` chunks; the upload URL and
offset are kept in a store record (``registry-uploads``), so after a broken
connection, or a killed process, the next attempt asks the registry how far
it got (``GET`` on the upload URL, ``Range`` header) and goes on from there.
Downloads stream into ``store.blob_writer(digest, resume=True)``, which
hashes on the fly and commits only a verified blob; an interrupted download
continues with ``Range: bytes=N-``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from kbuild.errors import DigestMismatch, RegistryError

from .client import Body, RegistryClient, TransientError
from .events import BlobDone, BlobProgress, BlobStarted

if TYPE_CHECKING:
    from kbuild.layerstore import Store

UPLOAD_RECORD = "registry-uploads"
SOURCES_RECORD = "registry-sources"
_READ = 1 << 20
_PROGRESS_EVERY = 0.25


class Meter:
    """Counts bytes of one blob and emits throttled :class:`BlobProgress` events."""

    def __init__(self, client: RegistryClient, digest: str, size: int) -> None:
        self.client = client
        self.digest = digest
        self.size = size
        self.done = 0
        self.transferred = 0
        self.started = time.monotonic()
        self._last = 0.0

    def set(self, done: int) -> None:
        """Jump to ``done`` bytes (after a resume)."""
        self.done = done

    def add(self, n: int) -> None:
        """``n`` more bytes went over the wire."""
        self.done += n
        self.transferred += n
        now = time.monotonic()
        if now - self._last >= _PROGRESS_EVERY or self.done >= self.size:
            self._last = now
            elapsed = max(now - self.started, 1e-6)
            self.client.emit(BlobProgress(self.digest, self.done, self.size,
                                          self.transferred / elapsed))

    def finish(self, how: str) -> BlobDone:
        """Emit and return the :class:`BlobDone` event."""
        event = BlobDone(self.digest, self.size, how, self.transferred,
                         time.monotonic() - self.started)
        self.client.emit(event)
        return event


def file_body(path: Path, start: int, end: int, on_bytes: Callable[[int], None]) -> Body:
    """A body factory streaming ``path[start:end]`` in 1 MiB pieces."""
    def gen() -> Iterator[bytes]:
        with open(path, "rb") as f:
            f.seek(start)
            remaining = end - start
            while remaining > 0:
                chunk = f.read(min(_READ, remaining))
                if not chunk:
                    raise RegistryError(f"{path}: file shorter than expected")
                remaining -= len(chunk)
                on_bytes(len(chunk))
                yield chunk
    return gen


def _with_digest(location: str, digest: str) -> str:
    return location + ("&" if "?" in location else "?") + "digest=" + digest


def _check_digest_header(resp: httpx.Response, digest: str, what: str) -> None:
    got = resp.headers.get("Docker-Content-Digest")
    if got and got != digest:
        raise DigestMismatch(digest, got, what=what)


def remember_source(store: Store, registry: str, repository: str, digest: str) -> None:
    """Note that ``digest`` exists in ``registry/repository`` (for later mounts)."""
    key = f"{registry}@{digest}"
    rec = store.get_record(SOURCES_RECORD, key) or {}
    if rec.get("repos", [None])[0] == repository:
        return
    repos = [r for r in rec.get("repos", []) if r != repository]
    repos.insert(0, repository)
    store.put_record(SOURCES_RECORD, key, {"blobs": [], "repos": repos[:8]})


def known_sources(store: Store, registry: str, digest: str) -> list[str]:
    """Repositories of ``registry`` that had ``digest`` when kbuild last looked."""
    rec = store.get_record(SOURCES_RECORD, f"{registry}@{digest}") or {}
    return [str(r) for r in rec.get("repos", [])]


def push_blob(client: RegistryClient, store: Store, repository: str, digest: str,
              size: int) -> BlobDone:
    """Make ``digest`` exist in ``repository``: skip, mount, or upload it."""
    meter = Meter(client, digest, size)
    client.emit(BlobStarted(digest, size, "push"))
    if client.blob_exists(repository, digest) is not None:
        remember_source(store, client.registry, repository, digest)
        return meter.finish("exists")
    location: str | None = None
    sources = [r for r in known_sources(store, client.registry, digest) if r != repository]
    if sources:
        location, mounted = client.start_upload(repository, mount=digest, mount_from=sources[0])
        if mounted:
            remember_source(store, client.registry, repository, digest)
            return meter.finish("mounted")
    path = store.blob_path(digest)
    if size > client.options.chunk_size:
        _upload_chunked(client, store, repository, digest, size, path, meter, location)
    else:
        _upload_monolithic(client, repository, digest, size, path, meter, location)
    remember_source(store, client.registry, repository, digest)
    return meter.finish("uploaded")


def _upload_monolithic(client: RegistryClient, repository: str, digest: str, size: int,
                       path: Path, meter: Meter, location: str | None) -> None:
    what = f"{client.registry}/{repository}: upload {digest[:19]}"
    attempt = 0
    started = time.monotonic()
    while True:
        attempt += 1
        try:
            if location is None:
                location, _ = client.start_upload(repository)
            assert location is not None
            meter.set(0)
            resp = client.request(
                "PUT", _with_digest(location, digest), repository=repository,
                actions=("pull", "push"), what=what, retry=False, ok=(201,),
                headers={"Content-Type": "application/octet-stream",
                         "Content-Length": str(size)},
                body=file_body(path, 0, size, meter.add))
            resp.close()
            _check_digest_header(resp, digest, what)
            return
        except TransientError as exc:
            location = None
            if not client.sleep_before_retry(what, attempt, started, str(exc)):
                raise RegistryError(f"{exc} (gave up after {attempt} attempts)") from None


def _upload_chunked(client: RegistryClient, store: Store, repository: str, digest: str,
                    size: int, path: Path, meter: Meter, location: str | None) -> None:
    what = f"{client.registry}/{repository}: upload {digest[:19]}"
    key = f"{client.registry}/{repository}@{digest}"
    offset = 0
    rec = store.get_record(UPLOAD_RECORD, key) or {}
    if rec.get("location"):
        status = client.upload_status(repository, str(rec["location"]))
        if status is not None and status <= size:
            location, offset = str(rec["location"]), status
            client.emit(BlobStarted(digest, size, "push", offset))
    if location is None:
        location, _ = client.start_upload(repository)
    assert location is not None
    meter.set(offset)
    attempt = 0
    last_progress = time.monotonic()
    chunk = client.options.chunk_size
    while offset < size:
        end = min(offset + chunk, size)
        try:
            resp = client.request(
                "PATCH", location, repository=repository, actions=("pull", "push"),
                what=what, retry=False, ok=(202,),
                headers={"Content-Type": "application/octet-stream",
                         "Content-Range": f"{offset}-{end - 1}",
                         "Content-Length": str(end - offset)},
                body=file_body(path, offset, end, meter.add))
            resp.close()
            location = client.absolute(resp.headers.get("Location") or location)
            offset = _range_end(resp.headers.get("Range"), end)
            store.put_record(UPLOAD_RECORD, key, {"blobs": [], "location": location,
                                                  "offset": offset})
            attempt = 0
            last_progress = time.monotonic()
        except TransientError as exc:
            attempt += 1
            if not client.sleep_before_retry(what, attempt, last_progress, str(exc)):
                raise RegistryError(f"{exc} (gave up after {attempt} attempts)") from None
            status = client.upload_status(repository, location)
            if status is None or status > size:
                location, _ = client.start_upload(repository)
                assert location is not None
                status = 0
            offset = status
            meter.set(offset)
    resp = client.request("PUT", _with_digest(location, digest), repository=repository,
                          actions=("pull", "push"), what=what, ok=(201,),
                          headers={"Content-Length": "0"}, content=b"")
    resp.close()
    store.put_record(UPLOAD_RECORD, key, {"blobs": []})
    _check_digest_header(resp, digest, what)


def _range_end(header: str | None, default: int) -> int:
    if not header:
        return default
    try:
        return int(header.rsplit("-", 1)[1]) + 1
    except (IndexError, ValueError):
        return default


def pull_blob(client: RegistryClient, store: Store, repository: str, digest: str,
              size: int) -> BlobDone:
    """Download ``digest`` into the store (verified), unless it is there already.

    A blob already there gets a fresh mtime, so a concurrent ``prune`` keeps it
    for its grace period; ``pull_image`` checks again under the store lock
    before it tags.
    """
    meter = Meter(client, digest, size)
    if store.touch_blob(digest):  # refreshed: a prune's grace period starts again
        client.emit(BlobStarted(digest, size, "pull"))
        return meter.finish("present")
    what = f"{client.registry}/{repository}: blob {digest[:19]}"
    url = client.url(f"/v2/{repository}/blobs/{digest}")
    with store.blob_writer(digest, resume=True) as writer:
        client.emit(BlobStarted(digest, size, "pull", writer.offset))
        meter.set(writer.offset)
        attempt = 0
        last_progress = time.monotonic()
        while writer.offset < size:
            offset = writer.offset
            headers = {"Range": f"bytes={offset}-"} if offset else {}
            try:
                resp = client.request("GET", url, repository=repository, actions=("pull",),
                                      what=what, headers=headers, stream=True, ok=(200, 206))
                try:
                    skip = offset if resp.status_code == 200 else 0
                    if resp.status_code == 206:
                        _check_content_range(resp, offset, what)
                    for data in resp.iter_bytes():
                        if skip:
                            cut = min(skip, len(data))
                            data, skip = data[cut:], skip - cut
                        room = size + 1 - writer.offset
                        if len(data) > room:
                            data = data[:room]
                        writer.write(data)
                        meter.add(len(data))
                        if writer.offset > size:
                            break
                finally:
                    resp.close()
                if writer.offset > size:
                    break
                if writer.offset < size:
                    raise TransientError(f"{what}: connection closed at byte {writer.offset}")
            except (TransientError, httpx.TransportError) as exc:
                if writer.offset > offset:
                    attempt, last_progress = 0, time.monotonic()
                attempt += 1
                reason = str(exc) or type(exc).__name__
                if not client.sleep_before_retry(what, attempt, last_progress, reason):
                    raise RegistryError(f"{what}: {reason} (gave up after {attempt} "
                                        "attempts; the next pull resumes)") from None
    remember_source(store, client.registry, repository, digest)
    return meter.finish("downloaded")


def _check_content_range(resp: httpx.Response, offset: int, what: str) -> None:
    rng = resp.headers.get("Content-Range", "")
    try:
        start = int(rng.split(" ", 1)[1].split("-", 1)[0])
    except (IndexError, ValueError):
        raise RegistryError(f"{what}: bad Content-Range {rng!r}") from None
    if start != offset:
        raise RegistryError(f"{what}: asked for byte {offset}, registry sent {start}")
