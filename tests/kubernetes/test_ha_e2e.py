"""End to end: a cluster with three masters survives losing master0, with no load
balancer (issue 10), on podman hosts with no route out.

3 masters + 1 node, all Ready. master0's host stops answering: every process
in it is frozen (``podman pause``, a hung or powerless machine; not ``podman
stop``: on this cgroup v1 kernel a host container's systemd shutting down or
booting wipes the name=systemd cgroups the other host containers use).
Within a bounded time, on the node: the VIP agent drops master0, the API
answers through the VIP, the node stays Ready, a new Deployment of an image
the cluster image carries gets its pod Running on the node (so images come
from somewhere other than master0); ``kbuild exec`` and ``kbuild join`` of a
new node work against the live masters. master0 comes back and is used
again. ``kbuild delete --masters`` of the third master: the node's backends
follow, no re-run. ``delete --all`` leaves every host as it was.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kbuild.runtime.providers import podman
from kbuild.runtime.ssh import Connection
from tests.fixtures.hosts import HostSet
from tests.kubernetes.helpers import (
    BASE,
    DATA_ROOT,
    KUBE_LEFTOVERS,
    PAUSE,
    STORE,
    VIP,
    assert_clean,
    build_base,
    clusterfile,
    etcd_members,
    kubectl,
    pods,
    q,
    ready_nodes,
    wait,
)
from tests.runtime.e2e_helpers import Env, kbuild, snapshot

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CLUSTER = "k8s-ha"
NODE_KUBECTL = "kubectl --kubeconfig /etc/kubernetes/kubelet.conf"


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    build_base()
    yield Env(root=STORE, state=tmp_path_factory.mktemp("k8s-ha") / "state")


@pytest.fixture(scope="module")
def hosts(podman_hosts: Callable[..., HostSet]) -> HostSet:
    return podman_hosts(5, internal=True)


def _vip_status(node: Connection) -> dict[str, list[str]]:
    res = node.run("cat /run/kbuild-vip/status.json", check=False)
    return json.loads(res.stdout) if res.ok and res.stdout.strip() else {}


def _through_vip(node: Connection) -> bool:
    """The API answers on the node through apiserver.cluster.local (the VIP)."""
    return node.run(f"{NODE_KUBECTL} get --raw /readyz", check=False).stdout.strip() == "ok"


def _show_control_plane(m: Connection) -> None:
    """Why a master's API server does not answer: its containers, the logs of
    the API server and etcd, the kubelet's journal."""
    print(m.run("crictl ps -a 2>&1 | head -30", check=False).stdout)
    for name in ("kube-apiserver", "etcd"):
        print(m.run(f"id=$(crictl ps -a --name {name} -q | head -1); "
                    f"crictl logs --tail 25 $id 2>&1", check=False).stdout)  # fmt: skip
    print(m.run("journalctl -u kubelet --no-pager -n 30 2>&1", check=False).stdout)


def test_losing_master0(env: Env, hosts: HostSet, tmp_path: Path) -> None:
    m0, m1, m2, n0, n1 = hosts
    conns = {h.ip: hosts.connect(h) for h in hosts}
    node, lead = conns[n0.ip], conns[m1.ip]
    before = {ip: snapshot(c, DATA_ROOT) for ip, c in conns.items()}
    leftovers = {ip: c.run("sh -c " + q(KUBE_LEFTOVERS)).stdout for ip, c in conns.items()}
    cf = tmp_path / "Clusterfile"
    cf.write_text(clusterfile(CLUSTER, BASE, m0.root_password, [m0.ip, m1.ip, m2.ip], [n0.ip]))
    started = time.monotonic()
    kbuild(env, "run", "-f", str(cf), "--progress", "plain", timeout=1500)
    wait("all four Ready", lambda: ready_nodes(lead) == {
        h.ip: True for h in (m0, m1, m2, n0)}, 300)  # fmt: skip
    print(f"3+1 Ready in {time.monotonic() - started:.0f}s")
    assert len(etcd_members(lead, "h1")) == 3
    # the node reaches the masters through the VIP; masters reach themselves
    assert node.run("getent hosts apiserver.cluster.local").stdout.split()[0] == VIP
    assert lead.run("getent hosts apiserver.cluster.local").stdout.split()[0] == m1.ip
    wait("the VIP over all three masters",
         lambda: _vip_status(node).get("programmed") == sorted([m0.ip, m1.ip, m2.ip]), 60)
    # the record is on every master
    for m in (m0, m1, m2):
        assert conns[m.ip].run(f"stat -c %a {DATA_ROOT}/{CLUSTER}/state.json").stdout.strip() \
            == "600"  # fmt: skip

    # master0 is gone: nothing in it runs or answers
    podman.freeze_host(m0.container)
    took = time.monotonic()
    wait("master0 dropped from the VIP",
         lambda: _vip_status(node).get("programmed") == sorted([m1.ip, m2.ip]), 30, step=0.5)
    wait("the API through the VIP", lambda: _through_vip(node), 30, step=0.5)
    print(f"failover: {time.monotonic() - took:.1f}s")

    # the node stays Ready (the masters that are left see its heartbeats)
    answers: list[dict[str, bool]] = []
    for _ in range(4):
        time.sleep(15)
        try:
            wait("an answer from the masters that are left",
                 lambda: bool(answers.append(ready_nodes(lead)) or answers[-1]), 60, step=1)
        except AssertionError:
            _show_control_plane(lead)
            raise
        assert answers[-1].get(n0.ip) is True, answers
    # a new Deployment of a carried image runs on the node: its image comes
    # from the node's own registry, not master0's
    kubectl(lead, "create deployment pause-ha --image=registry.k8s.io/pause:" + PAUSE)
    kubectl(lead, "patch deployment pause-ha -p "
                  + q(json.dumps({"spec": {"template": {"spec": {"nodeName": "h3"}}}})))
    wait("the pause-ha pod Running on the node", lambda: any(
        p["node"] == "h3" and p["phase"] == "Running" for p in pods(lead, "app=pause-ha")), 180)

    # kbuild works against the live masters
    out = kbuild(env, "exec", "--cluster-name", CLUSTER, "--roles", "node", "--", "hostname")
    assert "h3" in out.stdout
    kbuild(env, "join", "--cluster-name", CLUSTER, "--nodes", n1.ip, "--progress", "plain",
           timeout=900)  # fmt: skip
    wait("the new node Ready", lambda: ready_nodes(lead).get(n1.ip) is True, 240)
    assert conns[n1.ip].run("getent hosts apiserver.cluster.local").stdout.split()[0] == VIP

    # master0 back: it serves again and is used again
    podman.thaw_host(m0.container)
    wait("master0 Ready again", lambda: ready_nodes(lead).get(m0.ip) is True, 300)
    wait("master0 back behind the VIP",
         lambda: _vip_status(node).get("programmed") == sorted([m0.ip, m1.ip, m2.ip]), 120)

    # a master leaves: every node's backends follow
    kbuild(env, "delete", "--cluster-name", CLUSTER, "--masters", m2.ip, "--progress", "plain",
           timeout=900)  # fmt: skip
    for n in (node, conns[n1.ip]):
        wait("the VIP without the deleted master",
             lambda n=n: _vip_status(n).get("programmed") == sorted([m0.ip, m1.ip]), 30)
    assert len(etcd_members(lead, "h1")) == 2

    kbuild(env, "delete", "--all", "--cluster-name", CLUSTER, "--progress", "plain",
           timeout=900)  # fmt: skip
    for h in hosts:
        c = hosts.connect(h)
        assert_clean(c, h.container, before[h.ip], leftovers[h.ip])
