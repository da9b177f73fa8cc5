"""The run-time image check (issue 9) against what a master's kubectl answers:
carried images pass, a pod stuck on a pull is an error naming the image and
the app that declared it, an image nobody carries is reported. On a real
cluster: tests/kubernetes/test_kubernetes_e2e.py (``kbuild check``)."""

from __future__ import annotations

import json

import pytest

from kbuild.errors import ClusterError
from kbuild.layerstore import CarriedImage, ImageSource
from kbuild.runtime.drivers.kubernetes.imagecheck import check_images, raise_if_stuck
from tests.runtime.recording import Facts, Log, RecordingExecutor, Rule

WEB = CarriedImage(
    name="docker.io/kbuild-test/web:e2e", repository="kbuild-test/web", tag="e2e",
    digest="sha256:" + "a" * 64, media_type="",
    sources=[ImageSource("application/apps/web/web.yaml", 18, "web", "Deployment/web")],
)  # fmt: skip
PAUSE = CarriedImage(name="registry.k8s.io/pause:3.10.2", repository="pause", tag="3.10.2",
                     digest="sha256:" + "b" * 64, media_type="")  # fmt: skip


def _pod(name: str, image: str, waiting: str = "", init: str | None = None) -> dict[str, object]:
    spec: dict[str, object] = {"containers": [{"name": "c", "image": image}]}
    statuses: dict[str, object] = {
        "containerStatuses": [{"name": "c", "state": {"waiting": {"reason": waiting}}
                               if waiting else {"running": {}}}]}  # fmt: skip
    if init:
        spec["initContainers"] = [{"name": "i", "image": init}]
        statuses["initContainerStatuses"] = [{"name": "i", "state": {"terminated": {}}}]
    return {"metadata": {"namespace": "default", "name": name}, "spec": spec, "status": statuses}


def _host(*pods: dict[str, object]) -> RecordingExecutor:
    answer = json.dumps({"items": list(pods)})
    return RecordingExecutor("m0", Facts({"*": [Rule("get pods -A -o json", answer)]}), Log())


def test_carried_images_pass() -> None:
    # the embedded registry mirrors every registry: sea.hub:5000/pause is registry.k8s.io/pause
    host = _host(_pod("web-1", "docker.io/kbuild-test/web:e2e", init="sea.hub:5000/pause:3.10.2"))
    report = check_images(host, [WEB, PAUSE], timeout=0)
    assert report.checked == 2 and not report.not_carried and not report.stuck
    raise_if_stuck(report, "app:1")


def test_stuck_pull_names_image_and_app() -> None:
    host = _host(_pod("web-1", "docker.io/kbuild-test/web:e2e", "ImagePullBackOff"),
                 _pod("x-1", "quay.io/nobody/x:1", "ErrImagePull"))  # fmt: skip
    report = check_images(host, [WEB], timeout=0)
    assert [str(c) for c in report.not_carried] == ["default/x-1 container c: quay.io/nobody/x:1"]
    with pytest.raises(ClusterError) as info:
        raise_if_stuck(report, "app:1")
    text = str(info.value)
    assert "2 container(s) cannot pull" in text
    assert "quay.io/nobody/x:1 (ErrImagePull): the cluster image does not carry it" in text
    assert "application/apps/web/web.yaml:18 (app web, Deployment/web)" in text


def test_waits_while_pods_start() -> None:
    # still creating at the deadline: reported as it is, not an error (no pull failed)
    host = _host(_pod("web-1", "docker.io/kbuild-test/web:e2e", "ContainerCreating"))
    report = check_images(host, [WEB], timeout=1, step=0.2)
    assert len(host.log.commands["m0"]) >= 3
    assert not report.stuck
