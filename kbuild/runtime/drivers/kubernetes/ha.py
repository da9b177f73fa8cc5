"""High availability without a load balancer: what each host resolves, where it
pulls images from, and the VIP every node reaches the masters through.

- **Nodes** (hosts that are not masters) run ``kbuild-vip`` (the VIP agent,
  ``images/kubernetes/vip-agent``): ``apiserver.cluster.local`` is the VIP
  (default ``10.103.97.2``, cluster env ``VIP``), DNAT'ed by nftables to the
  masters whose ``/readyz`` answers. The agent reads ``etc/kbuild/vip-backends``
  (one master address per line), which kbuild rewrites on every node when
  masters join or leave.
- **Masters** reach their own API server: ``apiserver.cluster.local`` is their
  own address once they run one (master0 after init, the others after their
  join); a master still joining uses the lead master.
- **Images**: every host serves the ``registry/`` of its own rootfs (the
  embedded registry, with a certificate of its own); the registry domain is
  127.0.0.1 everywhere, and containerd falls back to the masters' registries.
"""

from __future__ import annotations

import ipaddress

from kbuild.errors import ClusterfileError
from kbuild.runtime import titles
from kbuild.runtime.clusterfile import Cluster, Host
from kbuild.runtime.drivers.kubernetes import containerd as ctrd
from kbuild.runtime.drivers.kubernetes.kubeadm import API_SERVER_DOMAIN, DEFAULT_VIP
from kbuild.runtime.state import ClusterState

__all__ = ["VIP_BACKENDS", "aliases", "backends_file", "registry_fallbacks", "vip"]

VIP_BACKENDS = "etc/kbuild/vip-backends"
"""The agent's list of masters, in each node's rootfs."""


def vip(cluster: Cluster) -> str:
    """The VIP of the cluster (env ``VIP``; an IPv4 address that is no host's)."""
    text = cluster.env.get("VIP") or DEFAULT_VIP
    try:
        address = ipaddress.IPv4Address(text)
    except ValueError:
        raise ClusterfileError(f"Clusterfile: env VIP: {text!r} is not an IPv4 address") from None
    if any(h.ip == str(address) for h in cluster.all_hosts()):
        raise ClusterfileError(f"Clusterfile: env VIP: {text} is the address of a host")
    return str(address)


def backends_file(cluster: Cluster) -> bytes:
    """``vip-backends``: the masters' addresses."""
    lines = "".join(f"{m.ip}\n" for m in cluster.masters())
    return ("# Written by kbuild: the masters kbuild-vip may send the VIP to.\n" + lines).encode()


def _serves_api(state: ClusterState, host: Host, master0: Host) -> bool:
    """The master runs an API server already (master0 after init, others after join)."""
    rec = state.hosts.get(host.ip)
    if host.ip == master0.ip:
        return titles.INIT_CLUSTER in state.cluster_steps
    return rec is not None and rec.done(titles.JOIN_HOST)


def aliases(cluster: Cluster, state: ClusterState, host: Host, lead: Host) -> list[str]:
    """The ``/etc/hosts`` lines of one host: the registry domain on itself, the
    API server name on itself, the lead master or the VIP (module docstring)."""
    domain, _ = ctrd.embedded_registry(cluster)
    if not host.is_master:
        api = vip(cluster)
    elif _serves_api(state, host, cluster.master0()) or host.ip == lead.ip:
        api = host.ip
    else:
        api = lead.ip
    return [f"127.0.0.1 {domain}", f"{api} {API_SERVER_DOMAIN}"]


def registry_fallbacks(cluster: Cluster, host: Host) -> list[str]:
    """Registries containerd tries after the host's own: the other masters'."""
    _, port = ctrd.embedded_registry(cluster)
    out = []
    for m in cluster.masters():
        if m.ip != host.ip:
            address = f"[{m.ip}]" if ":" in m.ip else m.ip
            out.append(f"{address}:{port}")
    return out
