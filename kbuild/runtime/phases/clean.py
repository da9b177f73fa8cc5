"""The phases of delete: master0 lets hosts go, hosts are cleaned, the local
state forgets them.

- leave-cluster (master0, when its rootfs is mounted): ``scripts/leave-cluster.sh``
  with ``KBUILD_LEAVE_MASTERS``/``KBUILD_LEAVE_NODES``;
- clean-host (each host): ``scripts/clean-host.sh`` when the rootfs is mounted,
  then the mount unit, the cluster's data and unused layers, its
  ``/etc/hosts`` aliases go;
- forget (this machine): the hosts leave the recorded Clusterfile and state
  (``delete --masters/--nodes``), or the whole record goes (``delete --all``).
"""

from __future__ import annotations

from kbuild.runtime import clusterfile as cfmod
from kbuild.runtime import titles
from kbuild.runtime.clusterfile import Host
from kbuild.runtime.contract import run_script
from kbuild.runtime.mount import mounts_escape, unmount_rootfs
from kbuild.runtime.phases.base import ClientPhase, Phase
from kbuild.runtime.phases.context import Context
from kbuild.runtime.phases.provision import set_host_aliases
from kbuild.runtime.remote import remote_script
from kbuild.runtime.runevents import HostStatus, emit

__all__ = ["CleanHostPhase", "ForgetClusterPhase", "ForgetHostsPhase", "LeaveClusterPhase"]


class LeaveClusterPhase(Phase):
    """master0 lets the hosts being deleted go (drain, etcd member removal…)."""

    title = titles.LEAVE_CLUSTER
    scope = "cluster"
    recorded = False

    def __init__(self, leaving: list[Host]) -> None:
        self.leaving = leaving

    def run(self, ctx: Context, host: Host) -> None:
        """leave-cluster.sh on master0 when the image is mounted there."""
        if not ctx.mounted(host):
            return
        env = {
            **ctx.env(host, self.title),
            "KBUILD_LEAVE_MASTERS": ",".join(h.ip for h in self.leaving if h.is_master),
            "KBUILD_LEAVE_NODES": ",".join(h.ip for h in self.leaving if not h.is_master),
        }
        run_script(ctx.conn(host), ctx.paths, self.title, env, progress=ctx.progress)


class CleanHostPhase(Phase):
    """Each host as it was before the cluster: script, mount, data, aliases."""

    title = titles.CLEAN_HOST
    recorded = False

    def run(self, ctx: Context, host: Host) -> None:
        """Clean one host (fine when it was half set up or already clean)."""
        conn = ctx.conn(host)
        emit(ctx.progress, HostStatus(host.ip, "cleaning"))
        if ctx.mounted(host):
            run_script(conn, ctx.paths, self.title, ctx.env(host, self.title),
                       progress=ctx.progress)  # fmt: skip
        unmount_rootfs(conn, ctx.paths)
        c = ctx.cf.cluster
        rootfs = mounts_escape(ctx.paths.rootfs)
        conn.run(remote_script("remove-cluster.sh", c.data_root, c.name, rootfs))
        set_host_aliases(ctx, host, remove=True)
        emit(ctx.progress, HostStatus(host.ip, "removed"))


class ForgetHostsPhase(ClientPhase):
    """The deleted hosts leave the record; the driver follows."""

    title = titles.FORGET

    def __init__(self, leaving: list[Host], *, forget_unreachable: bool) -> None:
        self.leaving = leaving
        self.forget_unreachable = forget_unreachable

    def run_client(self, ctx: Context) -> None:
        """Forget each host that was cleaned (and, with --force, those not reached)."""
        reached = {h.ip for h in ctx.targets}
        done = [
            h.ip for h in self.leaving
            if h.ip not in ctx.failed and (h.ip in reached or self.forget_unreachable)
        ]  # fmt: skip
        if not done:
            return
        ctx.cf = cfmod.remove_hosts(ctx.cf, done)
        ctx.sd.save_clusterfile(ctx.cf)
        for ip in done:
            ctx.state.hosts.pop(ip, None)
        ctx.save()
        ctx.driver.hosts_removed(ctx)


class ForgetClusterPhase(ClientPhase):
    """After ``delete --all``: the record goes when every host was cleaned,
    else the cleaned hosts leave it (a re-run cleans the rest)."""

    title = titles.FORGET

    def run_client(self, ctx: Context) -> None:
        """Forget the cluster, or the hosts that are clean."""
        if not ctx.failed:
            ctx.driver.forget(ctx)
            ctx.sd.remove()
            return
        for h in ctx.targets:
            if h.ip not in ctx.failed:
                ctx.state.hosts.pop(h.ip, None)
        if ctx.sd.exists():
            ctx.save()
