"""The cluster drivers kbuild has, by kind (the CLI hands them to the life cycle)."""

from kbuild.runtime.driver import ClusterDriver
from kbuild.runtime.drivers.kubernetes import KubernetesDriver

DRIVERS: tuple[type[ClusterDriver], ...] = (KubernetesDriver,)

__all__ = ["DRIVERS"]
