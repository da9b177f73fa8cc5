"""Offline completeness on a real cluster: the part of tests/kubernetes/test_kubernetes_e2e.py
that runs the app images of ``tests/kubernetes/offline``.

- ``build_offline_images``: the app image (a raw manifest whose image exists
  only in a test registry on this machine, a helm chart whose image tag comes
  from APPENV, a custom resource naming an image, an ``imageList`` entry no
  file names) and a sealer-style image, built with no registry step; an
  image naming an image nobody has fails to build, naming image and file.
- ``run_offline_apps``: both run on the running cluster (no route out):
  every pod Running from the embedded registry, the helm releases installed,
  the images no pod runs pullable on the hosts, ``kbuild check`` clean.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from kbuild.layerstore import Store
from kbuild.runtime.ssh import Connection
from tests.fixtures.registry import RegistryServer, free_port
from tests.kubernetes.helpers import kubectl, pods, wait
from tests.runtime.e2e_helpers import Env, kbuild

HERE = Path(__file__).parent / "offline"
OFFLINE = "offline-apps:e2e"
SEALER = "sealer-style:e2e"
# the test web image under the names the apps use (tagged in the store)
TAGGED = {
    "hello": "docker.io/kbuild-test/hello:helm",  # the chart's image, tag from APPENV
    "worker": "docker.io/kbuild-test/worker:cr",  # named by the custom resource only
    "operand": "docker.io/kbuild-test/operand:list",  # named by imageList only
    "es": "docker.io/kbuild-test/es:7",  # sealer-style: kubectl apply -f es.yaml
    "nginx": "docker.io/kbuild-test/nginx:1.27",  # sealer-style: helm install nginx .
}
API_YAML = """apiVersion: apps/v1
kind: Deployment
metadata:
  name: api
spec:
  selector: {{matchLabels: {{app: api}}}}
  template:
    metadata: {{labels: {{app: api}}}}
    spec:
      containers:
      - name: api
        image: {image}
