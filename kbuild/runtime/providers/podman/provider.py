"""The podman provider: ``kbuild run IMAGE`` with no hosts, or ``--provider podman``."""

from __future__ import annotations

import secrets

from kbuild.runtime import clusterfile as cfmod
from kbuild.runtime.provider import ProvidedHost
from kbuild.runtime.providers.podman.command import Progress
from kbuild.runtime.providers.podman.hosts import (
    create_hosts,
    delete_cluster,
    list_clusters,
)

__all__ = ["PodmanProvider"]


class PodmanProvider:
    """Hosts as local podman containers running systemd and sshd."""

    name: str = "podman"
    data_roots: tuple[str, ...] = (cfmod.DEFAULT_DATA_ROOT, "/tmp/kbuild/data")
    """The default dataRoot is on each host's own data volume (``/var/lib/kbuild``,
    it survives a restart); a host without that volume falls back to its tmpfs."""

    def create(
        self,
        cluster: str,
        *,
        masters: int,
        nodes: int,
        isolated: bool,
        progress: Progress | None = None,
    ) -> list[ProvidedHost]:
        """``master0…`` and ``node0…`` on the cluster's own network, one random
        root password for all of them."""
        names = [f"master{i}" for i in range(masters)] + [f"node{i}" for i in range(nodes)]
        roles = ["master"] * masters + ["node"] * nodes
        hosts = create_hosts(
            cluster,
            names,
            roles=roles,
            root_password=secrets.token_urlsafe(18),
            progress=progress,
            internal=isolated,
        )
        return [ProvidedHost(h.ip, h.role, h.credentials) for h in hosts]

    def delete(self, cluster: str, *, progress: Progress | None = None) -> list[str]:
        """Every container, volume and network of the cluster."""
        return delete_cluster(cluster, progress=progress)

    def list(self) -> dict[str, list[str]]:
        """Cluster name → its container names."""
        return list_clusters()
