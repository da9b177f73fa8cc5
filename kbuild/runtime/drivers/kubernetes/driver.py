"""The Kubernetes cluster driver: kubeadm, containerd, the cluster CA, the
embedded registry, the kubeconfig, node labels.

An image is a Kubernetes image when its config carries the label
``org.kbuild.kubernetes`` (the Kubernetes version; images built ``FROM``
the base image inherit it). The image's scripts (``scripts/*.sh`` of
``images/kubernetes``) do the work on hosts; this driver generates what they
read and keeps the client-side state.
"""

from __future__ import annotations

from collections.abc import Mapping

from kbuild.errors import ClusterError
from kbuild.runtime import titles
from kbuild.runtime.clusterfile import Host
from kbuild.runtime.driver import (
    CHECK,
    CONVERGE,
    DELETE_HOSTS,
    UPGRADE,
    ClusterDriver,
    DriverContext,
    PhaseList,
)
from kbuild.runtime.drivers.kubernetes import files, flows, fresh, ha, kubeadm, kubectl
from kbuild.runtime.drivers.kubernetes.phases import (
    AliasesPhase,
    ImageCheckPhase,
    KubeconfigPhase,
    LabelsPhase,
    VipBackendsPhase,
)
from kbuild.runtime.drivers.kubernetes.pki import ClusterPki, cluster_pki
from kbuild.runtime.drivers.kubernetes.upgrade import (
    UpgradeApplyPhase,
    UpgradeBackupPhase,
    UpgradeCheckPhase,
    UpgradeDonePhase,
    UpgradeHostsPhase,
    UpgradeLayersPhase,
    UpgradePlanPhase,
    UpgradePluginPhase,
    UpgradeSwitchPhase,
)
from kbuild.runtime.executor import Executor, FileSpec
from kbuild.runtime.image import ImageInfo

__all__ = ["KubernetesDriver"]


class KubernetesDriver(ClusterDriver):
    """Kubernetes cluster images (label ``org.kbuild.kubernetes``)."""

    kind = "kubernetes"
    isolated_network = True

    def __init__(self) -> None:
        self.pki: ClusterPki | None = None

    @classmethod
    def claims(cls, labels: Mapping[str, str]) -> bool:
        """Images with the ``org.kbuild.kubernetes`` label."""
        return files.LABEL in labels

    def extend(self, flow: str, phases: PhaseList) -> None:
        """kubeconfig after init-cluster; aliases, VIP backends and labels after
        join-host; VIP backends after delete forgot hosts; day-2 flows: :mod:`.flows`."""
        flows.extend(flow, phases)
        if flow == CONVERGE:
            phases.insert_after(titles.INIT_CLUSTER, KubeconfigPhase())
            phases.insert_after(titles.JOIN_HOST, AliasesPhase(), VipBackendsPhase(),
                                LabelsPhase())  # fmt: skip
            phases.insert_after(titles.LAUNCH, ImageCheckPhase())
        elif flow == CHECK:
            phases.add(ImageCheckPhase())
        elif flow == DELETE_HOSTS:
            phases.insert_after(titles.FORGET, VipBackendsPhase())
        elif flow == UPGRADE:
            phases.add(
                UpgradeCheckPhase(), UpgradeBackupPhase(), UpgradeLayersPhase(), UpgradePlanPhase(),
                UpgradeSwitchPhase(), UpgradeApplyPhase(), UpgradePluginPhase(),
                UpgradeHostsPhase(masters=True), UpgradeHostsPhase(masters=False),
                UpgradeDonePhase(),
            )  # fmt: skip

    def version(self, labels: Mapping[str, str]) -> str:
        """The Kubernetes version of the image."""
        return labels.get(files.LABEL, "")

    def check_update(self, ctx: DriverContext, image: ImageInfo) -> None:
        """An app image on the running Kubernetes may replace the image; another
        Kubernetes version is an upgrade (``kbuild upgrade``)."""
        running = ctx.state.version
        wanted = self.version(image.labels)
        if running and wanted != running and not ctx.params.get("upgrade"):
            raise ClusterError(
                f"cluster {ctx.cf.cluster.name} runs Kubernetes {running}; "
                f"{ctx.cf.cluster.image} is Kubernetes {wanted or '(none)'}",
                hint=f"move the cluster to it with `kbuild upgrade {ctx.cf.cluster.image}`",
            )

    def prepare(self, ctx: DriverContext) -> None:
        """The env the scripts use is checked; the cluster CA and the registry
        certificate in the local state."""
        if ctx.image is not None:
            files.check_env(files.effective_cluster(ctx.cf.cluster, ctx.image))
        fresh.prepare_fresh(ctx)  # a restore onto fresh hosts brings kbuild's CA back first
        self.pki = cluster_pki(ctx.sd.path, ctx.cf.cluster)

    def _pki(self, ctx: DriverContext) -> ClusterPki:
        if self.pki is None:
            self.prepare(ctx)
        assert self.pki is not None
        return self.pki

    def host_files(
        self, ctx: DriverContext, conn: Executor, host: Host
    ) -> dict[str, bytes | FileSpec]:
        """kube.env, containerd's configuration and certs.d, kubeadm configuration."""
        assert ctx.image is not None
        rootfs = ctx.paths.rootfs
        image_yml = conn.read_file("etc/kubeadm.yml", root=rootfs)
        config = files.kubeadm_config(
            ctx.cf, ctx.image, image_yml.decode() if image_yml is not None else None
        )
        return files.host_files(
            ctx.cf, host, ctx.image, self._pki(ctx).ca.cert_pem, rootfs=rootfs,
            containerd_root=files.containerd_root(conn, ctx.paths.base), config=config,
        )  # fmt: skip

    def private_files(self, ctx: DriverContext, conn: Executor, host: Host) -> dict[str, FileSpec]:
        """The embedded registry's certificate (of this host), key and configuration."""
        domain, port = files.registry_address(ctx.cf.cluster)
        pair = self._pki(ctx).registry(domain, host.ip)
        return files.registry_files(ctx.paths.base, pair, ctx.paths.rootfs, port)

    def host_aliases(self, ctx: DriverContext, host: Host) -> list[str]:
        """The registry domain (the host itself) and the API server name (the
        host itself, the lead master or the VIP: :mod:`.ha`)."""
        return ha.aliases(ctx.cf.cluster, ctx.state, host, ctx.lead)

    def secrets(self, ctx: DriverContext) -> list[str]:
        """Certificate keys and bootstrap tokens given in the Clusterfile's
        kubeadm documents."""
        return kubeadm.document_secrets(ctx.cf.others)

    def hosts_removed(self, ctx: DriverContext) -> None:
        """The Clusterfile Secret follows the record."""
        kubectl.store_clusterfile(ctx.conn(ctx.master0), ctx.cf)

    def forget(self, ctx: DriverContext) -> None:
        """The kubeconfig and the cluster PKI leave the local state."""
        kubectl.forget(ctx.sd.path)


