"""A cluster's podman network, its addresses and the hosts' data volumes."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Mapping

from kbuild.errors import ClusterError, HostError, UsageError
from kbuild.runtime.provider import ProviderEvent
from kbuild.runtime.providers.podman.command import NAME_RE, Progress, label_args, podman

__all__ = [
    "check_name",
    "container_ip",
    "create_volume",
    "ensure_network",
    "free_addresses",
    "network_name",
    "network_subnet",
    "volume_name",
]


def network_name(cluster: str) -> str:
    """The podman network of a cluster's hosts."""
    return f"kbuild-{cluster}"


def volume_name(container: str) -> str:
    """The podman volume of a host container, mounted at :data:`DATA_MOUNT`."""
    return f"{container}-data"


def create_volume(container: str, labels: Mapping[str, str]) -> str:
    """Create the host's data volume; a leftover of a host that is gone is
    removed first (its data belonged to a cluster that no longer exists)."""
    name = volume_name(container)
    if podman("volume", "exists", name, check=False).returncode == 0:
        if podman("container", "exists", container, check=False).returncode == 0:
            raise ClusterError(
                f"podman container {container} already exists",
                hint="delete the cluster first (kbuild delete --all)",
            )
        podman("volume", "rm", "-f", name, timeout=120, what=name)
    podman("volume", "create", *label_args(labels), name, timeout=60, what=name)
    return name


def check_name(cluster: str) -> None:
    if not NAME_RE.match(cluster):
        raise UsageError(
            f"cluster name {cluster!r} is not valid for podman hosts",
            hint="use lower-case letters, digits, '-', '_' and '.'",
        )


def ensure_network(
    cluster: str, labels: Mapping[str, str], *, internal: bool, progress: Progress | None
) -> str:
    name = network_name(cluster)
    if podman("network", "exists", name, check=False).returncode == 0:
        return name
    args = ["network", "create", *label_args(labels)]
    if internal:
        args.append("--internal")
    args.append(name)
    if progress:
        progress(ProviderEvent("network", name, "internal" if internal else ""))
    proc = podman(*args, check=False, what=name)
    if proc.returncode != 0 and podman("network", "exists", name, check=False).returncode != 0:
        raise ClusterError(
            f"cannot create podman network {name}: "
            + proc.stderr.decode(errors="replace").strip()
        )
    return name


def network_subnet(cluster: str) -> ipaddress.IPv4Network:
    """The IPv4 subnet podman chose for the cluster's network."""
    out = podman("network", "inspect", network_name(cluster)).stdout
    data = json.loads(out)[0]
    for sub in data.get("subnets") or []:
        net = ipaddress.ip_network(sub["subnet"])
        if isinstance(net, ipaddress.IPv4Network):
            return net
    raise ClusterError(f"podman network {network_name(cluster)} has no IPv4 subnet")


def free_addresses(network: str, count: int) -> list[str]:
    """``count`` addresses of the network no container holds, gateway skipped.

    Hosts get fixed addresses (``--ip``): podman's IPAM may hand a restarted
    container another one, and a Clusterfile names hosts by address.
    """
    cluster = network[len("kbuild-"):]
    subnet = network_subnet(cluster)
    used: set[str] = set()
    names = podman(
        "ps", "-a", "--filter", f"network={network}", "--format", "{{.Names}}"
    ).stdout.decode().split()
    if names:
        out = podman("inspect", "--format", "{{json .NetworkSettings.Networks}}", *names)
        for line in out.stdout.decode().splitlines():
            nets = json.loads(line) or {}
            ip = (nets.get(network) or {}).get("IPAddress")
            if ip:
                used.add(str(ip))
    free: list[str] = []
    for addr in list(subnet.hosts())[1:]:  # the first one is the gateway
        if str(addr) not in used:
            free.append(str(addr))
            if len(free) == count:
                return free
    raise ClusterError(f"podman network {network} has no {count} free addresses")


def container_ip(container: str, network: str) -> str:
    out = podman("inspect", "--format", "{{json .NetworkSettings.Networks}}", container).stdout
    nets = json.loads(out) or {}
    ip = (nets.get(network) or {}).get("IPAddress") or ""
    if not ip:
        raise HostError(container, f"container has no address on network {network}")
    return str(ip)
