"""Image references with Docker's grammar and normalization.

``nginx`` is ``docker.io/library/nginx:latest``; ``localhost:5000/app@sha256:…``
keeps its registry and digest. Bad references raise :class:`UsageError`
naming the reference and what is wrong with it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from kbuild.errors import UsageError

DEFAULT_REGISTRY = "docker.io"
DOCKER_API_HOST = "registry-1.docker.io"
DEFAULT_TAG = "latest"
_LEGACY_REGISTRIES = {"index.docker.io", "registry-1.docker.io"}
NAME_MAX = 255

_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN_RE = re.compile(
    rf"^(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?$"
)
_PATH_COMPONENT_RE = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_TAG_RE = re.compile(r"^[\w][\w.-]{0,127}$")
_DIGEST_RE = re.compile(r"^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]{32,}$")
_HEX64_RE = re.compile(r"^[a-f0-9]{64}$")


def _bad(text: str, why: str) -> UsageError:
    return UsageError(
        f"invalid image reference {text!r}: {why}",
        hint="use NAME[:TAG] or NAME@sha256:DIGEST, e.g. registry.example.com:5000/team/app:v1",
    )


def validate_digest(text: str, digest: str) -> None:
    """Check a digest string (``sha256:`` plus 64 lowercase hex digits)."""
    if not _DIGEST_RE.match(digest):
        raise _bad(text, f"{digest!r} is not a digest")
    algo, _, hexpart = digest.partition(":")
    if algo == "sha256" and not _HEX64_RE.match(hexpart):
        raise _bad(text, "a sha256 digest has 64 lowercase hex digits")
    if algo not in ("sha256", "sha512"):
        raise _bad(text, f"unsupported digest algorithm {algo!r}")


@dataclass(frozen=True)
class Reference:
    """A normalized image reference: registry, repository, tag and/or digest."""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @classmethod
    def parse(cls, text: str) -> Reference:
        """Parse and normalize ``text`` as Docker does (default tag ``latest``)."""
        if not isinstance(text, str) or not text:
            raise _bad(str(text), "empty reference")
        if text != text.strip() or any(c.isspace() for c in text):
            raise _bad(text, "contains whitespace")
        if _HEX64_RE.match(text):
            raise _bad(text, "a 64-hex-digit string is an image ID, not a name")
        rest = text
        digest: str | None = None
        if "@" in rest:
            rest, _, digest = rest.partition("@")
            validate_digest(text, digest)
        tag: str | None = None
        slash = rest.rfind("/")
        colon = rest.rfind(":")
        if colon > slash:
            rest, tag = rest[:colon], rest[colon + 1 :]
            if not _TAG_RE.match(tag):
                raise _bad(text, f"tag {tag!r} must match [A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}}")
        if not rest:
            raise _bad(text, "empty name")
        first, sep, remainder = rest.partition("/")
        if sep and ("." in first or ":" in first or first == "localhost" or first != first.lower()):
            registry, path = first, remainder
            if not _DOMAIN_RE.match(registry):
                raise _bad(text, f"{registry!r} is not a valid registry host[:port]")
        else:
            registry, path = DEFAULT_REGISTRY, rest
        if registry in _LEGACY_REGISTRIES:
            registry = DEFAULT_REGISTRY
        if registry == DEFAULT_REGISTRY and "/" not in path:
            path = "library/" + path
        for component in path.split("/"):
            if component != component.lower() and _PATH_COMPONENT_RE.match(component.lower()):
                raise _bad(text, "repository name must be lowercase")
            if not _PATH_COMPONENT_RE.match(component):
                raise _bad(
                    text,
                    f"path component {component!r} must be lowercase letters, digits and "
                    "single separators (. _ __ -)",
                )
        if len(registry) + 1 + len(path) > NAME_MAX:
            raise _bad(text, f"name longer than {NAME_MAX} characters")
        if tag is None and digest is None:
            tag = DEFAULT_TAG
        return cls(registry=registry, repository=path, tag=tag, digest=digest)

    @property
    def name(self) -> str:
        """``registry/repository`` without tag or digest."""
        return f"{self.registry}/{self.repository}"

    @property
    def familiar_name(self) -> str:
        """The repository as Docker shows it (``nginx``, ``localhost:5000/app``)."""
        if self.registry == DEFAULT_REGISTRY:
            repo = self.repository
            return repo[len("library/") :] if repo.startswith("library/") else repo
        return self.name

    @property
    def familiar(self) -> str:
        """The short form (``nginx:latest``)."""
        return self.familiar_name + self._suffix()

    @property
    def api_host(self) -> str:
        """Host to talk the distribution API with (``registry-1.docker.io`` for docker.io)."""
        return DOCKER_API_HOST if self.registry == DEFAULT_REGISTRY else self.registry

    def with_tag(self, tag: str) -> Reference:
        """This repository with ``tag`` (and no digest)."""
        if not _TAG_RE.match(tag):
            raise _bad(f"{self.name}:{tag}", f"tag {tag!r} is not valid")
        return replace(self, tag=tag, digest=None)

    def with_digest(self, digest: str) -> Reference:
        """This repository pinned to ``digest`` (the tag is kept)."""
        validate_digest(f"{self.name}@{digest}", digest)
        return replace(self, digest=digest)

    def _suffix(self) -> str:
        out = ""
        if self.tag:
            out += ":" + self.tag
        if self.digest:
            out += "@" + self.digest
        return out

    def __str__(self) -> str:
        return self.name + self._suffix()
