"""``kbuild upgrade IMAGE``: a running Kubernetes cluster moved to a newer base image.

The list (after the generic preflight, which reads the new image):

    upgrade-check     lead     versions (one minor at a time, never down), every node
                               Ready, etcd healthy; read-only, also in --dry-run
    upgrade-backup    lead     etcd and the PKI saved here (kbuild backup's archive) before
                               the first change; ``--no-backup`` skips it
    upgrade-layers    hosts    the new image's missing layers sent (nothing switches)
    upgrade-plan      lead     the new kubeadm (a read-only mount of the new layers)
                               accepts the cluster: ``kubeadm upgrade plan VERSION``
    upgrade-switch    hosts    every rootfs moves to the new image (its own upper dir;
                               running processes keep the old one), files rendered for
                               it, registries restarted: the new binaries and every
                               new container image are on every host before any
                               control-plane step
    upgrade-apply     lead     drain, ``kubeadm upgrade apply``, kubelet (and
                               containerd/runc when they changed), uncordon, Ready
    upgrade           lead     sealer's ``upgrade`` plugins
    upgrade-masters   masters  one at a time: drain, ``kubeadm upgrade node``, kubelet…
    upgrade-nodes     nodes    in batches (``--batch``, default 1), the same
    upgrade-done      here     the cluster's record names the new image

Every host step is recorded under ``<phase>@<image generation>``: an upgrade
that failed or was interrupted continues where it stopped when run again.
"""

from __future__ import annotations

import shlex
import time

from kbuild.errors import ClusterError
from kbuild.runtime import titles
from kbuild.runtime.clusterfile import Host
from kbuild.runtime.contract import run_plugin, run_script
from kbuild.runtime.drivers.kubernetes import kubectl, nodes
from kbuild.runtime.drivers.kubernetes.backup import BackupPhase
from kbuild.runtime.drivers.kubernetes.versions import check_upgrade
from kbuild.runtime.executor import Executor
from kbuild.runtime.phases.base import ClientPhase, Phase
from kbuild.runtime.phases.context import Context
from kbuild.runtime.phases.plugins import PluginPhase
from kbuild.runtime.phases.provision import mount_and_render, send_layers
from kbuild.runtime.runevents import HostStatus, Message, emit

__all__ = [
    "UpgradeApplyPhase",
    "UpgradeBackupPhase",
    "UpgradeCheckPhase",
    "UpgradeDonePhase",
    "UpgradeHostsPhase",
    "UpgradeLayersPhase",
    "UpgradePlanPhase",
    "UpgradePluginPhase",
    "UpgradeSwitchPhase",
    "target_version",
]

#: seconds an upgrade's checks wait for an API server or kubelet that is restarting
API_WAIT = 120.0


def target_version(ctx: Context) -> str:
    """The Kubernetes version of the image the cluster moves to."""
    assert ctx.image is not None
    return ctx.driver.version(ctx.image.labels)


class _Recorded(Phase):
    """A phase recorded per image generation (an interrupted upgrade continues)."""

    def record_key(self, ctx: Context) -> str:
        """``<title>@<generation of the new image>``."""
        return f"{self.title}@{ctx.generation}"


class UpgradePluginPhase(_Recorded, PluginPhase):
    """sealer's ``upgrade`` plugins, once per upgrade (after the control plane)."""

    def __init__(self) -> None:
        super().__init__(titles.UPGRADE)


class UpgradeBackupPhase(_Recorded, BackupPhase):
    """etcd and the PKI saved before the first change (``kbuild backup``'s
    archive, 0600, in the cluster's state dir unless ``--backup FILE``)."""

    title = "upgrade-backup"
    recorded = True  # once per upgrade (kbuild backup's own phase is not)

    def should_run(self, ctx: Context, hosts: list[Host]) -> bool:
        """Unless ``--no-backup``."""
        return super().should_run(ctx, hosts) and not ctx.params.get("no_backup")

    def run(self, ctx: Context, host: Host) -> None:
        """The archive, and where it is."""
        ctx.params.setdefault(
            "output", str(ctx.sd.path / f"before-upgrade-{ctx.generation}.kbk"))
        super().run(ctx, host)
        where = ctx.params["output"]
        emit(ctx.progress, Message(f"etcd and the PKI of {ctx.state.version} saved in {where} "
                                   "(kbuild restore goes back)"))  # fmt: skip


