"""Upgrade without hosts: the version skew policy (the CLI: tests/cli/test_day2.py;
the flow: phases/cases/upgrade*.yaml; on real hosts: tests/kubernetes/test_upgrade_e2e.py)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from kbuild.errors import ClusterError, HostError
from kbuild.runtime.drivers.kubernetes import nodes as nodes_mod
from kbuild.runtime.drivers.kubernetes.versions import Version, check_upgrade
from kbuild.runtime.executor import command_failed


@pytest.mark.parametrize(("running", "target"), [
    ("v1.36.3", "v1.37.2"), ("v1.36.3", "v1.36.4"), ("v1.36.3", "v1.37.0"),
])  # fmt: skip
def test_allowed(running: str, target: str) -> None:
    check_upgrade(running, target)


@pytest.mark.parametrize(("running", "target", "fragment"), [
    ("v1.37.2", "v1.37.2", "runs Kubernetes v1.37.2 already"),
    ("v1.37.2", "v1.36.9", "kbuild does not downgrade"),
    ("v1.37.2", "v1.37.1", "kbuild does not downgrade"),
    ("v1.35.0", "v1.37.2", "skips a minor version"),
    ("v1.37.2", "v2.0.0", "a major version is not an upgrade"),
    ("v1.37.2", "latest", "'latest' is not a Kubernetes version"),
])  # fmt: skip
def test_refused(running: str, target: str, fragment: str) -> None:
    with pytest.raises(ClusterError, match=fragment) as info:
        check_upgrade(running, target)
    if "skips" in fragment:
        assert info.value.hint is not None and "v1.36.x first" in info.value.hint


def test_version_order() -> None:
    assert Version.parse("v1.37.10") > Version.parse("v1.37.9") > Version.parse("v1.36.99")
    assert str(Version.parse("v1.37.2-rc.1")) == "v1.37.2"


NODES = ('{"items": [{"metadata": {"name": "h0"}, "status": {"addresses": [{"type": '
         '"InternalIP", "address": "10.0.0.2"}], "conditions": [{"type": "Ready", "status": '
         '"True"}], "nodeInfo": {"kubeletVersion": "v1.37.2"}}}]}')


class _Restarting:
    """An API server that forbids ``fails`` times, as one restarted a moment ago
    does (a fault a real one gives only by chance; the real path:
    tests/kubernetes/test_upgrade_e2e.py's interrupted upgrade run again)."""

    name = "10.0.0.2"

    def __init__(self, fails: int) -> None:
        self.fails = fails
        self.calls = 0

    def run(self, cmd: str, **_: object) -> SimpleNamespace:
        self.calls += 1
        if self.calls <= self.fails:
            raise command_failed(self.name, cmd, 1, 'Error from server (Forbidden): nodes is '
                                 'forbidden: User "kubernetes-admin" cannot list resource')
        return SimpleNamespace(stdout=NODES, ok=True)


def test_nodes_waits_for_an_api_server_that_forbids_a_while(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nodes_mod.time, "sleep", lambda _s: None)
    conn = _Restarting(fails=3)
    found = nodes_mod.nodes(conn, wait=60)  # type: ignore[arg-type]
    assert found["10.0.0.2"].ready and conn.calls == 4
    # without a wait, the first answer counts; past the wait, the last error is raised
    with pytest.raises(HostError, match="command failed"):
        nodes_mod.nodes(_Restarting(fails=1))  # type: ignore[arg-type]
    clock = iter(range(0, 1000, 30))
    monkeypatch.setattr(nodes_mod.time, "monotonic", lambda: next(clock))
    with pytest.raises(HostError):
        nodes_mod.nodes(_Restarting(fails=100), wait=60)  # type: ignore[arg-type]


def _pods(*spec: tuple[str, str, bool]) -> str:
    items = [{"metadata": {"labels": {"component": c}}, "spec": {"containers": [{"image": i}]},
              "status": {"conditions": [{"type": "Ready", "status": str(r)}]}}
             for c, i, r in spec]  # fmt: skip
    return json.dumps({"items": items})


NEW_CP = [("etcd", "sea.hub:5000/etcd:3.7.0-0", True)] + [
    (c, f"sea.hub:5000/{c}:v1.37.2", True) for c in nodes_mod.CONTROL_PLANE]


class _Kubelet:
    """A master whose restarted kubelet recreates its mirror pods: the answers in
    turn, the last one repeated (what a real one does only by chance; the real
    path: tests/kubernetes/test_upgrade_e2e.py checks the control plane after)."""

    def __init__(self, answers: list[str]) -> None:
        self.answers = answers
        self.asked: list[str] = []

    def run(self, cmd: str, **_: object) -> SimpleNamespace:
        self.asked.append(cmd)
        return SimpleNamespace(stdout=self.answers[min(len(self.asked), len(self.answers)) - 1])


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    now = [0.0]
    monkeypatch.setattr(nodes_mod.time, "monotonic", lambda: now[0])
    monkeypatch.setattr(nodes_mod.time, "sleep", lambda s: now.__setitem__(0, now[0] + s))
    return now


def test_control_plane_wait_outlasts_a_mirror_pod_recreated(clock: list[float]) -> None:
    good = _pods(*NEW_CP)
    gone = _pods(*[p for p in NEW_CP if p[0] != "kube-scheduler"])
    old = _pods(*[(c, i.replace("v1.37.2", "v1.36.3"), r) for c, i, r in NEW_CP])
    conn = _Kubelet([old, good, gone, gone, good])
    nodes_mod.wait_control_plane(conn, "h0", version="v1.37.2", timeout=300)  # type: ignore[arg-type]
    # good once, then the scheduler vanished: the steady window began again after it
    assert clock[0] >= 12 + nodes_mod.STEADY
    assert "--field-selector spec.nodeName=h0" in conn.asked[0]


@pytest.mark.parametrize(("pods", "says"), [
    (_pods(*NEW_CP[:3]), "kube-scheduler missing"),
    (_pods(*NEW_CP[:3], ("kube-scheduler", "sea.hub:5000/kube-scheduler:v1.36.3", True)),
     "kube-scheduler runs sea.hub:5000/kube-scheduler:v1.36.3"),
    (_pods(("etcd", "e:1", False), *NEW_CP[1:]), "etcd not Ready"),
])  # fmt: skip
def test_control_plane_wait_names_what_lags(clock: list[float], pods: str, says: str) -> None:
    with pytest.raises(ClusterError, match=f"control plane of h0 is not at v1.37.2.*{says}"):
        nodes_mod.wait_control_plane(_Kubelet([pods]), "h0", version="v1.37.2",  # type: ignore[arg-type]
                                     timeout=60)
    assert 60 <= clock[0] <= 66
