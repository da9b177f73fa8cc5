"""Cluster drivers: what a kind of cluster image adds to the generic life cycle.

The generic runtime knows layers, mounts, the image's scripts and plugins. A
driver adds what one kind of cluster needs (Kubernetes: kubeadm and
containerd files, a cluster CA, the kubeconfig, node labels) without the
generic runtime knowing it: the image's kind selects the driver
(:func:`select_driver`, over the drivers :class:`~kbuild.runtime.phases.context.Options`
carries), and the driver

- inserts phases of its own into a flow's phase list (:meth:`ClusterDriver.extend`),
- renders files per host (:meth:`ClusterDriver.host_files`, inside the rootfs;
  :meth:`ClusterDriver.private_files`, outside it),
- names ``/etc/hosts`` aliases (:meth:`ClusterDriver.host_aliases`),
- keeps and forgets client-side state (:meth:`ClusterDriver.prepare`,
  :meth:`ClusterDriver.hosts_removed`, :meth:`ClusterDriver.forget`).

:class:`NullDriver` serves images of no known kind. Drivers live in
``kbuild/runtime/drivers/<kind>/``; the generic runtime imports none of them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Protocol

from kbuild.runtime.clusterfile import Clusterfile, Host
from kbuild.runtime.executor import Executor, FileSpec
from kbuild.runtime.image import ImageInfo
from kbuild.runtime.mount import ClusterPaths
from kbuild.runtime.state import ClusterState, StateDir

__all__ = [
    "CHECK", "CONVERGE", "DELETE_CLUSTER", "DELETE_HOSTS", "UPGRADE", "ClusterDriver",
    "DriverContext", "NullDriver", "PhaseList", "driver_by_kind", "select_driver",
]  # fmt: skip

CONVERGE = "converge"
"""The flow of run, join and apply: bring hosts to the finished state."""
DELETE_HOSTS = "delete-hosts"
"""The flow of ``delete --masters/--nodes``."""
DELETE_CLUSTER = "delete-cluster"
"""The flow of ``delete --all`` on hosts that stay."""
CHECK = "check"
"""The flow of ``kbuild check``: what the running cluster needs is in it."""
UPGRADE = "upgrade"
"""The flow of ``kbuild upgrade IMAGE`` (after a generic preflight of the new image)."""


class DriverContext(Protocol):
    """What a driver's hooks may use of an operation (its
    :class:`~kbuild.runtime.phases.context.Context`)."""

    cf: Clusterfile
    sd: StateDir
    state: ClusterState
    paths: ClusterPaths
    image: ImageInfo | None
    targets: list[Host]
    params: dict[str, object]

    @property
    def master0(self) -> Host:
        """The first master."""
        ...

    @property
    def lead(self) -> Host:
        """The master cluster phases run on."""
        ...

    def conn(self, host: Host) -> Executor:
        """The host's connection."""
        ...


class PhaseList(Protocol):
    """What a driver may do to a flow's list (the
    :class:`~kbuild.runtime.phases.manager.Manager`)."""

    def add(self, *phases: Any) -> None:
        """Append phases (a flow of the driver's own starts empty)."""
        ...

    def insert_after(self, title: str, *phases: Any) -> None:
        """Insert phases after the phase ``title``."""
        ...

    def insert_before(self, title: str, *phases: Any) -> None:
        """Insert phases before the phase ``title``."""
        ...


class ClusterDriver:
    """The base of every driver; each hook does nothing unless a driver says so."""

    kind: ClassVar[str] = "none"
    isolated_network: ClassVar[bool] = False
    """Hosts a provider makes for this kind get a network with no route out."""

    @classmethod
    def claims(cls, labels: Mapping[str, str]) -> bool:
        """True when an image with these config labels is of this driver's kind."""
        return False

    def extend(self, flow: str, phases: PhaseList) -> None:
        """Insert this driver's phases into the phase list of ``flow``."""

    def version(self, labels: Mapping[str, str]) -> str:
        """What an image with these labels is, for the state (Kubernetes: its version)."""
        return ""

    def check_update(self, ctx: DriverContext, image: ImageInfo) -> None:
        """Raise when ``image`` may not replace the image the cluster runs by
        ``kbuild run``/``apply`` (an update of apps); any image may by default."""

    def prepare(self, ctx: DriverContext) -> None:
        """Client-side preparation once a converge starts changing hosts."""

    def host_files(
        self, ctx: DriverContext, conn: Executor, host: Host
    ) -> dict[str, bytes | FileSpec]:
        """Generated files for one host, by path relative to its rootfs."""
        return {}

    def private_files(self, ctx: DriverContext, conn: Executor, host: Host) -> dict[str, FileSpec]:
        """Generated files outside the rootfs (absolute paths, with modes)."""
        return {}

    def host_aliases(self, ctx: DriverContext, host: Host) -> list[str]:
        """``/etc/hosts`` lines (``IP NAME…``) of one host."""
        return []

    def secrets(self, ctx: DriverContext) -> list[str]:
        """Values of the Clusterfile this kind treats as secret (masked in output)."""
        return []

    def hosts_removed(self, ctx: DriverContext) -> None:
        """After hosts left the cluster (``ctx.cf`` no longer lists them)."""

    def forget(self, ctx: DriverContext) -> None:
        """``delete --all``: remove what the driver keeps in the local state."""


class NullDriver(ClusterDriver):
    """Images of no known kind: the generic life cycle alone."""


def select_driver(
    labels: Mapping[str, str], drivers: Sequence[type[ClusterDriver]]
) -> ClusterDriver:
    """The driver of the first kind that claims an image with these labels
    (else :class:`NullDriver`)."""
    for cls in drivers:
        if cls.claims(labels):
            return cls()
    return NullDriver()


def driver_by_kind(kind: str, drivers: Sequence[type[ClusterDriver]]) -> ClusterDriver:
    """The driver recorded for a cluster (when its image is no longer readable)."""
    for cls in drivers:
        if cls.kind == kind:
            return cls()
    return NullDriver()
