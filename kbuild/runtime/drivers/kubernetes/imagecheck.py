"""Proof at run time that the cluster needs nothing from outside (issue 9).

After the apps launch (and on ``kbuild check``), on the lead master: every
container of every pod runs an image the cluster image carries (the
embedded registry serves it), and no pod is stuck on an image pull. The
check waits, bounded, while pods are still being created or pulled; then
a container waiting on a pull (``ErrImagePull``, ``ImagePullBackOff``) is an
error naming its pod, the image and the app whose files declared it, and a
container whose image the cluster image does not carry is reported (it runs
from a copy some node has, which a new node would not).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

from kbuild.errors import ClusterError
from kbuild.layerstore import CarriedImage, find_carried
from kbuild.runtime.drivers.kubernetes.kubectl import KUBECTL
from kbuild.runtime.executor import Executor

__all__ = ["ImageReport", "PodImage", "check_images", "pod_images"]

PULLING = frozenset({"ErrImagePull", "ImagePullBackOff", "ErrImageNeverPull", "InvalidImageName"})
STARTING = frozenset({"ContainerCreating", "PodInitializing"})


@dataclass(frozen=True)
class PodImage:
    """One container of one pod, as the API server reports it."""

    namespace: str
    pod: str
    container: str
    image: str
    waiting: str = ""
    """The reason it waits (``ImagePullBackOff``…), "" when it runs or ran."""

    def __str__(self) -> str:
        return f"{self.namespace}/{self.pod} container {self.container}: {self.image}"


def pod_images(conn: Executor) -> list[PodImage]:
    """Every container (init containers included) of every pod, with its state."""
    data = json.loads(conn.run(f"{KUBECTL} get pods -A -o json").stdout or "{}")
    out: list[PodImage] = []
    for pod in data.get("items", []):
        meta, spec, status = pod.get("metadata", {}), pod.get("spec", {}), pod.get("status", {})
        waiting = {
            s.get("name"): (s.get("state") or {}).get("waiting", {}).get("reason", "")
            for key in ("initContainerStatuses", "containerStatuses")
            for s in status.get(key) or []
        }
        for key in ("initContainers", "containers"):
            for c in spec.get(key) or []:
                out.append(PodImage(
                    namespace=str(meta.get("namespace", "")), pod=str(meta.get("name", "")),
                    container=str(c.get("name", "")), image=str(c.get("image", "")),
                    waiting=str(waiting.get(c.get("name"), "") or ""),
                ))  # fmt: skip
    return out


@dataclass
class ImageReport:
    """What the check found."""

    checked: int = 0
    not_carried: list[PodImage] = field(default_factory=list)
    stuck: list[tuple[PodImage, CarriedImage | None]] = field(default_factory=list)

    def stuck_lines(self) -> list[str]:
        """One line per container stuck on a pull, with who declared the image."""
        lines = []
        for c, carried in self.stuck:
            if carried is None:
                who = "the cluster image does not carry it"
            else:
                sources = ", ".join(str(s) for s in carried.sources) or "its image list"
                who = f"carried (declared by {sources}), but the pull failed"
            lines.append(f"{c} ({c.waiting}): {who}")
        return lines


def check_images(
    conn: Executor, carried: list[CarriedImage], *, timeout: float, step: float = 3.0
) -> ImageReport:
    """Wait (up to ``timeout`` seconds) while containers are being created
    (pulls in progress), then report what is stuck on a failed pull (from the
    embedded registry a pull fails because the image is not there, not by
    chance) and what is not carried."""
    deadline = time.monotonic() + timeout
    while True:
        containers = pod_images(conn)
        busy = [c for c in containers if c.waiting in STARTING]
        if not busy or time.monotonic() >= deadline:
            break
        time.sleep(step)
    report = ImageReport(checked=len(containers))
    for c in containers:
        found = find_carried(carried, c.image)
        if found is None:
            report.not_carried.append(c)
        if c.waiting in PULLING:
            report.stuck.append((c, found))
    return report


def raise_if_stuck(report: ImageReport, image: str) -> None:
    """A ClusterError listing every container stuck on a pull."""
    if report.stuck:
        raise ClusterError(
            f"{len(report.stuck)} container(s) cannot pull their image "
            f"(the cluster runs {image}):\n  " + "\n  ".join(report.stuck_lines()),
            hint="an image the apps need must be carried: name it in a manifest, an "
            "imageList or the Kubefile's IMAGE instruction, and build again",
        )
