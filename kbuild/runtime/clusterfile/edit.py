"""Clusterfiles made from command-line flags, and edited copies (join, delete)."""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace
from typing import Any

from kbuild.runtime.clusterfile.dump import dumps
from kbuild.runtime.clusterfile.model import (
    API_VERSION,
    DEFAULT_CLUSTER_NAME,
    SSH,
    Clusterfile,
    HostGroup,
)
from kbuild.runtime.clusterfile.parse import expand_ips, loads, parse_cluster
from kbuild.runtime.clusterfile.schema import Doc


def split_ip_list(text: str, *, what: str) -> list[str]:
    """Expand a ``--masters``/``--nodes`` value: comma list of IPs and ``a-b`` ranges."""
    doc = Doc("flags", 0, "Cluster")
    out: list[str] = []
    for part in [p.strip() for p in text.split(",") if p.strip()]:
        out.extend(expand_ips(doc, f"--{what}", part))
    return out


def from_flags(
    image: str,
    *,
    masters: Sequence[str],
    nodes: Sequence[str] = (),
    user: str | None = None,
    passwd: str | None = None,
    port: int | None = None,
    pk: str | None = None,
    pk_passwd: str | None = None,
    env: Sequence[str] = (),
    cmds: Sequence[str] = (),
    apps: Sequence[str] = (),
    cluster_name: str | None = None,
    data_root: str | None = None,
) -> Clusterfile:
    """The Clusterfile that ``kbuild run IMAGE --masters … --nodes …`` stands for.

    Built as documents and parsed by :func:`loads`'s rules, so the flags are
    validated exactly like a file.
    """
    ssh: dict[str, Any] = {}
    if user:
        ssh["user"] = user
    if passwd is not None:
        ssh["passwd"] = passwd
    if port is not None:
        ssh["port"] = str(port)
    if pk:
        ssh["pk"] = pk
    if pk_passwd is not None:
        ssh["pkPasswd"] = pk_passwd
    hosts: list[dict[str, Any]] = []
    if masters:
        hosts.append({"ips": list(masters), "roles": ["master"]})
    if nodes:
        hosts.append({"ips": list(nodes), "roles": ["node"]})
    spec: dict[str, Any] = {"image": image, "hosts": hosts}
    if ssh:
        spec["ssh"] = ssh
    if env:
        spec["env"] = list(env)
    if cmds:
        spec["cmds"] = list(cmds)
    if apps:
        spec["appNames"] = list(apps)
    if data_root:
        spec["dataRoot"] = data_root
    raw = {
        "apiVersion": API_VERSION,
        "kind": "Cluster",
        "metadata": {"name": cluster_name or DEFAULT_CLUSTER_NAME},
        "spec": spec,
    }
    cluster = parse_cluster(Doc("flags", 0, "Cluster"), raw)
    return Clusterfile(cluster=cluster)


def with_hosts(cf: Clusterfile, groups: list[HostGroup]) -> Clusterfile:
    """A copy with ``spec.hosts`` replaced (validated again)."""
    new = copy.deepcopy(cf)
    new.cluster = replace(new.cluster, hosts=copy.deepcopy(groups))
    return loads(dumps(new), source="Clusterfile")


def with_image(cf: Clusterfile, image: str) -> Clusterfile:
    """A copy naming another image (validated again)."""
    new = copy.deepcopy(cf)
    new.cluster = replace(new.cluster, image=image)
    return loads(dumps(new), source="Clusterfile")


def add_hosts(
    cf: Clusterfile, ips: Sequence[str], role: str, ssh: SSH | None = None
) -> Clusterfile:
    """A copy with new hosts of one role appended as a new group."""
    groups = copy.deepcopy(cf.cluster.hosts)
    groups.append(HostGroup(ips=list(ips), roles=[role], ssh=ssh or SSH()))
    return with_hosts(cf, groups)


def remove_hosts(cf: Clusterfile, ips: Iterable[str]) -> Clusterfile:
    """A copy without these hosts (empty groups dropped)."""
    gone = set(ips)
    groups = []
    for g in copy.deepcopy(cf.cluster.hosts):
        g.ips = [ip for ip in g.ips if ip not in gone]
        if g.ips:
            groups.append(g)
    return with_hosts(cf, groups)


def iter_host_ips(cf: Clusterfile) -> Iterator[str]:
    """Every host IP in the order :meth:`Cluster.all_hosts` gives."""
    for h in cf.cluster.all_hosts():
        yield h.ip
