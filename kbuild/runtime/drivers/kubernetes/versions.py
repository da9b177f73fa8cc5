"""Kubernetes versions and the upgrade skew policy.

One minor version at a time, never down: from v1.36.x a cluster goes to a
newer v1.36 patch or to v1.37.y; v1.38 from v1.36 is refused with the
version to go through first; an older version or the same one is refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from kbuild.errors import ClusterError

__all__ = ["Version", "check_upgrade"]

_VERSION = re.compile(r"^v(\d+)\.(\d+)\.(\d+)(?:[-+].*)?$")


@dataclass(frozen=True, order=True)
class Version:
    """``vMAJOR.MINOR.PATCH`` (a pre-release or build suffix is kept apart)."""

    major: int
    minor: int
    patch: int

    @classmethod
    def parse(cls, text: str) -> Version:
        """``v1.37.2`` → Version(1, 37, 2); anything else is a ClusterError."""
        m = _VERSION.match(text)
        if m is None:
            raise ClusterError(f"{text!r} is not a Kubernetes version vX.Y.Z")
        return cls(int(m.group(1)), int(m.group(2)), int(m.group(3)))

    def __str__(self) -> str:
        return f"v{self.major}.{self.minor}.{self.patch}"


def check_upgrade(running: str, target: str) -> None:
    """Raise unless a cluster at ``running`` may move to ``target`` in one step."""
    now, to = Version.parse(running), Version.parse(target)
    if to == now:
        raise ClusterError(
            f"the cluster runs Kubernetes {now} already",
            hint="an image of the same version with other apps goes on with `kbuild run`",
        )
    if to < now:
        raise ClusterError(
            f"Kubernetes {to} is older than the cluster's {now}: kbuild does not downgrade",
            hint="restore a backup taken before the upgrade (`kbuild restore`) to go back",
        )
    if to.major != now.major:
        raise ClusterError(f"from Kubernetes {now} to {to}: a major version is not an upgrade")
    if to.minor > now.minor + 1:
        steps = ", ".join(f"v{now.major}.{m}.x" for m in range(now.minor + 1, to.minor))
        raise ClusterError(
            f"from Kubernetes {now} to {to} skips a minor version; "
            "kubeadm upgrades one minor version at a time",
            hint=f"upgrade to {steps} first (one image each), then to {to}",
        )
