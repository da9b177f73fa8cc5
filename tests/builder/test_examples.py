"""The examples/ directory builds, and gives the images its READMEs describe."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from kbuild.layerstore import META_KEY, Store

from .util import Built, run_build, write_tree

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture()
def base(store: Store, tmp_path: Path) -> str:
    """A small stand-in for a cluster base image."""
    ctx = tmp_path / "base"
    write_tree(ctx, {"bin/kubectl": "#!/bin/sh\n", "etc/kubeadm.yml": "kind: x\n"})
    run_build(store, ctx, "FROM scratch\nCOPY bin /bin\nCOPY etc /etc\n", tags=["base:test"])
    return "base:test"


def _cluster(built: Built) -> dict:
    return json.loads(built.config["config"]["Labels"][META_KEY])


def test_dashboard(store: Store, base: str, tmp_path: Path) -> None:
    built = run_build(store, EXAMPLES / "dashboard", build_args={"BASE": base}, tags=["d:1"])
    assert len(built.layers) == 3
    assert "manifests/dashboard.yaml" in built.layer_members(2)
    assert _cluster(built)["cmd"] == ["kubectl apply -f manifests/dashboard.yaml"]
    again = run_build(store, EXAMPLES / "dashboard", build_args={"BASE": base}, tags=["d:1"])
    assert again.cached == [True]
    assert again.result.manifest.digest == built.result.manifest.digest


def test_app_launch(store: Store, base: str) -> None:
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
    assert "application/apps/nginx/nginx/templates/service.yaml" in built.layer_members(4)


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
    # tools stage and its copy are cached; the render step and its copy rerun
    assert sorted(newer.cached) == [False, False, True, True, True]
