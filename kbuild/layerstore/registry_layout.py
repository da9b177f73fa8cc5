"""Write images from the store into distribution's filesystem storage layout.

A cluster image carries the container images its cluster needs under
``registry/`` in the layout of distribution's (``docker-registry``)
filesystem storage driver, so that the embedded registry on master0 serves
them as they are, with no import step::

    docker/registry/v2/blobs/sha256/<2 hex>/<hex>/data
    docker/registry/v2/repositories/<repo>/_layers/sha256/<hex>/link
    docker/registry/v2/repositories/<repo>/_manifests/revisions/sha256/<hex>/link
    docker/registry/v2/repositories/<repo>/_manifests/tags/<tag>/current/link
    docker/registry/v2/repositories/<repo>/_manifests/tags/<tag>/index/sha256/<hex>/link

A ``link`` file holds the digest (``sha256:<hex>``, no newline). Manifests
and indexes are blobs too; an index brings all its child manifests (each a
revision of the same repository), their configs and layers.

Repository naming: the image's repository path without the registry host,
so ``registry.k8s.io/kube-apiserver:v1.35.0`` is served as
``kube-apiserver:v1.35.0`` and ``docker.io/library/nginx:1.27`` as
``library/nginx:1.27``. containerd, told to mirror every registry to the
embedded one, asks the mirror for exactly these paths. ``rename`` maps a
reference to another repository path when two registries hold the same
path or a different name is wanted.

Writing is idempotent (present files are kept, tags are moved) and atomic
per file (temp name + fsync + rename). Blob data is hard-linked from the
store when both are on one filesystem, copied otherwise.

Two options serve a layer written over other layers (the builder's image
collection): ``platforms`` keeps of an index only the manifests of those
platforms (the index itself is written whole, so its digest stays the one
the image is pinned by; containerd fetches only its platform's manifest),
and ``skip_blobs`` leaves out the data of blobs a lower layer already holds
(the repository links are still written).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kbuild.errors import BlobNotFound, StoreError, UsageError
from kbuild.fsutil import atomic_write, fsync_dir, replacing

from ._blobs import check_digest
from ._platform import Platform
from ._reference import Reference
from ._store import Store
from ._types import Descriptor, MediaType

ROOT = Path("docker/registry/v2")
"""Where distribution's filesystem driver keeps everything, under its root directory."""

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPO_RE = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_MAX_DEPTH = 4

Rename = Callable[[Reference], str]
"""Maps an image reference to the repository path it is stored under."""


@dataclass(frozen=True)
class WrittenImage:
    """One image written: where it is served and what its top digest is."""

    reference: str
    repository: str
    tag: str | None
    digest: str
    media_type: str


@dataclass
class LayoutReport:
    """What :func:`write_registry_storage` did."""

    images: list[WrittenImage] = field(default_factory=list)
    blobs_linked: int = 0
    blobs_copied: int = 0
    blobs_present: int = 0
    bytes_copied: int = 0

    @property
    def blobs_written(self) -> int:
        """Blobs that were not in the storage before."""
        return self.blobs_linked + self.blobs_copied


def repository_name(ref: Reference | str, rename: Rename | None = None) -> str:
    """The repository path an image is stored under (see the module docstring)."""
    reference = ref if isinstance(ref, Reference) else Reference.parse(ref)
    name = rename(reference) if rename is not None else reference.repository
    if not isinstance(name, str) or not _REPO_RE.match(name) or len(name) > 255:
        raise UsageError(
            f"{reference}: {name!r} is not a valid repository name for the registry storage"
        )
    return name


def write_registry_storage(
    store: Store,
    images: Iterable[tuple[Reference | str, Descriptor]],
    dest: Path,
    *,
    rename: Rename | None = None,
    platforms: Sequence[Platform] | None = None,
    skip_blobs: Collection[str] = (),
) -> LayoutReport:
    """Write ``images`` from ``store`` into distribution's storage layout under ``dest``.

    ``dest`` is the registry's ``storage.filesystem.rootdirectory``. Each
    item is a reference (its tag becomes the registry tag; a digest-only
    reference gets no tag) and the descriptor of its manifest or index.
    Every blob an image reaches must be in the store (``BlobNotFound``
    names the image and the digest otherwise). ``platforms`` and
    ``skip_blobs``: see the module docstring.
    """
    writer = _Writer(store, Path(dest), platforms, skip_blobs)
    for item_ref, desc in images:
        ref = item_ref if isinstance(item_ref, Reference) else Reference.parse(item_ref)
        repo = repository_name(ref, rename)
        if ref.digest and ref.digest != desc.digest:
            raise UsageError(f"{ref}: the reference's digest is not the descriptor's {desc.digest}")
        writer.write_tree(str(ref), repo, desc, 0)
        if ref.tag:
            writer.tag(repo, ref.tag, desc.digest)
        writer.report.images.append(
            WrittenImage(str(ref), repo, ref.tag, desc.digest, desc.media_type)
        )
    return writer.report


