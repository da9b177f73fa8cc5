"""Shared by the Kubernetes end-to-end tests: the base image, kubectl on a
master, waiting, what a clean host looks like."""

from __future__ import annotations

import difflib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from kbuild.runtime.ssh import Connection
from tests.runtime.e2e_helpers import snapshot

REPO = Path(__file__).resolve().parents[2]
K8S = "v1.37.2"
BASE = f"kubernetes:{K8S}"
CACHE = Path(os.environ.get("KBUILD_K8S_CACHE", "/var/cache/kbuild/kubernetes"))
STORE = Path(os.environ.get("KBUILD_K8S_STORE", CACHE / "store"))
"""The kbuild store of the base image (KBUILD_K8S_STORE: one of a worktree's own)."""
KUBECTL = CACHE / K8S / "bin" / "kubectl"
DATA_ROOT = "/tmp/kbuild-k8s"  # tmpfs in the podman hosts (not overlayfs)
PAUSE = "3.10.2"
CP_TAINT = "node-role.kubernetes.io/control-plane"
VIP = "10.103.97.2"


def build_base(version: str = K8S) -> None:
    """The base image ``kubernetes:<version>`` (build.sh: cached binaries,
    cached layers) in STORE."""
    proc = subprocess.run(
        [str(REPO / "images/kubernetes/build.sh"), version],
        env={**os.environ, "KBUILD_ROOT": str(STORE), "PYTHONPATH": str(REPO),
             "KBUILD": f"{sys.executable} -m kbuild.cli.main"},
        capture_output=True, text=True, timeout=3600, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]


# what a host may keep of a cluster after delete: nothing
KUBE_LEFTOVERS = r"""
echo '--- kube processes'
ps -eo comm= | grep -E '^(kube|etcd|containerd|flanneld|coredns|registry|pause)' | sort -u
echo '--- links'; ip -o link show | grep -oE ': (cni0|flannel[^:@]*|veth[^:@]*|kube-ipvs0)' | sort
echo '--- lo'; ip -o addr show dev lo | awk '{print $4}' | sort
echo '--- routes'; ip route show | grep -v -e '^default' -e 'proto kernel' | sort
echo '--- mounts'
grep -E ' (/var/lib/kubelet|/run/containerd|/run/netns|/var/lib/containerd|/tmp/kbuild-k8s)' \
    /proc/self/mounts
echo '--- files'
ls -d /etc/kubernetes /var/lib/kubelet /var/lib/etcd /var/lib/cni /etc/cni /opt/cni \
    /etc/containerd /var/lib/containerd /run/containerd /run/flannel /root/.kube /etc/crictl.yaml \
    /etc/systemd/system/kubelet.service /etc/systemd/system/containerd.service \
    /etc/systemd/system/kbuild-registry.service /etc/systemd/system/kbuild-vip.service \
    /usr/local/bin/kubectl /run/kbuild-vip \
    /usr/local/bin/kubeadm 2>/dev/null
echo '--- units'
systemctl list-units --all --plain --no-legend |
    grep -E 'kubelet|containerd|kbuild-registry|kbuild-vip' | sort
"""