"""


@dataclass
class OfflineImages:
    """What ``build_offline_images`` made."""

    api: str  # the reference that exists only in the (stopped) test registry


def build_offline_images(env: Env, web: str, web_ctx: Path, helm: Path, work: Path
                         ) -> OfflineImages:
    """Build the two app images into env's store (see the module doc); ``web``
    is the test web image there, ``web_ctx`` its build context."""
    # the api image: built in another store, pushed to a registry on this machine,
    # so the build must fetch it (its store never had it)
    elsewhere = Env(root=work / "elsewhere", state=work / "elsewhere-state")
    kbuild(elsewhere, "build", "--progress", "plain", "-f", str(HERE.parent / "web" / "Kubefile"),
           "-t", "api:1", str(web_ctx))  # fmt: skip
    (work / "registry").mkdir()
    registry = RegistryServer(work / "registry", free_port())
    api = f"{registry.host}/team/api:1"
    try:
        registry.start()
        kbuild(elsewhere, "push", "--tls-verify", "false", "api:1", api)
        for ref in TAGGED.values():
            kbuild(env, "tag", web, ref)
        ctx = work / "offline"
        shutil.copytree(HERE, ctx)
        (ctx / "api.yaml").write_text(API_YAML.format(image=api))
        kbuild(env, "build", "--progress", "plain", "--tls-verify", "false", "--helm", str(helm),
               "-f", str(ctx / "Kubefile"), "-t", OFFLINE, str(ctx), timeout=600)  # fmt: skip
    finally:
        registry.stop()
    pushed = Store(elsewhere.root).resolve("api:1").digest
    shutil.rmtree(elsewhere.root)

    # each image carried, pinned, with the file that wants it
    shown = json.loads(kbuild(env, "inspect", "--format", "json", OFFLINE).stdout)
    carried = {i["name"]: i for i in shown["cluster"]["images"]}
    assert carried[api]["digest"] == pushed, carried[api]  # pinned to what the registry served
    expect = {
        api: "application/apps/api/api.yaml:12 (Deployment/api container api)",
        TAGGED["hello"]: "application/apps/hello (hello/templates/deployment.yaml: Deployment",
        TAGGED["worker"]: "application/apps/widgets/widget.yaml:6 (Widget/gadget",
        TAGGED["operand"]: "manifests/imageList:2",
    }
    for ref, source in expect.items():
        assert any(_where(s).startswith(source) for s in carried[ref]["sources"]), (
            ref, carried[ref])
    assert "docker.io/kbuild-test/hello:only-in-values" not in carried

    # an image nobody has: the build fails with the image and the file named, exit 2
    failed = kbuild(env, "build", "--progress", "plain", "-f", str(ctx / "unknown.Kubefile"),
                    "-t", "unknown:e2e", str(ctx), check=False, timeout=600)  # fmt: skip
    assert failed.returncode == 2, failed.stdout + failed.stderr
    assert "quay.io/kbuild-test/nobody:1" in failed.stderr, failed.stderr
    assert "manifests/nobody.yaml:8" in failed.stderr, failed.stderr
    assert kbuild(env, "inspect", "unknown:e2e", check=False).returncode != 0

    kbuild(env, "build", "--progress", "plain", "--helm", str(helm), "-f",
           str(ctx / "sealer" / "Kubefile"), "-t", SEALER, str(ctx / "sealer"), timeout=600)
    return OfflineImages(api=api)


def _where(source: dict[str, str]) -> str:
    """``file:line (detail)`` of a source as ``inspect --format json`` gives it."""
    where = f"{source['file']}:{source['line']}" if source.get("line") else source["file"]
    return where + (f" ({source['detail']})" if source.get("detail") else "")


def run_offline_apps(env: Env, m0: Connection, clusterfile: Path, work: Path,
                     images: OfflineImages, earlier: str) -> None:
    """Run both app images on the running cluster and check what they promise;
    ``earlier`` is an image the cluster's first image carried, which its pods
    still run."""
    def run(image: str) -> str:
        cf = work / f"Clusterfile.{image.split(':')[0]}"
        cf.write_text(re.sub(r"image: \S+", f"image: {image}", clusterfile.read_text(), count=1))
        out = kbuild(env, "run", "-f", str(cf), "--progress", "plain", timeout=900)
        return out.stdout + out.stderr

    out = run(OFFLINE)
    assert "none stuck" in out, out[-3000:]
    running(m0, {"api": images.api, "hello": TAGGED["hello"]})
    releases = {r["name"]: r for r in json.loads(
        m0.run("helm --kubeconfig /etc/kubernetes/admin.conf list -A -o json").stdout)}
    assert releases["hello"]["status"] == "deployed", releases
    assert "gadget" in kubectl(m0, "get widgets.kbuild.test -o name")
    # images no pod runs (the custom resource's, imageList's) are served on the hosts
    for ref in (TAGGED["worker"], TAGGED["operand"]):
        m0.run(f"crictl pull {ref}")
    assert not m0.run("crictl pull docker.io/kbuild-test/not-carried:1", check=False).ok
    # the first image's container images are still served (its pods run them): the
    # registry answers for it (a pull into a namespace of its own resolves it there)
    ctr = "ctr -n kbuild-e2e images"
    m0.run(f"{ctr} pull --hosts-dir /etc/containerd/certs.d {earlier} && {ctr} rm {earlier}")
    res = kbuild(env, "check", "--cluster-name", clusterfile.parent.name, "--progress", "plain")
    assert "run carried images" in res.stdout, res.stdout

    out = run(SEALER)
    assert "none stuck" in out, out[-3000:]
    running(m0, {"es": TAGGED["es"], "nginx": TAGGED["nginx"]})
    releases = {r["name"]: r for r in json.loads(
        m0.run("helm --kubeconfig /etc/kubernetes/admin.conf list -A -o json").stdout)}
    assert releases["nginx"]["status"] == "deployed", releases


def running(m0: Connection, want: dict[str, str]) -> None:
    """Wait until the pod of each app label in ``want`` runs, ready, that image."""
    for app, image in want.items():
        def ok(app: str = app) -> bool:
            return any(p["phase"] == "Running" and p["ready"] == "True"
                       for p in pods(m0, f"app={app}"))

        wait(f"the {app} pod running", ok, 180)
        shown = kubectl(m0, f"get pods -l app={app} "
                            "-o jsonpath='{.items[0].spec.containers[0].image}'")
        assert shown == image, (app, shown)