class UpgradeCheckPhase(Phase):
    """Refuse before any change: versions, node readiness, etcd health."""

    title = "upgrade-check"
    scope = "cluster"
    recorded = False
    read_only = True

    def run(self, ctx: Context, host: Host) -> None:
        """Every check; the first that fails says what to do."""
        check_upgrade(ctx.state.version, target_version(ctx))
        conn = ctx.conn(host)
        down = _not_ready(conn)
        if down:
            raise ClusterError(
                "nodes not Ready: " + ", ".join(down),
                hint="an upgrade starts from a healthy cluster; fix or delete them first",
            )
        if not nodes.etcd_healthy(conn):
            raise ClusterError("etcd is not healthy (the API server's /readyz/etcd)")
        emit(ctx.progress, HostStatus(host.ip, "upgrade",
                                      f"{ctx.state.version} -> {target_version(ctx)}"))  # fmt: skip


class UpgradeLayersPhase(Phase):
    """Every host gets the new image's layers it lacks (nothing switches yet)."""

    title = "upgrade-layers"
    recorded = False
    quiet = True

    def begin(self, ctx: Context, hosts: list[Host]) -> None:
        """The upgrade starts changing hosts."""
        ctx.state.status = "running"
        ctx.save()
        ctx.driver.prepare(ctx)

    def run(self, ctx: Context, host: Host) -> None:
        """Send what is missing."""
        send_layers(ctx, host)


class UpgradePlanPhase(Phase):
    """The new kubeadm says it can upgrade this cluster (``kubeadm upgrade plan``)."""

    title = "upgrade-plan"
    scope = "cluster"
    recorded = False

    def run(self, ctx: Context, host: Host) -> None:
        """Mount the new layers read-only, ask, unmount."""
        store = f"{ctx.cf.cluster.data_root}/layers"
        layers = ctx.image_for(host).layers
        lowers = ":".join(f"{store}/{layer.hex}/fs" for layer in reversed(layers))
        staging = f"{ctx.paths.base}/next"
        q = shlex.quote
        version = target_version(ctx)
        script = (
            f"set -e; mkdir -p {q(staging)}; "
            f"mount -t overlay kbuild-next -o ro,lowerdir={q(lowers)} {q(staging)}; "
            f"trap 'umount {q(staging)}; rmdir {q(staging)}' EXIT; "
            f"{q(staging + '/bin/kubeadm')} upgrade plan {q(version)} "
            f"--kubeconfig /etc/kubernetes/admin.conf --allow-experimental-upgrades"
        )
        res = ctx.conn(host).run(script, check=False, timeout=600)
        if not res.ok:
            tail = "\n".join((res.stdout + res.stderr).strip().splitlines()[-12:])
            raise ClusterError(
                f"the kubeadm of {ctx.cf.cluster.image} does not accept the cluster:\n{tail}"
            )


class UpgradeSwitchPhase(_Recorded):
    """Every rootfs on the new image; the registries serve its container images."""

    title = "upgrade-switch"
    quiet = True

    def run(self, ctx: Context, host: Host) -> None:
        """Mount, render, restart the host's registry (a newer binary or config)."""
        mount_and_render(ctx, host)
        ctx.conn(host).run("systemctl daemon-reload && systemctl restart kbuild-registry.service")


