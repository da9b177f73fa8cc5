"""The phases the Kubernetes driver inserts into the converge list.

- kubeconfig (after init-cluster, master0): the admin kubeconfig to
  ``~/.kbuild/<cluster>/kubeconfig`` (0600, server = master0's address);
- labels (after join-host, master0): the Clusterfile's node labels on the
  hosts brought up, and the Clusterfile (redacted) as the Secret
  ``kube-system/kbuild-clusterfile``.
"""

from __future__ import annotations

from kbuild.runtime.clusterfile import Host
from kbuild.runtime.drivers.kubernetes import kubectl
from kbuild.runtime.phases.base import Phase
from kbuild.runtime.phases.context import Context
from kbuild.runtime.runevents import HostStatus, emit

__all__ = ["KUBECONFIG", "LABELS", "KubeconfigPhase", "LabelsPhase"]

KUBECONFIG = "kubeconfig"
LABELS = "labels"


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
