"""The phases the Kubernetes driver inserts into the converge list.

- kubeconfig (after init-cluster, master0): the admin kubeconfig to
  ``~/.kbuild/<cluster>/kubeconfig`` (0600, server = master0's address);
- labels (after join-host, master0): the Clusterfile's node labels on the
  hosts brought up, and the Clusterfile (redacted) as the Secret
  ``kube-system/kbuild-clusterfile``;
- aliases (after join-host, the hosts brought up): a master that has joined
  reaches its own API server from now on;
- vip-backends (after join-host, and after delete forgot hosts): every node's
  VIP agent gets the current masters (no re-run of anything needed);
- images (after launch, and ``kbuild check``): every pod runs a carried image,
  none is stuck on a pull (:mod:`.imagecheck`).
"""

from __future__ import annotations

from kbuild.runtime.clusterfile import Host
from kbuild.runtime.drivers.kubernetes import ha, imagecheck, kubectl
from kbuild.runtime.phases.base import ClientPhase, Phase
from kbuild.runtime.phases.context import Context
from kbuild.runtime.phases.provision import set_host_aliases
from kbuild.runtime.pool import run_on_hosts
from kbuild.runtime.runevents import HostStatus, Message, emit

__all__ = ["ALIASES", "IMAGES", "KUBECONFIG", "LABELS", "VIP_BACKENDS", "AliasesPhase",
           "ImageCheckPhase", "KubeconfigPhase", "LabelsPhase", "VipBackendsPhase"]  # fmt: skip

KUBECONFIG = "kubeconfig"
LABELS = "labels"
ALIASES = "aliases"
VIP_BACKENDS = "vip-backends"
IMAGES = "images"


class KubeconfigPhase(Phase):
    """Copy master0's admin kubeconfig to this machine's cluster state."""

    title = KUBECONFIG
    scope = "cluster"
    recorded = False
    quiet = True

    def run(self, ctx: Context, host: Host) -> None:
        """Fetch it (again on every run: it may have been renewed)."""
        path = kubectl.fetch_kubeconfig(ctx.conn(host), ctx.sd.path, host.ip)
        emit(ctx.progress, HostStatus(host.ip, "kubeconfig", str(path)))


class LabelsPhase(Phase):
    """Node labels of the hosts brought up; the Clusterfile kept in the cluster."""

    title = LABELS
    scope = "cluster"
    recorded = False
    quiet = True

    def run(self, ctx: Context, host: Host) -> None:
        """Label the nodes (waiting, bounded, for them to register) and store the
        Clusterfile Secret."""
        conn = ctx.conn(host)
        labelled = kubectl.apply_labels(conn, ctx.targets)
        if labelled:
            emit(ctx.progress, HostStatus(host.ip, "labels", ", ".join(labelled)))
        kubectl.store_clusterfile(conn, ctx.cf)


class AliasesPhase(Phase):
    """``/etc/hosts`` of the hosts brought up, now that they have joined."""

    title = ALIASES
    recorded = False
    quiet = True

    def run(self, ctx: Context, host: Host) -> None:
        """The host's aliases again (only a changed line is written)."""
        set_host_aliases(ctx, host)


class VipBackendsPhase(ClientPhase):
    """Every node's list of masters (its VIP agent reads it every second)."""

    title = VIP_BACKENDS
    quiet = True

    def run_client(self, ctx: Context) -> None:
        """Write it on every node that answers; say which did not."""
        data = ha.backends_file(ctx.cf.cluster)
        nodes = [h for h in ctx.cf.cluster.all_hosts() if not h.is_master]
        res = run_on_hosts(
            nodes,
            lambda h: ctx.conn(h).put_files({ha.VIP_BACKENDS: data}, root=ctx.paths.rootfs),
            name=lambda h: h.ip,
            check=False,
        )
        for ip, err in res.errors.items():
            why = err.message.splitlines()[0]
            emit(ctx.progress, Message(f"{ip}: its VIP agent did not get the new masters: {why}"))


class ImageCheckPhase(Phase):
    """Every pod's image carried, none stuck on a pull (bounded wait)."""

    title = IMAGES
    scope = "cluster"
    recorded = False
    read_only = True

    def run(self, ctx: Context, host: Host) -> None:
        """Check on the lead master; a pull that cannot happen is an error."""
        assert ctx.image is not None
        timeout = float(str(ctx.params.get("check_timeout", 180)))
        report = imagecheck.check_images(ctx.conn(host), ctx.served_images(), timeout=timeout)
        ctx.results["images"] = report
        for c in report.not_carried:
            emit(ctx.progress, Message(f"not carried by {ctx.cf.cluster.image}: {c}"))
        imagecheck.raise_if_stuck(report, ctx.cf.cluster.image)
        emit(ctx.progress, HostStatus(host.ip, "images", f"{report.checked} containers checked, "
                                      f"{len(report.not_carried)} not carried, none stuck"))