def _upgrade_host(ctx: Context, host: Host, *, apply: bool) -> None:
    """Drain, the image's upgrade-host.sh (and sealer's upgrade-host plugins),
    uncordon, Ready with the new kubelet."""
    lead = ctx.conn(ctx.lead)
    version = target_version(ctx)
    info = nodes.nodes(lead).get(host.ip)
    if info is None:
        raise ClusterError(f"{host.ip}: no Kubernetes node with this InternalIP")
    timeout = float(str(ctx.params.get("drain_timeout", 300)))
    emit(ctx.progress, HostStatus(host.ip, "draining", info.name))
    nodes.drain(lead, info.name, timeout=timeout)
    env = {**ctx.env(host, titles.UPGRADE_HOST), "KBUILD_UPGRADE_APPLY": "1" if apply else ""}
    run_script(ctx.conn(host), ctx.paths, titles.UPGRADE_HOST, env, progress=ctx.progress)
    for plugin in ctx.plugins_for(titles.UPGRADE_HOST):
        if plugin.applies_to(host.roles):
            run_plugin(ctx.conn(host), plugin, ctx.paths.rootfs, env, progress=ctx.progress)
    nodes.uncordon(lead, info.name)
    nodes.wait_node(lead, host.ip, version=version, timeout=300)
    if host.is_master:
        nodes.wait_control_plane(lead, info.name, version=version, timeout=300)
    ctx.record(host).version = version
    ctx.save()
    emit(ctx.progress, HostStatus(host.ip, "upgraded", version))


class UpgradeApplyPhase(_Recorded):
    """``kubeadm upgrade apply`` on the lead master (the control plane's version)."""

    title = "upgrade-apply"
    scope = "cluster"

    def run(self, ctx: Context, host: Host) -> None:
        """The lead master first."""
        _upgrade_host(ctx, host, apply=True)


class UpgradeHostsPhase(_Recorded):
    """The other masters one at a time, or the nodes in batches."""

    def __init__(self, masters: bool) -> None:
        self.masters = masters
        self.title = "upgrade-masters" if masters else "upgrade-nodes"

    def applies_to(self, ctx: Context, host: Host) -> bool:
        """Masters but the lead, or nodes."""
        if self.masters:
            return host.is_master and host.ip != ctx.lead.ip
        return not host.is_master

    def batches(self, ctx: Context, hosts: list[Host]) -> list[list[Host]]:
        """Masters one by one; nodes ``--batch`` at a time."""
        size = 1 if self.masters else max(1, int(str(ctx.params.get("batch", 1))))
        return [hosts[i : i + size] for i in range(0, len(hosts), size)]

    def run(self, ctx: Context, host: Host) -> None:
        """``kubeadm upgrade node`` and the rest."""
        _upgrade_host(ctx, host, apply=False)


def _not_ready(conn: Executor) -> list[str]:
    """Nodes not Ready, after waiting (bounded) for them: an upgrade run again
    after an interruption may find an API server or a kubelet restarting."""
    deadline = time.monotonic() + API_WAIT
    while True:
        found = nodes.nodes(conn, wait=API_WAIT)
        down = sorted(f"{n.name} ({ip})" for ip, n in found.items() if not n.ready)
        if not down or time.monotonic() >= deadline:
            return down
        time.sleep(3)


class UpgradeDonePhase(ClientPhase):
    """The cluster's record names the new image and version."""

    title = "upgrade-done"

    def run_client(self, ctx: Context) -> None:
        """Record it here, and the Clusterfile Secret in the cluster."""
        assert ctx.image is not None
        ctx.state.image = ctx.cf.cluster.image
        ctx.state.manifest = ctx.image.manifest_digest
        if ctx.image.manifest_digest not in ctx.state.images:
            ctx.state.images.append(ctx.image.manifest_digest)
        ctx.state.version = target_version(ctx)
        ctx.sd.save_clusterfile(ctx.cf)
        ctx.save()
        kubectl.store_clusterfile(ctx.conn(ctx.lead), ctx.cf)
        emit(ctx.progress, Message(f"cluster {ctx.cf.cluster.name} runs Kubernetes "
                                   f"{ctx.state.version} ({ctx.cf.cluster.image})"))  # fmt: skip