class _Writer:
    """State of one write: the store, the destination and the report."""

    def __init__(self, store: Store, dest: Path, platforms: Sequence[Platform] | None = None,
                 skip_blobs: Collection[str] = ()) -> None:
        self.store = store
        self.root = dest / ROOT
        self.report = LayoutReport()
        self._done_blobs: set[str] = set(skip_blobs)
        self.platforms = platforms

    def wanted(self, child: dict[str, Any]) -> bool:
        """Whether an index entry is written (every entry when no platforms are asked)."""
        if self.platforms is None:
            return True
        plat = child.get("platform")
        return isinstance(plat, dict) and any(p.matches(plat) for p in self.platforms)

    # -- traversal -------------------------------------------------------

    def write_tree(
        self, ref: str, repo: str, desc: Descriptor | dict[str, Any], depth: int
    ) -> None:
        d = desc if isinstance(desc, Descriptor) else Descriptor.from_dict(desc)
        if depth > _MAX_DEPTH:
            raise StoreError(f"{ref}: indexes nested deeper than {_MAX_DEPTH} levels")
        doc = self._read_json(ref, d.digest, "manifest")
        media_type = str(doc.get("mediaType") or d.media_type)
        if media_type in MediaType.INDEXES or (
            "manifests" in doc and "layers" not in doc and "config" not in doc
        ):
            for child in doc.get("manifests") or []:
                if self.wanted(child):
                    self.write_tree(ref, repo, child, depth + 1)
        else:
            config = doc.get("config")
            if not isinstance(config, dict) or "digest" not in config:
                raise StoreError(f"{ref}: manifest {d.digest} has no config")
            for blob in [config, *(doc.get("layers") or [])]:
                digest = str(blob.get("digest", ""))
                self.blob(ref, digest, "blob")
                self.link(self._repo(repo) / "_layers" / "sha256" / check_digest(digest), digest)
        self.blob(ref, d.digest, "manifest")
        self.link(
            self._repo(repo) / "_manifests" / "revisions" / "sha256" / check_digest(d.digest),
            d.digest,
        )

    def tag(self, repo: str, tag: str, digest: str) -> None:
        if not _TAG_RE.match(tag):
            raise UsageError(f"{repo}: {tag!r} is not a valid tag")
        tag_dir = self._repo(repo) / "_manifests" / "tags" / tag
        self.link(tag_dir / "index" / "sha256" / check_digest(digest), digest)
        self.link(tag_dir / "current", digest)

    # -- files -----------------------------------------------------------

    def _repo(self, repo: str) -> Path:
        return self.root / "repositories" / repo

    def _read_json(self, ref: str, digest: str, what: str) -> dict[str, Any]:
        try:
            return self.store.read_manifest(digest)
        except BlobNotFound:
            raise BlobNotFound(
                f"{ref}: {what} {digest} is not in the store at {self.store.root}"
            ) from None

    def blob(self, ref: str, digest: str, what: str) -> None:
        hexd = check_digest(digest)
        if digest in self._done_blobs:
            return
        target_dir = self.root / "blobs" / "sha256" / hexd[:2] / hexd
        target = target_dir / "data"
        source = self.store.blob_path(digest)
        try:
            size = source.stat().st_size
        except FileNotFoundError:
            raise BlobNotFound(
                f"{ref}: {what} {digest} is not in the store at {self.store.root}"
            ) from None
        try:
            present = target.stat().st_size == size
        except FileNotFoundError:
            present = False
        if present:
            self.report.blobs_present += 1
        else:
            target_dir.mkdir(parents=True, exist_ok=True)
            with replacing(target) as tmp:
                try:
                    os.link(source, tmp)
                    linked = True
                except OSError as exc:
                    if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
                        raise
                    linked = False
                    with open(source, "rb") as src, open(tmp, "wb") as out:
                        shutil.copyfileobj(src, out, 1 << 20)
                        out.flush()
                        os.fsync(out.fileno())
            fsync_dir(target_dir)
            if linked:
                self.report.blobs_linked += 1
            else:
                self.report.blobs_copied += 1
                self.report.bytes_copied += size
        self._done_blobs.add(digest)

    def link(self, directory: Path, digest: str) -> None:
        path = directory / "link"
        data = digest.encode()
        with contextlib.suppress(FileNotFoundError):
            if path.read_bytes() == data:
                return
        directory.mkdir(parents=True, exist_ok=True)
        atomic_write(path, data)
