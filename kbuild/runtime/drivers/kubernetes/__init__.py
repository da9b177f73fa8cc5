"""The Kubernetes cluster driver (see :mod:`.driver`)."""

from kbuild.runtime.drivers.kubernetes.driver import KubernetesDriver

__all__ = ["KubernetesDriver"]
