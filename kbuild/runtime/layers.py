"""Local reading of an image's layers before they go to hosts.

Every layer is validated with :func:`kbuild.layerstore.check_layer` (an image
is untrusted input: no entry may land outside the rootfs) and scanned once for
what the runtime needs: its uncompressed size (disk-space preflight), its
``*.tmpl`` files (rendered per host), its whiteouts (so a template deleted
by a later layer is not rendered), and whether it holds nothing but
``registry/`` (a layer of carried container images, kept mounted when the
cluster moves to another image). The result is cached in a store record
keyed by the layer digest, so a re-run reads no layer again.
"""

from __future__ import annotations

import contextlib
import posixpath
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import BinaryIO

from kbuild.errors import DigestMismatch, UnsafeLayerError
from kbuild.layerstore import (
    WHITEOUT_OPAQUE,
    WHITEOUT_PREFIX,
    MediaType,
    Store,
    check_layer,
    open_layer_stream,
)
from kbuild.runtime.image import ImageInfo, Layer

RECORD_KIND = "runtime-layer-scan"
RECORD_VERSION = 3
MAX_TEMPLATE = 1 << 20
TEMPLATE_SUFFIX = ".tmpl"
REGISTRY_DIR = "registry"


class _Counter:
    """A reader counting the bytes read through it."""

    def __init__(self, raw: BinaryIO) -> None:
        self.raw = raw
        self.count = 0

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        self.count += len(data)
        return data

    def readable(self) -> bool:
        return True


@contextmanager
def open_tar(store: Store, layer: Layer) -> Iterator[BinaryIO]:
    """The layer's uncompressed tar stream."""
    with store.open_blob(layer.digest) as blob, open_layer_stream(blob, layer.media_type) as tar:
        yield tar


@dataclass
class LayerScan:
    """What the runtime knows of one layer's content."""

    size: int
    templates: dict[str, str] = field(default_factory=dict)
    plugins: dict[str, str] = field(default_factory=dict)
    deleted: list[str] = field(default_factory=list)
    opaque: list[str] = field(default_factory=list)
    registry_only: bool = False
    """Every entry is ``registry/`` or under it (carried container images)."""

    def to_json(self) -> dict[str, object]:
        """The record form."""
        return {
            "blobs": [],
            "size": self.size,
            "templates": self.templates,
            "plugins": self.plugins,
            "v": RECORD_VERSION,
            "deleted": self.deleted,
            "opaque": self.opaque,
            "registryOnly": self.registry_only,
        }


def _norm(name: str) -> str:
    """A member name as a rootfs path: ``./.env.tmpl`` -> ``.env.tmpl``, ``./`` -> ``""``."""
    return posixpath.normpath("/" + name).lstrip("/")


def _scan(store: Store, layer: Layer) -> LayerScan:
    with open_tar(store, layer) as stream:
        counter = _Counter(stream)
        scan = LayerScan(size=0)
        registry_only, entries = True, 0
        with tarfile.open(fileobj=counter, mode="r|") as tar:  # type: ignore[call-overload]
            for member in tar:
                path = _norm(member.name)
                if path:
                    entries += 1
                    registry_only = registry_only and path.split("/", 1)[0] == REGISTRY_DIR
                base = posixpath.basename(path)
                parent = posixpath.dirname(path)
                if base == WHITEOUT_OPAQUE:
                    scan.opaque.append(parent)
                elif base.startswith(WHITEOUT_PREFIX):
                    scan.deleted.append(posixpath.join(parent, base[len(WHITEOUT_PREFIX):]))
                elif member.isfile() and member.size <= MAX_TEMPLATE:
                    if path.endswith(TEMPLATE_SUFFIX):
                        into = scan.templates
                    elif parent == "plugins" and path.endswith((".yaml", ".yml")):
                        into = scan.plugins
                    else:
                        continue
                    fh = tar.extractfile(member)
                    if fh is not None:
                        with contextlib.suppress(UnicodeDecodeError):
                            into[path] = fh.read().decode("utf-8")
            while counter.read(1 << 20):
                pass
        scan.size = counter.count
    scan.registry_only = registry_only and entries > 0
    return scan


def scan_layer(store: Store, layer: Layer) -> LayerScan:
    """Validate and scan a layer, once per layer digest (cached in the store)."""
    cached = store.get_record(RECORD_KIND, layer.digest)
    if (
        cached is not None
        and cached.get("diffID") == layer.diff_id
        and cached.get("v") == RECORD_VERSION
    ):
        return LayerScan(
            size=int(cached["size"]),
            templates={str(k): str(v) for k, v in cached.get("templates", {}).items()},
            plugins={str(k): str(v) for k, v in cached.get("plugins", {}).items()},
            deleted=[str(x) for x in cached.get("deleted", [])],
            opaque=[str(x) for x in cached.get("opaque", [])],
            registry_only=bool(cached.get("registryOnly")),
        )
    with open_tar(store, layer) as stream:
        try:
            diff_id = check_layer(stream, MediaType.OCI_LAYER)
        except UnsafeLayerError as exc:
            raise UnsafeLayerError(f"layer {layer.digest}: {exc}") from None
    if diff_id != layer.diff_id:
        raise DigestMismatch(layer.diff_id, diff_id, what=f"layer {layer.digest} diffID")
    scan = _scan(store, layer)
    record = scan.to_json()
    record["diffID"] = layer.diff_id
    store.put_record(RECORD_KIND, layer.digest, record)
    return scan


def final_templates(scans: list[LayerScan]) -> dict[str, str]:
    """The ``*.tmpl`` files of the merged rootfs (later layers win, whiteouts delete)."""
    return _final(scans, "templates")


def final_plugins(scans: list[LayerScan]) -> dict[str, str]:
    """The ``plugins/*.yaml`` files of the merged rootfs."""
    return _final(scans, "plugins")


def _final(scans: list[LayerScan], attr: str) -> dict[str, str]:
    result: dict[str, str] = {}
    for scan in scans:
        for d in scan.opaque:
            prefix = d + "/" if d else ""
            for p in [p for p in result if p.startswith(prefix)]:
                del result[p]
        for d in scan.deleted:
            for p in [p for p in result if p == d or p.startswith(d + "/")]:
                del result[p]
        result.update(getattr(scan, attr))
    return result


def scan_image(store: Store, image: ImageInfo) -> list[LayerScan]:
    """Scans of all the image's layers, in order."""
    return [scan_layer(store, layer) for layer in image.layers]