def wait(what: str, fn: Callable[[], bool], timeout: float, step: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if fn():
            return
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def netfilter_rules(container: str) -> str:
    """iptables/nft rules in a host container's network namespace (read from here)."""
    pid = subprocess.run(
        ["podman", "inspect", "-f", "{{.State.Pid}}", container],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout.strip()  # fmt: skip
    out = []
    for cmd in (["iptables-save"], ["ip6tables-save"], ["nft", "list", "ruleset"]):
        if shutil.which(cmd[0]) is None:
            continue
        proc = subprocess.run(
            ["nsenter", "-t", pid, "-n", *cmd], capture_output=True, text=True, timeout=60,
            check=False,
        )  # fmt: skip
        out.append(proc.stdout)
    return "\n".join(out)


def kube_rules(container: str) -> list[str]:
    return [
        line for line in netfilter_rules(container).splitlines()
        if any(m in line for m in ("KUBE-", "FLANNEL", "CNI-", "kube-proxy", "kbuild-vip"))
    ]  # fmt: skip


def kubectl(m0: Connection, args: str, *, check: bool = True) -> str:
    res = m0.run(f"kubectl --kubeconfig /etc/kubernetes/admin.conf {args}", check=check)
    return res.stdout


def ready_nodes(m0: Connection) -> dict[str, bool]:
    """Node address -> Ready, as the API server on ``m0`` answers ({} when it
    does not answer: why is printed)."""
    res = m0.run("kubectl --kubeconfig /etc/kubernetes/admin.conf get nodes -o json", check=False)
    out = res.stdout
    if not res.ok or not out.strip():
        print(f"[{m0.host}] kubectl get nodes: rc={res.exit_status}: {res.stderr.strip()[-500:]}")
        return {}
    ready: dict[str, bool] = {}
    for item in json.loads(out)["items"]:
        addr = next(a["address"] for a in item["status"]["addresses"] if a["type"] == "InternalIP")
        conds = {c["type"]: c["status"] for c in item["status"].get("conditions", [])}
        ready[addr] = conds.get("Ready") == "True"
    return ready


def assert_taints(m0: Connection, node: str, expected: list[tuple[str, str, str]]) -> None:
    """The node's taints become ``expected`` (the node lifecycle controller
    removes ``node.kubernetes.io/not-ready`` a moment after Ready, so wait)."""
    deadline = time.monotonic() + 90
    while node_taints(m0, node) != expected and time.monotonic() < deadline:
        time.sleep(3)
    assert node_taints(m0, node) == expected


def node_taints(m0: Connection, node: str) -> list[tuple[str, str, str]]:
    """``(key, value, effect)`` of a node's taints, sorted."""
    spec = json.loads(kubectl(m0, f"get node {node} -o json"))["spec"]
    return sorted((t["key"], t.get("value", ""), t["effect"]) for t in spec.get("taints", []))


def etcd_members(m: Connection, node: str = "h0") -> list[str]:
    """``etcdctl member list`` through the etcd pod of ``node``."""
    return kubectl(
        m, f"-n kube-system exec etcd-{node} -- etcdctl --cacert /etc/kubernetes/pki/etcd/ca.crt "
        "--cert /etc/kubernetes/pki/etcd/server.crt --key /etc/kubernetes/pki/etcd/server.key "
        "member list").splitlines()


def pods(m0: Connection, selector: str, ns: str = "default") -> list[dict[str, str]]:
    out = kubectl(m0, f"-n {ns} get pods -l {selector} -o json", check=False)
    if not out.strip():
        return []
    return [
        {"name": p["metadata"]["name"], "node": p["spec"].get("nodeName", ""),
         "phase": p["status"].get("phase", ""),
         "ready": str(all(c.get("ready") for c in p["status"].get("containerStatuses", [{}])))}
        for p in json.loads(out)["items"]
    ]  # fmt: skip


def bootstrap_tokens(m0: Connection) -> list[str]:
    """Every bootstrap token the cluster has (``kubeadm token list``)."""
    text = m0.run("kubeadm token list -o json").stdout.strip()
    decoder, pos, out = json.JSONDecoder(), 0, []
    while pos < len(text):
        obj, end = decoder.raw_decode(text, pos)
        out.append(str(obj["token"]))
        pos = end
        while pos < len(text) and text[pos].isspace():
            pos += 1
    return out


def assert_clean(conn: Connection, container: str, before: str, leftovers_before: str) -> None:
    for now, was in ((snapshot(conn, DATA_ROOT), before),
                     (conn.run("sh -c " + q(KUBE_LEFTOVERS)).stdout, leftovers_before)):
        diff = list(difflib.unified_diff(was.splitlines(), now.splitlines(), lineterm=""))
        assert now == was, f"{conn.name} is not as before:\n" + "\n".join(diff)
    assert kube_rules(container) == []


def q(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"


def clusterfile(name: str, image: str, password: str, masters: list[str], nodes: list[str],
                extra: str = "") -> str:  # fmt: skip
    """A Clusterfile of the e2e tests: DATA_ROOT, the flannel pod CIDR, one group
    per role (``extra``: more YAML appended, e.g. kubeadm documents)."""
    text = (
        "apiVersion: sealer.io/v2\nkind: Cluster\n"
        f"metadata: {{name: {name}}}\n"
        f"spec:\n  image: {image}\n  ssh: {{passwd: {password}}}\n"
        f"  dataRoot: {DATA_ROOT}\n  env: [PodCIDR=10.244.0.0/16]\n"
        "  hosts:\n"
        f"  - {{ips: [{', '.join(masters)}], roles: [master]}}\n"
    )
    if nodes:
        text += f"  - {{ips: [{', '.join(nodes)}], roles: [node]}}\n"
    return text + extra


def build_web(kbuild_build: Callable[..., object], workdir: Path, tag: str) -> Path:
    """The web test image (tests/kubernetes/web, a static Go binary) built as
    ``tag``; returns the directory holding the ``web`` binary."""
    here = Path(__file__).parent / "web"
    ctx = workdir / "web"
    ctx.mkdir()
    subprocess.run(
        ["go", "build", "-trimpath", "-ldflags", "-s -w", "-o", str(ctx / "web"),
         str(here / "main.go")],
        check=True, capture_output=True, timeout=300, env={**os.environ, "CGO_ENABLED": "0"},
    )  # fmt: skip
    kbuild_build("build", "--progress", "plain", "-f", str(here / "Kubefile"), "-t", tag,
                 str(ctx))  # fmt: skip
    return ctx
