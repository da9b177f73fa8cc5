"""OCI platforms (``os/arch[/variant]``) and picking a manifest out of an image index.

The one definition the builder (``--platform``, ``FROM`` of an index), the
registry client (``pull_image``) and the runtime (a host's ``uname -m``
against an image's architecture) share.
"""

from __future__ import annotations

import platform as _platform
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kbuild.errors import UsageError

# ``uname -m`` / distribution names and OCI names -> (OCI architecture, variant)
_ARCH_ALIASES: dict[str, tuple[str, str | None]] = {
    "x86_64": ("amd64", None),
    "x86-64": ("amd64", None),
    "amd64": ("amd64", None),
    "aarch64": ("arm64", None),
    "arm64": ("arm64", None),
    "armv7l": ("arm", "v7"),
    "armv7": ("arm", "v7"),
    "armhf": ("arm", "v7"),
    "armv6l": ("arm", "v6"),
    "armel": ("arm", "v6"),
    "arm": ("arm", None),
    "i386": ("386", None),
    "i686": ("386", None),
    "386": ("386", None),
    "ppc64le": ("ppc64le", None),
    "ppc64": ("ppc64", None),
    "s390x": ("s390x", None),
    "riscv64": ("riscv64", None),
    "mips64le": ("mips64le", None),
    "mips64": ("mips64", None),
    "mipsle": ("mipsle", None),
    "mips": ("mips", None),
    "loong64": ("loong64", None),
    "loongarch64": ("loong64", None),
}

_FORMAT_HINT = "use OS/ARCH[/VARIANT] (or ARCH alone for linux), e.g. linux/arm64"


def oci_arch(machine: str) -> str:
    """The OCI architecture name of ``uname -m`` output (``x86_64`` → ``amd64``)."""
    name = machine.strip().lower()
    return _ARCH_ALIASES.get(name, (name, None))[0]


@dataclass(frozen=True)
class Platform:
    """An OCI platform: ``os``, ``architecture``, optional ``variant``."""

    os: str
    architecture: str
    variant: str | None = None

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)

    @classmethod
    def host(cls) -> Platform:
        """The platform of this machine."""
        machine = _platform.machine().strip().lower()
        arch, variant = _ARCH_ALIASES.get(machine, (machine, None))
        return cls("linux", arch, variant)

    @classmethod
    def parse(cls, text: str | None) -> Platform:
        """Parse ``os/arch[/variant]``; ``arch`` alone means linux; None or "" → host.

        Machine names are turned into OCI ones (``linux/x86_64`` → ``linux/amd64``,
        ``armv7l`` → ``linux/arm/v7``). Anything else raises ``UsageError``
        naming the text.
        """
        if text is None or not text.strip():
            return cls.host()
        parts = text.strip().lower().split("/")
        if len(parts) == 1:
            if parts[0] not in _ARCH_ALIASES:
                raise UsageError(f"invalid platform {text!r}: {parts[0]!r} is not a known "
                                 "architecture", hint=_FORMAT_HINT)
            parts = ["linux", parts[0]]
        if len(parts) > 3 or not all(parts):
            raise UsageError(f"invalid platform {text!r}", hint=_FORMAT_HINT)
        arch, implied = _ARCH_ALIASES.get(parts[1], (parts[1], None))
        return cls(parts[0], arch, parts[2] if len(parts) == 3 else implied)

    def matches(self, entry: Mapping[str, Any] | None) -> bool:
        """True when an index entry's ``platform`` object fits this platform.

        OS and architecture must be equal; a wanted variant must be the
        entry's (an ``arm64`` entry without one counts as ``v8``); no wanted
        variant accepts any.
        """
        if not entry:
            return False
        if entry.get("os") != self.os or entry.get("architecture") != self.architecture:
            return False
        if self.variant is None:
            return True
        variant = entry.get("variant") or ("v8" if self.architecture == "arm64" else None)
        return variant == self.variant

    def to_dict(self) -> dict[str, str]:
        """The OCI ``platform`` object (for an index entry)."""
        out = {"os": self.os, "architecture": self.architecture}
        if self.variant:
            out["variant"] = self.variant
        return out


def pick_manifest(index: Mapping[str, Any], wanted: Platform) -> dict[str, Any] | None:
    """The first entry of ``index["manifests"]`` that ``wanted`` matches, else None."""
    for entry in index.get("manifests") or []:
        if isinstance(entry, dict) and wanted.matches(entry.get("platform")):
            return entry
    return None


def platform_text(spec: Mapping[str, Any]) -> str:
    """``os/arch[/variant]`` of an OCI platform object."""
    return "/".join(str(spec[k]) for k in ("os", "architecture", "variant") if spec.get(k))


def index_platforms(index: Mapping[str, Any]) -> list[str]:
    """The platforms an index offers, as sorted ``os/arch[/variant]`` texts (for messages)."""
    found: set[str] = set()
    for entry in index.get("manifests") or []:
        spec = entry.get("platform") if isinstance(entry, dict) else None
        if isinstance(spec, dict) and spec:
            found.add(platform_text(spec))
    return sorted(found)
