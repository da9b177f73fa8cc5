"""The Clusterfile's data model: sealer.io/v2 documents as dataclasses.

A Clusterfile is multi-document YAML. One document is ``kind: Cluster``
(sealer's ``sealer.io/v2`` fields), any number are ``kind: Config`` (files
written into the rootfs before the phases run) and ``kind: Plugin`` (shell
hooks at sealer's phase names), and every other document (kubeadm, kubelet,
kube-proxy configuration) is kept verbatim for the cluster driver.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kbuild.runtime import titles

API_VERSION = "sealer.io/v2"
"""apiVersion written for the Cluster document."""

DOC_API_VERSION = "sealer.io/v1"
"""apiVersion written for Config and Plugin documents (as sealer does)."""

ROLES = ("master", "node")
"""Roles a host may have."""

DEFAULT_DATA_ROOT = "/var/lib/kbuild/data"
"""Where hosts keep layers and cluster root filesystems when ``dataRoot`` is unset."""

DEFAULT_CLUSTER_NAME = "my-cluster"
"""The cluster name when neither ``metadata.name`` nor ``--cluster-name`` gives one."""

PLUGIN_ACTIONS = titles.PLUGIN_ACTIONS
"""sealer's plugin phase names (the phase titles); host ones run on every host in scope."""

HOST_ACTIONS = titles.HOST_PLUGIN_ACTIONS
"""Plugin actions that run on every host in scope (the others run on master0)."""

TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")


@dataclass(frozen=True)
class SSH:
    """SSH settings; ``None`` fields inherit from the cluster level."""

    user: str | None = None
    passwd: str | None = None
    port: int | None = None
    pk: str | None = None
    pk_passwd: str | None = None

    def over(self, base: SSH) -> SSH:
        """These settings with unset fields taken from ``base``."""
        return SSH(
            user=self.user if self.user is not None else base.user,
            passwd=self.passwd if self.passwd is not None else base.passwd,
            port=self.port if self.port is not None else base.port,
            pk=self.pk if self.pk is not None else base.pk,
            pk_passwd=self.pk_passwd if self.pk_passwd is not None else base.pk_passwd,
        )

    def is_empty(self) -> bool:
        """True when no field is set."""
        return self == SSH()

    def __repr__(self) -> str:
        hidden = "***" if self.passwd is not None else None
        hidden_pk = "***" if self.pk_passwd is not None else None
        return (
            f"SSH(user={self.user!r}, passwd={hidden!r}, port={self.port!r}, "
            f"pk={self.pk!r}, pk_passwd={hidden_pk!r})"
        )


@dataclass(frozen=True)
class Taint:
    """A Kubernetes taint ``key[=value]:Effect``, ``remove`` for a trailing ``-``."""

    key: str
    value: str
    effect: str
    remove: bool = False

    def __str__(self) -> str:
        text = self.key + (f"={self.value}" if self.value else "")
        text += f":{self.effect}" if self.effect else ""
        return text + ("-" if self.remove else "")


@dataclass
class HostGroup:
    """One entry of ``spec.hosts``: IPs sharing roles and settings."""

    ips: list[str]
    roles: list[str]
    ssh: SSH = field(default_factory=SSH)
    env: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    taints: list[Taint] = field(default_factory=list)


@dataclass(frozen=True)
class Host:
    """A single host with its settings resolved (host level over cluster level)."""

    ip: str
    roles: tuple[str, ...]
    ssh: SSH
    env: Mapping[str, str]
    labels: Mapping[str, str]
    taints: tuple[Taint, ...]

    @property
    def is_master(self) -> bool:
        """True for a host with the master role."""
        return "master" in self.roles


@dataclass(frozen=True)
class Distribution:
    """``spec.distribution``: how layers reach the hosts (kbuild's own field).

    ``relay``: hosts pass layers on to each other over SSH (the client sends
    each layer about once); false where hosts cannot reach each other.
    ``fanout``: hosts one host passes a layer to. ``streams``: layers the
    client sends at the same time. ``stallTimeout``: seconds without progress
    after which a host is given up (it gets the layer from the client).
    """

    relay: bool = True
    fanout: int = 4
    streams: int = 64
    stall_timeout: float = 60.0

    def relays(self, hosts: int) -> bool:
        """Layers go by relay to ``hosts`` hosts: relay is on and there is more than one."""
        return self.relay and hosts > 1


@dataclass
class Cluster:
    """The ``kind: Cluster`` document."""

    name: str
    image: str
    hosts: list[HostGroup]
    ssh: SSH = field(default_factory=SSH)
    env: dict[str, str] = field(default_factory=dict)
    cmds: list[str] = field(default_factory=list)
    app_names: list[str] = field(default_factory=list)
    registry: dict[str, Any] = field(default_factory=dict)
    host_aliases: list[dict[str, Any]] = field(default_factory=list)
    data_root: str = DEFAULT_DATA_ROOT
    distribution: Distribution = field(default_factory=Distribution)
    extra: dict[str, Any] = field(default_factory=dict)

    def all_hosts(self) -> list[Host]:
        """Every host, masters first in file order, then the others in file order."""
        hosts: list[Host] = []
        for group in self.hosts:
            for ip in group.ips:
                hosts.append(
                    Host(
                        ip=ip,
                        roles=tuple(group.roles),
                        ssh=group.ssh.over(self.ssh),
                        env={**self.env, **group.env},
                        labels=dict(group.labels),
                        taints=tuple(group.taints),
                    )
                )
        return [h for h in hosts if h.is_master] + [h for h in hosts if not h.is_master]

    def masters(self) -> list[Host]:
        """Hosts with the master role, in file order."""
        return [h for h in self.all_hosts() if h.is_master]

    def master0(self) -> Host:
        """The first master: cluster-level steps run there."""
        return self.masters()[0]

    def host(self, ip: str) -> Host:
        """The host with that IP (``KeyError`` when absent)."""
        for h in self.all_hosts():
            if h.ip == ip:
                return h
        raise KeyError(ip)


@dataclass
class ConfigDoc:
    """A ``kind: Config`` document: a file written into the rootfs."""

    name: str
    path: str
    data: str
    strategy: str = "overwrite"
    app_name: str = ""

    @property
    def rootfs_path(self) -> str:
        """The path inside the cluster rootfs (app configs live under the app dir)."""
        if self.app_name:
            return f"application/apps/{self.app_name}/{self.path}"
        return self.path


@dataclass
class PluginDoc:
    """A ``kind: Plugin`` document: a shell hook at one phase."""

    name: str
    action: str
    data: str
    scope: tuple[str, ...] = ()
    type: str = "SHELL"

    def applies_to(self, roles: Iterable[str]) -> bool:
        """True when a host with these roles is in the plugin's scope."""
        return not self.scope or bool(set(self.scope) & set(roles))


@dataclass
class Clusterfile:
    """All documents of one Clusterfile."""

    cluster: Cluster
    configs: list[ConfigDoc] = field(default_factory=list)
    plugins: list[PluginDoc] = field(default_factory=list)
    others: list[dict[str, Any]] = field(default_factory=list)

    def plugins_for(self, action: str) -> list[PluginDoc]:
        """Plugins of one phase, in file order."""
        return [p for p in self.plugins if p.action == action]
