"""The local record of clusters: ``~/.kbuild/<cluster>/``.

Each cluster has a directory (mode 0700) holding the Clusterfile of the hosts
that were brought up (mode 0600, it may hold passwords) and ``state.json``:
which image (manifest digest) the cluster runs and, per host and for the
cluster, which steps finished. A run that fails part-way leaves the steps done
so far recorded, so the next run continues where it stopped; a finished run
re-run finds every step recorded and changes nothing.

``KBUILD_STATE_DIR`` replaces ``~/.kbuild`` (tests use it).
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kbuild.errors import ClusterError
from kbuild.fsutil import write_private
from kbuild.runtime import clusterfile as cfmod


def state_root() -> Path:
    """``$KBUILD_STATE_DIR``, else ``~/.kbuild``."""
    env = os.environ.get("KBUILD_STATE_DIR")
    return Path(env) if env else Path.home() / ".kbuild"


@dataclass
class HostRecord:
    """What is done on one host."""

    roles: list[str]
    steps: list[str] = field(default_factory=list)
    image: str = ""
    """The manifest digest of the image the host's rootfs is mounted with."""
    upper: str = ""
    """The generation tag of its upper dir ("" for the cluster's first image)."""
    version: str = ""
    """What the driver says the host runs (Kubernetes: its kubelet's version)."""

    def done(self, step: str) -> bool:
        """True when ``step`` finished on this host."""
        return step in self.steps


@dataclass
class ClusterState:
    """The recorded state of one cluster."""

    name: str
    image: str = ""
    manifest: str = ""
    data_root: str = cfmod.DEFAULT_DATA_ROOT
    hosts: dict[str, HostRecord] = field(default_factory=dict)
    cluster_steps: list[str] = field(default_factory=list)
    status: str = "new"
    provider: str = ""
    driver: str = ""
    version: str = ""
    """What the driver says the image is (Kubernetes: its version)."""
    images: list[str] = field(default_factory=list)
    """Every image manifest the cluster ran, oldest first."""

    def to_json(self) -> dict[str, Any]:
        """Plain JSON form."""
        return {
            "name": self.name,
            "image": self.image,
            "manifest": self.manifest,
            "dataRoot": self.data_root,
            "status": self.status,
            "provider": self.provider,
            "driver": self.driver,
            "version": self.version,
            "images": list(self.images),
            "clusterSteps": list(self.cluster_steps),
            "hosts": {
                ip: {"roles": r.roles, "steps": r.steps, "image": r.image, "upper": r.upper,
                     "version": r.version}
                for ip, r in self.hosts.items()
            },
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ClusterState:
        """Parse :meth:`to_json` output."""
        return cls(
            name=data["name"],
            image=data.get("image", ""),
            manifest=data.get("manifest", ""),
            data_root=data.get("dataRoot", cfmod.DEFAULT_DATA_ROOT),
            status=data.get("status", "new"),
            provider=data.get("provider", ""),
            driver=data.get("driver", ""),
            version=data.get("version", ""),
            images=list(data.get("images", [])),
            cluster_steps=list(data.get("clusterSteps", [])),
            hosts={
                ip: HostRecord(
                    roles=list(h.get("roles", [])),
                    steps=list(h.get("steps", [])),
                    image=str(h.get("image", "")),
                    upper=str(h.get("upper", "")),
                    version=str(h.get("version", "")),
                )
                for ip, h in data.get("hosts", {}).items()
            },
        )


class StateDir:
    """The directory of one cluster's local record."""

    def __init__(self, name: str, root: Path | None = None) -> None:
        self.name = name
        self.path = (root or state_root()) / name

    @property
    def clusterfile_path(self) -> Path:
        """The recorded Clusterfile."""
        return self.path / "Clusterfile"

    @property
    def state_path(self) -> Path:
        """The recorded steps."""
        return self.path / "state.json"

    def exists(self) -> bool:
        """True when a Clusterfile is recorded for this cluster."""
        return self.clusterfile_path.exists()

    def ensure(self) -> None:
        """Create the directory with mode 0700."""
        self.path.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.path, 0o700)

    def load_clusterfile(self) -> cfmod.Clusterfile:
        """The recorded Clusterfile (ClusterError when there is none)."""
        if not self.exists():
            raise ClusterError(
                f"no cluster named {self.name!r} is recorded in {self.path.parent}",
                hint="pass -f Clusterfile, or run the cluster first",
            )
        return cfmod.load(self.clusterfile_path)

    def save_clusterfile(self, cf: cfmod.Clusterfile) -> None:
        """Record the Clusterfile (mode 0600)."""
        self.ensure()
        write_private(self.clusterfile_path, cfmod.dumps(cf).encode())

    def load_state(self) -> ClusterState:
        """The recorded steps (an empty state when none are recorded)."""
        try:
            data = json.loads(self.state_path.read_text())
        except FileNotFoundError:
            return ClusterState(name=self.name)
        except (OSError, ValueError) as exc:
            raise ClusterError(f"{self.state_path}: unreadable cluster state: {exc}") from None
        return ClusterState.from_json(data)

    def save_state(self, state: ClusterState) -> None:
        """Record the steps (atomic, 0600)."""
        self.ensure()
        write_private(self.state_path, json.dumps(state.to_json(), indent=2).encode())

    def remove(self) -> None:
        """Forget the cluster (after ``delete --all``)."""
        for p in (self.clusterfile_path, self.state_path):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
        with contextlib.suppress(OSError):
            self.path.rmdir()


def list_clusters(root: Path | None = None) -> list[str]:
    """Names of the clusters recorded locally."""
    base = root or state_root()
    if not base.is_dir():
        return []
    return sorted(p.name for p in base.iterdir() if (p / "Clusterfile").is_file())
