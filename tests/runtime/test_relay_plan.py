"""The relay's plan without hosts: tree shape, who falls back to direct
sends, the credentials' form, and ``spec.distribution``."""

from __future__ import annotations

import re

import pytest

from kbuild.errors import ClusterfileError
from kbuild.runtime.clusterfile import Distribution, dumps, loads
from kbuild.runtime.relay import RelayKey, authorized_line, plan_relay, tree

HOSTS = [f"10.0.0.{i}" for i in range(1, 18)]


def test_tree_has_fanout_children_and_log_depth() -> None:
    t, left = tree(HOSTS, set(HOSTS), 4)
    assert left == [] and t.root == HOSTS[0]
    assert sorted(t.hosts()) == sorted(HOSTS)
    assert max(len(k) for k in t.children.values()) == 4
    assert t.children[HOSTS[0]] == HOSTS[1:5]
    depth = {t.root: 0}
    for p, c in t.edges():
        depth[c] = depth[p] + 1
    assert max(depth.values()) == 2  # 1 + 4 + 16 >= 17


def test_hosts_without_ssh_are_leaves_and_overflow_goes_direct() -> None:
    senders = set(HOSTS[:1])
    t, left = tree(HOSTS[:8], senders, 4)
    assert t.children == {HOSTS[0]: HOSTS[1:5]}
    assert left == HOSTS[5:8]
    # senders are placed first whatever the order
    t, _ = tree(["b", "a", "c"], {"c"}, 4)
    assert t.root == "c" and t.children == {"c": ["b", "a"]}


def test_plan_rotates_roots_and_sends_ineligible_hosts_direct() -> None:
    hosts = HOSTS[:6]
    missing = {f"{i:064x}": hosts for i in range(3)}
    eligible = {h: set(hosts) - {hosts[5]} for h in missing}
    plan = plan_relay(missing, eligible=eligible, can_send=set(hosts), fanout=2)
    assert [t.root for t in plan.trees.values()] == hosts[:3]
    assert plan.direct == {hosts[5]: list(missing)}
    for t in plan.trees.values():
        assert hosts[5] not in t.hosts() and len(t.hosts()) == 5
    assert plan.senders() <= set(hosts)
    # each host has at most one parent per layer: parents grow with layers, not hosts
    assert all(len(plan.parents_of(h)) <= 3 for h in hosts)


def test_plan_needs_two_hosts_and_a_sender() -> None:
    one = {"a" * 64: ["10.0.0.1"]}
    plan = plan_relay(one, eligible={"a" * 64: {"10.0.0.1"}}, can_send={"10.0.0.1"}, fanout=4)
    assert plan.trees == {} and plan.direct == {"10.0.0.1": ["a" * 64]}
    two = {"a" * 64: ["10.0.0.1", "10.0.0.2"]}
    plan = plan_relay(two, eligible={"a" * 64: set(two["a" * 64])}, can_send=set(), fanout=4)
    assert plan.trees == {} and set(plan.direct) == set(two["a" * 64])


def test_key_and_authorized_line() -> None:
    k = RelayKey.generate()
    assert k.private.startswith(b"-----BEGIN OPENSSH PRIVATE KEY-----")
    assert "PRIVATE" not in repr(k) and k.public.startswith("ssh-ed25519 ")
    line = authorized_line(k, "10.0.0.7", "0123abcd", 0)
    assert line == (
        'restrict,from="10.0.0.7",command="/run/kbuild-relay/0123abcd/gate",'
        f'expiry-time="19700101000000Z" {k.public} kbuild-relay-0123abcd\n'
    )
    assert RelayKey.generate().public != k.public


CF = """apiVersion: sealer.io/v2
kind: Cluster
metadata: {name: demo}
spec:
  image: demo:1
  hosts: [{ips: [10.0.0.2], roles: [master]}]
"""


def test_distribution_field() -> None:
    assert loads(CF).cluster.distribution == Distribution(relay=True, fanout=4, streams=64)
    cf = loads(CF + "  distribution: {relay: false, fanout: 8, streams: 16, stallTimeout: 30}\n")
    assert cf.cluster.distribution == Distribution(False, 8, 16, 30)
    assert "distribution:" in dumps(cf) and loads(dumps(cf)) == cf
    assert "distribution" not in dumps(loads(CF))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{relai: false}", "spec.distribution.relai: unknown field (did you mean relay?)"),
        ("{relay: 'no'}", "spec.distribution.relay: expected true or false"),
        ("{fanout: 0}", "spec.distribution.fanout: expected a number 1-64"),
        ("{streams: 2.5}", "spec.distribution.streams: expected a whole number"),
        ("{stallTimeout: true}", "spec.distribution.stallTimeout: expected a number"),
        ("[relay]", "spec.distribution: expected a mapping"),
    ],
)
def test_distribution_refused(text: str, message: str) -> None:
    with pytest.raises(ClusterfileError, match=re.escape(message)):
        loads(CF + f"  distribution: {text}\n")
