"""End to end: the Kubernetes base image on podman hosts with no route out.

One cluster bring-up (1 master + 1 node, a third host joined later) on an
``--internal`` podman network, so any pull from outside would fail:

- ``kbuild run`` of an app image ``FROM kubernetes:v1.37.2`` whose manifest
  names a test web image (carried in ``registry/`` by the build's image
  collection, no registry step) and deploys it through CMDS → both nodes
  Ready, CoreDNS running, one web pod on each node, each answering through
  the Service (by its DNS name) to a pod on the other node;
- the kubeconfig in the cluster's state dir (0600) works from this machine,
  and ``kbuild exec -- kubectl get nodes`` works on the master;
- the Clusterfile is stored in the cluster, host labels are applied, host
  taints too (master0's control-plane taint removed by ``…:NoSchedule-``,
  a ``PreferNoSchedule`` one on the node);
- ``kbuild apply`` of the Clusterfile plus a third node with a ``NoSchedule``
  taint → the node Ready with exactly that taint; ``kbuild delete --nodes`` →
  it is gone from the cluster and its host is clean; the same host joined
  as a second master with ``kbuild join --masters`` (kubeadm's default
  control-plane taint, 2 etcd members) and deleted again (1 member, clean);
- offline completeness (tests/kubernetes/offline.py): an app image whose
  images come from a raw manifest (an image only in a test registry here),
  a helm chart (tag from APPENV), a custom resource and an ``imageList``,
  and a sealer-style image, both built with no registry step, run on the
  cluster: every pod Running, the releases installed, ``kbuild check``
  clean (the first app's web pods too: the images an earlier image carried
  stay served); an image naming an image nobody has fails to build;
- ``kbuild delete --all`` → both hosts clean (no kube processes, mounts,
  units, CNI interfaces, iptables rules of the cluster, or files).

The base image is built by ``images/kubernetes/build.sh`` into a kbuild store
kept next to the cached binaries (``/var/cache/kbuild/kubernetes/store``), so
a rerun only checks the cache.
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
import stat
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kbuild.layerstore import Store, carried_images
from tests.fixtures.hosts import HostSet
from tests.kubernetes.helpers import (
    BASE,
    CP_TAINT,
    DATA_ROOT,
    KUBE_LEFTOVERS,
    KUBECTL,
    PAUSE,
    STORE,
    VIP,
    assert_clean,
    assert_taints,
    bootstrap_tokens,
    build_base,
    build_web,
    etcd_members,
    kubectl,
    node_taints,
    pods,
    q,
    ready_nodes,
    wait,
)
from tests.kubernetes.offline import OfflineImages, build_offline_images, run_offline_apps
from tests.kubernetes.secrets import Watch
from tests.runtime.e2e_helpers import Env, kbuild, snapshot

pytestmark = [pytest.mark.integration, pytest.mark.slow]

APP = "kube-web:e2e"
WEB = "docker.io/kbuild-test/web:e2e"
CLUSTER = "k8s-e2e"
FLANNEL = "v0.28.10"
HERE = Path(__file__).parent

@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    """The base image (build.sh, cached) and the app image with the web image."""
    base = tmp_path_factory.mktemp("k8s-e2e")
    e = Env(root=STORE, state=base / "state")
    build_base()
    build_web(lambda *a: kbuild(e, *a), base, WEB)
    app_ctx = base / "app"
    app_ctx.mkdir()
    shutil.copy(HERE / "web" / "web.yaml", app_ctx / "web.yaml")
    kbuild(e, "build", "--progress", "plain", "-f", str(HERE / "web" / "app.Kubefile"),
           "--build-arg", f"BASE={BASE}", "-t", APP, str(app_ctx), timeout=600)  # fmt: skip
    store = Store(STORE)
    carried = {c.name: c for c in carried_images(store, APP)}
    assert carried[WEB].digest == store.resolve(WEB).digest
    assert [str(s) for s in carried[WEB].sources] == [
        "manifests/web.yaml:18 (Deployment/web container web)"]
    # the base's component images come with the base, collected the same way
    assert {f"registry.k8s.io/pause:{PAUSE}", f"docker.io/flannel/flannel:{FLANNEL}"} <= set(
        carried)
    yield e


@pytest.fixture(scope="module")
def offline(env: Env, helm: Path, tmp_path_factory: pytest.TempPathFactory) -> OfflineImages:
    """The offline-completeness app images (tests/kubernetes/offline.py); the web
    image's build context is where ``env`` built it."""
    return build_offline_images(env, WEB, env.state.parent / "web", helm,
                                tmp_path_factory.mktemp("offline"))


@pytest.fixture(scope="module")
def hosts(podman_hosts: Callable[..., HostSet]) -> HostSet:
    return podman_hosts(3, internal=True)


