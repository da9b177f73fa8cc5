"""The examples/ directory builds, and gives the images its READMEs describe."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from kbuild.layerstore import META_KEY, Descriptor, Store
from tests.registry.images import make_image

from .util import Built, run_build, write_tree

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture()
def base(store: Store, tmp_path: Path) -> str:
    """A small stand-in for a cluster base image, and for the images the examples name."""
    ctx = tmp_path / "base"
    write_tree(ctx, {"bin/kubectl": "#!/bin/sh\n", "etc/kubeadm.yml": "kind: x\n"})
    run_build(store, ctx, "FROM scratch\nCOPY bin /bin\nCOPY etc /etc\n", tags=["base:test"])
    for image in ("docker.io/kubernetesui/dashboard:v2.7.0", "docker.io/library/nginx:1.27"):
        make_image(store, image, [{"bin/app": image.encode()}])
    # busybox as a multi-arch index (multi-stage builds for arm64)
    manifests = [
        Descriptor(d.media_type, d.digest, d.size, platform={"os": "linux", "architecture": a})
        for a in ("amd64", "arm64")
        for d in [make_image(store, None, [{"bin/busybox": a.encode()}], arch=a)]]
    store.tag("docker.io/library/busybox:1.36", store.write_index(manifests))
    return "base:test"


def _carried(built: Built) -> list[str]:
    return [i["name"] for i in _cluster(built)["images"]]


def _cluster(built: Built) -> dict:
    return json.loads(built.config["config"]["Labels"][META_KEY])


def test_dashboard(store: Store, base: str, tmp_path: Path) -> None:
    built = run_build(store, EXAMPLES / "dashboard", build_args={"BASE": base}, tags=["d:1"])
    assert len(built.layers) == 4  # the base's two, the manifest, registry/
    assert "manifests/dashboard.yaml" in built.layer_members(2)
    assert _cluster(built)["cmd"] == ["kubectl apply -f manifests/dashboard.yaml"]
    assert _carried(built) == ["docker.io/kubernetesui/dashboard:v2.7.0"]
    again = run_build(store, EXAMPLES / "dashboard", build_args={"BASE": base}, tags=["d:1"])
    assert again.cached == [True, True]
    assert again.result.manifest.digest == built.result.manifest.digest


def test_app_launch(store: Store, base: str, helm_env: Path) -> None:
    built = run_build(store, EXAMPLES / "app-launch", build_args={"BASE": base})
    cluster = _cluster(built)
    apps = {a["name"]: a for a in cluster["apps"]}
    assert [apps[n]["type"] for n in ("prepare", "web-config", "nginx")] == [
        "shell", "kube", "helm"]
    assert apps["web-config"]["cmds"] == ["kubectl apply -f namespace.yaml",
                                          "kubectl apply -f configmap.yaml"]
    assert "$NAMESPACE" in apps["nginx"]["cmds"][0]  # expanded at run time, with APPENV
    assert apps["nginx"]["env"] == {"REPLICAS": "2", "NAMESPACE": "web"}
    assert cluster["launch"] == ["prepare", "web-config", "nginx"]
    assert cluster["kubeVersion"] == ">=1.28.0 <1.38.0"
    assert "application/apps/nginx/templates/service.yaml" in built.layer_members(4)
    assert apps["nginx"]["cmds"][0].startswith("helm upgrade --install nginx . ")
    assert _carried(built) == ["docker.io/library/nginx:1.27"]


@pytest.mark.skipif(os.geteuid() != 0, reason="RUN needs root")
def test_multi_stage(store: Store, base: str, tmp_path: Path) -> None:
    built = run_build(store, EXAMPLES / "multi-stage", build_args={"BASE": base},
                      platform="linux/arm64")
    root = built.rootfs(tmp_path / "r")
    assert "arm64" in (root / "bin/appctl").read_text()
    assert os.access(root / "bin/appctl", os.X_OK)
    assert 'app.kubernetes.io/version: "1.4.2"' in (root / "manifests/app.yaml").read_text()
    assert (root / "etc/kubeadm.yml").exists()  # the base's files
    newer = run_build(store, EXAMPLES / "multi-stage", platform="linux/arm64",
                      build_args={"BASE": base, "VERSION": "1.4.3"})
    # tools stage and its copy are cached; the render step and its copy rerun; the
    # images are the same, so is their layer
    assert sorted(newer.cached) == [False, False, True, True, True, True]
    images = _cluster(newer)["images"]
    assert [(i["name"], i["platforms"]) for i in images] == [
        ("docker.io/library/busybox:1.36", ["linux/arm64"])]
    # the index is carried whole (its digest is what the tag names), only arm64's manifest
    index = store.resolve("docker.io/library/busybox:1.36")
    assert images[0]["digest"] == index.digest
    layer = newer.layer_members(len(newer.layers) - 1)
    blobs = {n.split("/")[-2] for n in layer if n.endswith("/data")}
    arm64, amd64 = (m["digest"][7:] for m in
                    sorted(store.read_json(index.digest)["manifests"],
                           key=lambda m: m["platform"]["architecture"] != "arm64"))
    assert index.digest[7:] in blobs and arm64 in blobs and amd64 not in blobs
