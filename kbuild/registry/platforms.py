"""Platforms (``os/arch[/variant]``) and picking one manifest out of an index."""

from __future__ import annotations

import platform as _platform
from dataclasses import dataclass
from typing import Any

from kbuild.errors import RegistryError, UsageError

_MACHINE_ARCH = {
    "x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64",
    "armv7l": "arm", "armv6l": "arm", "i386": "386", "i686": "386",
    "ppc64le": "ppc64le", "s390x": "s390x", "riscv64": "riscv64",
}


@dataclass(frozen=True)
class Platform:
    """An OCI platform: ``os``, ``architecture``, optional ``variant``."""

    os: str
    architecture: str
    variant: str | None = None

    @classmethod
    def parse(cls, text: str) -> Platform:
        """Parse ``linux/amd64`` or ``linux/arm64/v8``."""
        parts = text.strip().split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise UsageError(f"invalid platform {text!r}", hint="use OS/ARCH[/VARIANT], "
                                                                "e.g. linux/arm64")
        return cls(parts[0].lower(), parts[1].lower(), parts[2].lower() if len(parts) == 3
                   else None)

    @classmethod
    def host(cls) -> Platform:
        """The platform of this machine."""
        machine = _platform.machine().lower()
        arch = _MACHINE_ARCH.get(machine, machine)
        variant = "v7" if machine == "armv7l" else "v6" if machine == "armv6l" else None
        return cls("linux", arch, variant)

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)

    def matches(self, entry: dict[str, Any]) -> bool:
        """True when an index entry's ``platform`` fits this one."""
        if entry.get("os") != self.os or entry.get("architecture") != self.architecture:
            return False
        if self.variant is None:
            return True
        variant = entry.get("variant") or ("v8" if self.architecture == "arm64" else None)
        return variant == self.variant


def select_manifest(index: dict[str, Any], wanted: Platform, what: str) -> dict[str, Any]:
    """The entry of ``index["manifests"]`` for ``wanted``; raises naming what exists."""
    entries = [m for m in index.get("manifests", []) if isinstance(m, dict)]
    for entry in entries:
        if wanted.matches(entry.get("platform") or {}):
            return entry
    have = sorted({
        "/".join(str(p.get(k)) for k in ("os", "architecture", "variant") if p.get(k))
        for p in (e.get("platform") or {} for e in entries) if p
    })
    raise RegistryError(f"{what}: no image for platform {wanted}",
                        hint=f"available: {', '.join(have) or 'none'}; choose with --platform")
