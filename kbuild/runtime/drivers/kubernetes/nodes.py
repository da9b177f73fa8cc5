"""Nodes of a running cluster, through kubectl on a master: readiness, versions,
etcd's health, cordon and drain (PodDisruptionBudgets respected)."""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass

from kbuild.errors import ClusterError, HostError
from kbuild.runtime.drivers.kubernetes.kubectl import KUBECTL
from kbuild.runtime.executor import Executor

__all__ = [
    "NodeInfo",
    "drain",
    "etcd_healthy",
    "nodes",
    "uncordon",
    "wait_control_plane",
    "wait_node",
]

#: the control-plane components a master runs as static pods, at the cluster's version
CONTROL_PLANE = ("kube-apiserver", "kube-controller-manager", "kube-scheduler")
#: seconds a master's control plane must stay as wanted before an upgrade moves on: a
#: kubelet that restarted a moment ago recreates the mirror pods whose hash it now
#: computes differently (they vanish a while, their pods may restart)
STEADY = 15.0


@dataclass(frozen=True)
class NodeInfo:
    """One node as the API server reports it."""

    name: str
    ip: str
    ready: bool
    kubelet: str
    unschedulable: bool


def nodes(conn: Executor, *, wait: float = 0.0) -> dict[str, NodeInfo]:
    """Every node by InternalIP. ``wait``: seconds to keep asking while the API
    server refuses or forbids (one restarted a moment ago does both a while)."""
    deadline = time.monotonic() + wait
    while True:
        try:
            text = conn.run(f"{KUBECTL} get nodes -o json").stdout
            break
        except HostError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(3)
    data = json.loads(text or "{}")
    out: dict[str, NodeInfo] = {}
    for item in data.get("items", []):
        status = item.get("status", {})
        ip = next((a["address"] for a in status.get("addresses", [])
                   if a.get("type") == "InternalIP"), "")  # fmt: skip
        conds = {c.get("type"): c.get("status") for c in status.get("conditions", [])}
        out[ip] = NodeInfo(
            name=item["metadata"]["name"],
            ip=ip,
            ready=conds.get("Ready") == "True",
            kubelet=status.get("nodeInfo", {}).get("kubeletVersion", ""),
            unschedulable=bool(item.get("spec", {}).get("unschedulable")),
        )
    return out


def etcd_healthy(conn: Executor) -> bool:
    """The API server's own view of etcd (``/readyz/etcd``)."""
    res = conn.run(f"{KUBECTL} get --raw /readyz/etcd", check=False)
    return res.ok and res.stdout.strip() == "ok"


def drain(conn: Executor, node: str, *, timeout: float) -> None:
    """Cordon and drain ``node`` (evictions: PodDisruptionBudgets are respected;
    DaemonSet pods stay); bounded by ``timeout`` seconds."""
    q = shlex.quote(node)
    conn.run(f"{KUBECTL} cordon {q}")
    res = conn.run(
        f"{KUBECTL} drain {q} --ignore-daemonsets --delete-emptydir-data "
        f"--timeout={shlex.quote(str(int(timeout)))}s",
        check=False,
        timeout=timeout + 60,
    )
    if not res.ok:
        tail = "\n".join((res.stdout + res.stderr).strip().splitlines()[-8:])
        raise ClusterError(
            f"node {node} did not drain within {timeout:.0f}s:\n{tail}",
            hint="a PodDisruptionBudget may allow no eviction; the node stays cordoned, "
            "`kbuild upgrade` again continues here",
        )


def uncordon(conn: Executor, node: str) -> None:
    """Let the scheduler use ``node`` again."""
    conn.run(f"{KUBECTL} uncordon {shlex.quote(node)}")


def _until(ask: Callable[[], str], *, timeout: float, steady: float = 0.0) -> str:
    """Ask every 3 s until ``ask`` says nothing lags (``""``) and keeps saying
    so for ``steady`` seconds: then ``""``; at the deadline, what lagged last.
    An API server that refuses or forbids (one restarted a moment ago does both
    a while) lags: its last answer is named."""
    deadline = time.monotonic() + timeout
    since: float | None = None
    while True:
        try:
            lag = ask()
        except HostError as exc:
            lag = f"last answer: {str(exc).splitlines()[-1].strip()}"
        now = time.monotonic()
        since = None if lag else (now if since is None else since)
        if since is not None and now - since >= steady:
            return ""
        if now >= deadline:
            return lag or "changed again within the last seconds"
        time.sleep(3)


def wait_node(conn: Executor, ip: str, *, version: str, timeout: float) -> None:
    """Wait (bounded) until the node of ``ip`` is Ready with kubelet ``version``."""

    def ask() -> str:
        info = nodes(conn).get(ip)
        if info is None:
            return "no node with this InternalIP"
        if info.ready and info.kubelet == version:
            return ""
        return f"{'Ready' if info.ready else 'not Ready'}, kubelet {info.kubelet}"

    lag = _until(ask, timeout=timeout)
    if lag:
        raise ClusterError(
            f"node {ip} is not Ready with kubelet {version} after {timeout:.0f}s ({lag})"
        )


def _control_plane_lag(conn: Executor, node: str, version: str) -> str:
    """What keeps ``node``'s control plane from being at ``version`` and Ready
    (empty: nothing). etcd's version is its own; it must be Ready."""
    out = conn.run(
        f"{KUBECTL} -n kube-system get pods -l tier=control-plane "
        f"--field-selector spec.nodeName={shlex.quote(node)} -o json"
    ).stdout
    found: dict[str, tuple[str, bool]] = {}
    for pod in json.loads(out or "{}").get("items", []):
        component = pod["metadata"].get("labels", {}).get("component", "")
        image = (pod.get("spec", {}).get("containers") or [{}])[0].get("image", "")
        conds = pod.get("status", {}).get("conditions", [])
        ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conds)
        found[component] = (image, ready)
    lag = [f"{c} missing" for c in CONTROL_PLANE if c not in found]
    lag += [f"{c} runs {image}" for c, (image, _) in found.items()
            if c in CONTROL_PLANE and not image.endswith(":" + version)]  # fmt: skip
    lag += [f"{c} not Ready" for c, (_, ready) in found.items() if not ready]
    return ", ".join(sorted(lag))


def wait_control_plane(conn: Executor, node: str, *, version: str, timeout: float) -> None:
    """Wait (bounded) until the static pods of master ``node`` run ``version``
    and are Ready, and stay so for :data:`STEADY` seconds."""
    lag = _until(lambda: _control_plane_lag(conn, node, version), timeout=timeout, steady=STEADY)
    if lag:
        raise ClusterError(
            f"the control plane of {node} is not at {version} and Ready after "
            f"{timeout:.0f}s: {lag}",
            hint="`crictl ps -a` and `journalctl -u kubelet` on the master say why; "
            "`kbuild upgrade` again continues here",
        )
