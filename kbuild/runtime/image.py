"""What the runtime needs to know of a cluster image, read through the store.

The runtime reads images only through :class:`kbuild.layerstore.Store`
(``resolve``, ``read_manifest``, ``read_config``, ``open_blob``). Kubefile
metadata (apps, LAUNCH, CMDS, CMD) comes from the config label (else the
manifest annotation) ``io.kbuild.image.v1``, read with
:meth:`kbuild.layerstore.ImageMeta.read`: the same class the builder writes it
with, so both sides share one schema (``docs/build.md``). An index is narrowed
with :class:`kbuild.layerstore.Platform`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kbuild.errors import ClusterError, KbuildError, StoreError
from kbuild.layerstore import (
    CarriedImage,
    ImageMeta,
    MediaType,
    Platform,
    Store,
    default_cmds,
    index_platforms,
    pick_manifest,
)


@dataclass(frozen=True)
class Layer:
    """One layer of the image as the runtime sends it."""

    digest: str
    diff_id: str
    media_type: str
    size: int

    @property
    def hex(self) -> str:
        """The diffID without ``sha256:``: the layer's name on hosts."""
        return self.diff_id.split(":", 1)[1]

    @property
    def compression(self) -> str:
        """``zstd``, ``gzip`` or ``none``."""
        mt = self.media_type
        if mt.endswith("zstd"):
            return "zstd"
        if mt.endswith("gzip"):
            return "gzip"
        return "none"


@dataclass
class App:
    """An app of the image: its directory in the rootfs, its commands and env."""

    name: str
    path: str
    cmds: list[str]
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class ImageInfo:
    """A resolved single-platform cluster image."""

    ref: str
    manifest_digest: str
    os: str
    arch: str
    env: dict[str, str]
    labels: dict[str, str]
    layers: list[Layer]
    apps: dict[str, App]
    launch: list[str] | None
    cmds: list[str] | None
    cmd: list[str]
    images: list[CarriedImage] = field(default_factory=list)
    """The container images it carries in ``registry/`` (its metadata's list)."""

    def launch_commands(
        self, app_names: list[str], cmds: list[str]
    ) -> list[tuple[str, str, dict[str, str]]]:
        """The commands run on master0 at launch: ``(dir-in-rootfs, command, env)``.

        The Clusterfile's ``cmds`` win over its ``appNames``, which win over the
        image's CMDS, then its LAUNCH, then its CMD lines.
        """
        if cmds:
            return [(".", c, {}) for c in cmds]
        names = app_names or (None if self.cmds else self.launch)
        if names:
            out: list[tuple[str, str, dict[str, str]]] = []
            for name in names:
                app = self.apps.get(name)
                if app is None:
                    have = ", ".join(self.apps) or "none"
                    raise ClusterError(f"image {self.ref} has no app {name!r} (apps: {have})")
                out.extend((app.path, c, dict(app.env)) for c in app.cmds)
            return out
        if self.cmds:
            return [(".", c, {}) for c in self.cmds]
        return [(".", c, {}) for c in self.cmd]

    @property
    def total_size(self) -> int:
        """Bytes of all layer blobs."""
        return sum(layer.size for layer in self.layers)


def _platform_manifest(
    store: Store, ref: str, arch: str | None, os_name: str
) -> tuple[str, dict[str, Any]]:
    """``(digest, manifest)`` of ``ref``, an index narrowed to ``os_name/arch``."""
    desc = store.resolve(ref)
    manifest = store.read_manifest(desc)
    if desc.media_type not in MediaType.INDEXES and "manifests" not in manifest:
        return desc.digest, manifest
    choices = manifest.get("manifests") or []
    arches = sorted({str((m.get("platform") or {}).get("architecture")) for m in choices})
    if arch is None:
        raise ClusterError(
            f"image {ref} is multi-platform ({', '.join(arches)}); the host architecture decides"
        )
    entry = pick_manifest(manifest, Platform(os_name, arch))
    if entry is None:
        raise ClusterError(
            f"image {ref} has no {os_name}/{arch} variant (it has: {', '.join(arches)})"
        )
    return entry["digest"], store.read_manifest(entry["digest"])


