"""Local hosts as podman containers (``--provider podman`` and the test hosts).

A host is a privileged podman container made from a Debian root filesystem
that boots systemd and sshd (:mod:`.image`), on a podman network of its own
(:mod:`.network`), with a data volume at ``/var/lib/kbuild`` (:mod:`.hosts`).
:class:`PodmanProvider` is what the life cycle uses; the functions are also
what the test fixtures use.
"""

from kbuild.runtime.providers.podman.hosts import (
    CLUSTER_LABEL,
    DATA_MOUNT,
    ROLE_LABEL,
    PodmanHost,
    add_sudo_user,
    create_hosts,
    delete_all,
    delete_by_label,
    delete_cluster,
    freeze_host,
    list_clusters,
    restart_host,
    start_host,
    stop_host,
    thaw_host,
    wait_for_ssh,
)
from kbuild.runtime.providers.podman.image import (
    BASE_PACKAGES,
    HostImage,
    apt_mirror,
    ensure_host_image,
    host_cache_dir,
)
from kbuild.runtime.providers.podman.network import network_name, network_subnet, volume_name
from kbuild.runtime.providers.podman.provider import PodmanProvider

__all__ = [
    "BASE_PACKAGES",
    "CLUSTER_LABEL",
    "DATA_MOUNT",
    "ROLE_LABEL",
    "HostImage",
    "PodmanHost",
    "PodmanProvider",
    "add_sudo_user",
    "apt_mirror",
    "create_hosts",
    "delete_all",
    "delete_by_label",
    "delete_cluster",
    "ensure_host_image",
    "freeze_host",
    "host_cache_dir",
    "list_clusters",
    "network_name",
    "network_subnet",
    "restart_host",
    "start_host",
    "stop_host",
    "thaw_host",
    "volume_name",
    "wait_for_ssh",
]
