"""The container images a cluster image carries in ``registry/``, as its metadata lists them.

The builder collects them (``kbuild.builder.collect``) and writes one
:class:`CarriedImage` per image into the ``images`` list of the image
metadata (``io.kbuild.image.v1``); the runtime and ``kbuild inspect`` read
them back. JSON form of one entry::

    {"name": "docker.io/library/nginx:1.27",      # normalized reference as found
     "repository": "library/nginx",               # path served by the embedded registry
     "tag": "1.27",                               # null for a digest-only reference
     "digest": "sha256:…",                        # what the tag points at (index or manifest)
     "mediaType": "application/vnd.oci.image.index.v1+json",
     "platforms": ["linux/amd64"],                # manifests carried (of an index: only these)
     "size": 12345678,                            # bytes of every blob carried for it
     "sources": [{"file": "application/apps/web/web.yaml", "line": 17,
                  "app": "web", "detail": "Deployment/web container nginx"}]}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kbuild.errors import KbuildError

from ._reference import Reference


@dataclass(frozen=True)
class ImageSource:
    """Where a carried image was asked for: a file (and line) of the image, an app, a list."""

    file: str
    line: int = 0
    app: str | None = None
    detail: str = ""

    def __str__(self) -> str:
        text = f"{self.file}:{self.line}" if self.line else self.file
        extra = [x for x in (f"app {self.app}" if self.app else "", self.detail) if x]
        return f"{text} ({', '.join(extra)})" if extra else text

    def to_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return {"file": self.file, "line": self.line, "app": self.app, "detail": self.detail}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ImageSource:
        """Read the JSON form."""
        app = data.get("app")
        return cls(str(data["file"]), int(data.get("line") or 0),
                   str(app) if app else None, str(data.get("detail") or ""))


@dataclass
class CarriedImage:
    """One container image in the cluster image's ``registry/``."""

    name: str
    repository: str
    tag: str | None
    digest: str
    media_type: str
    platforms: list[str] = field(default_factory=list)
    size: int = 0
    sources: list[ImageSource] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (module docstring)."""
        return {
            "name": self.name,
            "repository": self.repository,
            "tag": self.tag,
            "digest": self.digest,
            "mediaType": self.media_type,
            "platforms": list(self.platforms),
            "size": self.size,
            "sources": [s.to_dict() for s in self.sources],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any] | str) -> CarriedImage:
        """Read the JSON form (a bare reference string, as very early images wrote, too)."""
        if isinstance(data, str):
            ref = Reference.parse(data)
            return cls(str(ref), ref.repository, ref.tag, ref.digest or "", "")
        tag = data.get("tag")
        return cls(
            name=str(data["name"]),
            repository=str(data["repository"]),
            tag=str(tag) if tag else None,
            digest=str(data["digest"]),
            media_type=str(data.get("mediaType") or ""),
            platforms=[str(p) for p in data.get("platforms") or []],
            size=int(data.get("size") or 0),
            sources=[ImageSource.from_dict(s) for s in data.get("sources") or []],
        )

    def serves(self, image: str) -> bool:
        """True when a pod asking for ``image`` gets this image from the embedded registry.

        The embedded registry is the mirror of every registry, so only the
        repository path counts, with the tag or the digest.
        """
        try:
            ref = Reference.parse(image)
        except KbuildError:
            return False
        if ref.repository != self.repository:
            return False
        if ref.digest:
            return ref.digest == self.digest
        return ref.tag == self.tag


def find_carried(images: list[CarriedImage], image: str) -> CarriedImage | None:
    """The carried image a pod's ``image`` string is served from, or None."""
    return next((c for c in images if c.serves(image)), None)
