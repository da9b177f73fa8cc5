"""Media types, descriptors and layer information of the OCI formats."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


class MediaType:
    """Media type strings of the OCI image spec and Docker schema 2."""

    OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
    OCI_INDEX = "application/vnd.oci.image.index.v1+json"
    OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
    OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
    OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
    OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
    DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
    DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
    DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
    DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"

    MANIFESTS = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
    INDEXES = frozenset({OCI_INDEX, DOCKER_LIST})


WHITEOUT_PREFIX = ".wh."
"""A layer entry ``dir/.wh.NAME`` deletes ``dir/NAME`` of the layers below (OCI whiteout)."""
WHITEOUT_OPAQUE = ".wh..wh..opq"
"""A layer entry ``dir/.wh..wh..opq`` hides everything the layers below hold in ``dir``."""

REF_NAME_ANNOTATION = "org.opencontainers.image.ref.name"
CONTAINERD_NAME_ANNOTATION = "io.containerd.image.name"


def layer_compression(media_type: str) -> str:
    """``"zstd"``, ``"gzip"`` or ``"none"`` for a layer media type (by suffix)."""
    if media_type.endswith("+zstd") or media_type.endswith(".zstd"):
        return "zstd"
    if media_type.endswith("+gzip") or media_type.endswith(".gzip"):
        return "gzip"
    if media_type.endswith(".tar") or media_type.endswith(".diff.tar"):
        return "none"
    return "unknown"


@dataclass(frozen=True)
class Descriptor:
    """An OCI content descriptor: what a manifest or index points at."""

    media_type: str
    digest: str
    size: int
    annotations: dict[str, str] | None = field(default=None, compare=False)
    platform: dict[str, Any] | None = field(default=None, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (``mediaType``, ``digest``, ``size``, …)."""
        out: dict[str, Any] = {
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": self.size,
        }
        if self.annotations:
            out["annotations"] = dict(sorted(self.annotations.items()))
        if self.platform:
            out["platform"] = dict(self.platform)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Descriptor:
        """Read the JSON form; unknown fields are ignored."""
        return cls(
            media_type=str(data.get("mediaType", "")),
            digest=str(data["digest"]),
            size=int(data.get("size", 0)),
            annotations=dict(data["annotations"]) if data.get("annotations") else None,
            platform=dict(data["platform"]) if data.get("platform") else None,
        )

    def with_annotations(self, annotations: dict[str, str] | None) -> Descriptor:
        """A copy with other annotations."""
        return Descriptor(self.media_type, self.digest, self.size, annotations, self.platform)


@dataclass(frozen=True)
class LayerInfo:
    """A layer blob in the store: its digest, its diffID and sizes."""

    digest: str
    diff_id: str
    size: int
    uncompressed_size: int
    media_type: str

    def descriptor(self) -> Descriptor:
        """The descriptor a manifest lists for this layer."""
        return Descriptor(self.media_type, self.digest, self.size)