def _layers(ref: str, manifest: dict[str, Any], config: dict[str, Any]) -> list[Layer]:
    diff_ids = (config.get("rootfs") or {}).get("diff_ids") or []
    blobs = manifest.get("layers") or []
    if len(diff_ids) != len(blobs):
        raise StoreError(
            f"image {ref}: manifest has {len(blobs)} layers but config {len(diff_ids)} diffIDs"
        )
    layers = [
        Layer(
            digest=b["digest"],
            diff_id=d,
            media_type=b.get("mediaType", MediaType.OCI_LAYER),
            size=int(b.get("size", 0)),
        )
        for b, d in zip(blobs, diff_ids, strict=True)
    ]
    for layer in layers:
        if not layer.diff_id.startswith("sha256:") or len(layer.diff_id) != 71:
            raise StoreError(f"image {ref}: unsupported diffID {layer.diff_id}")
    return layers


def inspect_image(
    store: Store, ref: str, *, arch: str | None = None, os_name: str = "linux"
) -> ImageInfo:
    """Resolve ``ref`` in the local store to the runtime's view of it.

    An image index is narrowed to the manifest of ``arch`` (required then);
    a single manifest is returned whatever its architecture (the preflight
    compares it with the hosts').
    """
    digest, manifest = _platform_manifest(store, ref, arch, os_name)
    config = store.read_config(manifest)
    inner = config.get("config") or {}
    labels = {str(k): str(v) for k, v in (inner.get("Labels") or {}).items()}
    env: dict[str, str] = {}
    for item in inner.get("Env") or []:
        key, _, value = str(item).partition("=")
        env[key] = value
    meta = ImageMeta.read(labels, manifest.get("annotations"), what=f"image {ref}")
    apps = {
        a.name: App(name=a.name, path=a.path, cmds=list(a.cmds) or default_cmds(a),
                    env=dict(a.env))
        for a in meta.apps.values()
    }  # fmt: skip
    return ImageInfo(
        ref=ref,
        manifest_digest=digest,
        os=str(config.get("os") or "linux"),
        arch=str(config.get("architecture") or ""),
        env=env,
        labels=labels,
        layers=_layers(ref, manifest, config),
        apps=apps,
        launch=meta.launch,
        cmds=meta.cmds,
        cmd=meta.cmd,
        images=list(meta.images),
    )


def image_platforms(store: Store, ref: str) -> list[str] | None:
    """The platforms (``os/arch[/variant]``) a multi-platform image offers;
    None for a single-platform image."""
    manifest = store.read_manifest(store.resolve(ref))
    if "manifests" not in manifest:
        return None
    return index_platforms(manifest)


def image_labels(store: Store, ref: str) -> dict[str, str]:
    """The config labels of an image (of its first platform for an index);
    empty when the image cannot be read (the preflight then says why)."""
    try:
        manifest = store.read_manifest(store.resolve(ref))
        if "manifests" in manifest:
            entries = manifest.get("manifests") or []
            if not entries:
                return {}
            manifest = store.read_manifest(entries[0]["digest"])
        inner = store.read_config(manifest).get("config") or {}
    except (KbuildError, KeyError, TypeError, AttributeError):
        return {}
    return {str(k): str(v) for k, v in (inner.get("Labels") or {}).items()}


def runs_image(store: Store, ref: str, manifest: str) -> bool:
    """True when ``ref`` is (or, an index, contains) the manifest ``manifest``:
    a cluster recorded with ``manifest`` runs the image ``ref`` names."""
    desc = store.resolve(ref)
    if desc.digest == manifest:
        return True
    if desc.media_type in MediaType.INDEXES:
        index = store.read_manifest(desc)
        return any(m.get("digest") == manifest for m in index.get("manifests") or [])
    return False