def test_run_join_delete(env: Env, offline: OfflineImages, hosts: HostSet, tmp_path: Path
                         ) -> None:
    h0, h1, h2 = hosts
    conns = {h.ip: hosts.connect(h) for h in hosts}
    m0 = conns[h0.ip]
    before = {ip: snapshot(c, DATA_ROOT) for ip, c in conns.items()}
    leftovers_before = {ip: c.run("sh -c " + q(KUBE_LEFTOVERS)).stdout for ip, c in conns.items()}
    # the network really has no way out
    assert not m0.run("ip route show default").stdout.strip()

    # secrets this run handles: none may show in a process list, kbuild's
    # output or a host's journal (the certificate key is chosen here so the
    # test knows it; join tokens are read from the cluster at the end)
    cert_key = secrets.token_hex(32)
    watch = Watch([h.container for h in hosts])

    def kb(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        with watch.processes():
            proc = kbuild(env, *args, timeout=timeout)
        watch.texts += [(f"kbuild {args[0]} output", proc.stdout + proc.stderr)]
        return proc

    cf = tmp_path / "Clusterfile"
    cf.write_text(
        "apiVersion: sealer.io/v2\nkind: Cluster\n"
        f"metadata: {{name: {CLUSTER}}}\n"
        "spec:\n"
        f"  image: {APP}\n"
        f"  ssh: {{passwd: {h0.root_password}}}\n"
        f"  dataRoot: {DATA_ROOT}\n"
        "  env: [PodCIDR=10.244.0.0/16]\n"
        "  hosts:\n"
        f"  - {{ips: [{h0.ip}], roles: [master], taints: [{CP_TAINT}:NoSchedule-]}}\n"
        f"  - {{ips: [{h1.ip}], roles: [node], labels: {{kbuild.test/role: worker}},\n"
        "     taints: ['kbuild.test/pref=yes:PreferNoSchedule']}\n"
    )
    init_doc = ("---\napiVersion: kubeadm.k8s.io/v1beta4\nkind: InitConfiguration\n"
                f"certificateKey: {cert_key}\n")  # fmt: skip
    cf.write_text(cf.read_text() + init_doc)
    started = time.monotonic()
    out = kb("run", "-f", str(cf), "--progress", "plain", timeout=900)
    assert h0.root_password not in out.stdout + out.stderr

    wait("both nodes Ready",
          lambda: ready_nodes(m0) == {h0.ip: True, h1.ip: True}, 240)  # fmt: skip
    print(f"run → both nodes Ready in {time.monotonic() - started:.0f}s")
    wait("CoreDNS running", lambda: bool(dns := pods(m0, "k8s-app=kube-dns", "kube-system"))
          and all(p["phase"] == "Running" and p["ready"] == "True" for p in dns), 180)  # fmt: skip

    # the sandbox and every image came from the embedded registry, over TLS with the cluster CA
    hosts_toml = m0.run("cat /etc/containerd/certs.d/_default/hosts.toml").stdout
    assert 'server = "https://sea.hub:5000"' in hosts_toml
    # every host serves its own registry/; the node reaches the API through the VIP
    for c in (m0, conns[h1.ip]):
        assert c.run("getent hosts sea.hub").stdout.split()[0] == "127.0.0.1"
        reg_key = f"{DATA_ROOT}/{CLUSTER}/pki/registry.key"
        assert c.run(f"stat -c %a {reg_key}").stdout.strip() == "600"
    assert m0.run("getent hosts apiserver.cluster.local").stdout.split()[0] == h0.ip
    assert conns[h1.ip].run("getent hosts apiserver.cluster.local").stdout.split()[0] == VIP
    assert json.loads(conns[h1.ip].run("cat /run/kbuild-vip/status.json").stdout)[
        "programmed"] == [h0.ip]
    sdir = env.state / CLUSTER
    for name in ("ca.key", f"registry-{h0.ip}.key", f"registry-{h1.ip}.key"):
        assert stat.S_IMODE((sdir / "pki" / name).stat().st_mode) == 0o600

    # the test deployment: one pod per node, each reaches the Service by name from
    # the other node (through CoreDNS, kube-proxy and flannel's vxlan)
    wait("web pods running on both nodes", lambda: sorted(
        p["node"] for p in pods(m0, "app=web") if p["phase"] == "Running" and p["ready"] == "True"
    ) == ["h0", "h1"], 180)  # fmt: skip
    web_pods = {p["node"]: p["name"] for p in pods(m0, "app=web")}
    for client, other in (("h1", "h0"), ("h0", "h1")):
        def answered(client: str = client, other: str = other) -> bool:
            res = m0.run(
                "kubectl --kubeconfig /etc/kubernetes/admin.conf exec "
                f"{web_pods[client]} -- /web get http://web.default.svc.cluster.local/ 10",
                check=False,
            )
            return f"web on {other}\n" in res.stdout

        wait(f"an answer from the pod on {other} to the pod on {client}", answered, 90)

    # kubeconfig on this machine (0600), reaching the API server from here
    kcfg = sdir / "kubeconfig"
    assert stat.S_IMODE(kcfg.stat().st_mode) == 0o600
    assert f"server: https://{h0.ip}:6443" in kcfg.read_text()
    nodes = subprocess.run(
        [str(KUBECTL), "--kubeconfig", str(kcfg), "get", "nodes", "-o", "name"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout.split()  # fmt: skip
    assert sorted(nodes) == ["node/h0", "node/h1"]
    res = kbuild(env, "exec", "--roles", "master", "--", "kubectl", "get", "nodes")
    assert " Ready " in res.stdout and "h1" in res.stdout

    # proven at run: `run` checked the images after launch; `kbuild check` does it
    # again; a pod whose image nobody carries is named, with the pull it waits on
    assert "none stuck" in out.stdout + out.stderr
    res = kbuild(env, "check", "--cluster-name", CLUSTER, "--progress", "plain")
    assert "run carried images" in res.stdout
    kubectl(m0, "create deployment nowhere --image=quay.io/kbuild-test/nowhere:1")
    res = kbuild(env, "check", "--cluster-name", CLUSTER, "--timeout", "120",
                 "--progress", "plain", check=False)  # fmt: skip
    assert res.returncode == 1, res.stdout + res.stderr
    assert re.search(r"nowhere-\S+ container nowhere: quay.io/kbuild-test/nowhere:1 "
                     r"\((ErrImagePull|ImagePullBackOff)\): the cluster image does not carry it",
                     res.stderr), res.stderr  # fmt: skip
    kubectl(m0, "delete deployment nowhere --wait=true")

    # the Clusterfile in the cluster, labels applied
    stored = kubectl(m0, "-n kube-system get secret kbuild-clusterfile "
                          "-o jsonpath={.data.Clusterfile} | base64 -d")  # fmt: skip
    assert f"name: {CLUSTER}" in stored and h1.ip in stored
    assert h0.root_password not in kubectl(m0, "-n kube-system get secret kbuild-clusterfile "
                                                "-o jsonpath={.data.Clusterfile} | base64 -d")
    role = kubectl(m0, "get node h1 -o jsonpath='{.metadata.labels.kbuild\\.test/role}'")
    assert role == "worker"
    # taints: the removal made master0 schedulable, the node got its PreferNoSchedule
    assert_taints(m0, "h0", [])
    assert_taints(m0, "h1", [("kbuild.test/pref", "yes", "PreferNoSchedule")])

    # join a third node through the Clusterfile (`kbuild apply`), with a taint of its own
    cf2 = tmp_path / "Clusterfile2"
    cf2.write_text(cf.read_text().replace(init_doc, "") + f"  - {{ips: [{h2.ip}], roles: [node], "
                   "taints: ['kbuild.test/late=yes:NoSchedule']}\n" + init_doc)  # fmt: skip
    kb("apply", "-f", str(cf2), "--progress", "plain", timeout=600)
    wait("the third node Ready", lambda: ready_nodes(m0).get(h2.ip) is True, 240)
    assert_taints(m0, "h2", [("kbuild.test/late", "yes", "NoSchedule")])
    assert node_taints(m0, "h0") == []
    assert h2.ip in kubectl(m0, "-n kube-system get secret kbuild-clusterfile "
                                 "-o jsonpath={.data.Clusterfile} | base64 -d")  # fmt: skip

    # delete it again: gone from the cluster, its host as before
    kb("delete", "--cluster-name", CLUSTER, "--nodes", h2.ip, "--progress", "plain")
    assert h2.ip not in ready_nodes(m0)
    assert_clean(conns[h2.ip], hosts[2].container, before[h2.ip], leftovers_before[h2.ip])

    # the same host as a second master (certificate key, etcd member), then gone again
    kb("join", "--cluster-name", CLUSTER, "--masters", h2.ip, "--progress", "plain")
    wait("the second master Ready", lambda: ready_nodes(m0).get(h2.ip) is True, 240)
    assert "control-plane" in kubectl(m0, "get node h2 -o jsonpath='{.metadata.labels}'")
    # no taints listed for it: kubeadm's default control-plane taint
    assert_taints(m0, "h2", [(CP_TAINT, "", "NoSchedule")])
    assert len(etcd_members(m0)) == 2
    kb("delete", "--cluster-name", CLUSTER, "--masters", h2.ip, "--progress", "plain")
    assert h2.ip not in ready_nodes(m0)
    assert [m.split(", ")[2] for m in etcd_members(m0)] == ["h0"]
    assert_clean(conns[h2.ip], hosts[2].container, before[h2.ip], leftovers_before[h2.ip])

    # offline completeness: app images whose every image the build found and carried
    run_offline_apps(env, m0, sdir / "Clusterfile", tmp_path, offline, WEB)

    # no secret of the run in a process list, kbuild's output or a journal
    tokens = bootstrap_tokens(m0)
    assert len(tokens) >= 3  # init's, and one per join (apply, join --masters)
    watch.journals()
    found = watch.found({"SSH password": h0.root_password, "certificate key": cert_key,
                         **{f"join token {i}": tok for i, tok in enumerate(tokens)}})  # fmt: skip
    assert found == [] and watch.samples > 20, (found, watch.samples)

    # delete --all: every host as before
    kbuild(env, "delete", "--all", "--cluster-name", CLUSTER, "--progress", "plain", timeout=600)
    for h in (h0, h1):
        assert_clean(conns[h.ip], h.container, before[h.ip], leftovers_before[h.ip])
    assert not sdir.exists()
