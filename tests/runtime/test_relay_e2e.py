"""Relay between real podman hosts: each layer leaves the client once, hosts
pass it on, nothing of the relay stays on any host, a relay key can do
nothing but receive listed layers, and a relaying host that dies mid-transfer
does not stop the others (it is named; a re-run sends only to it)."""

from __future__ import annotations

import contextlib
import hashlib
import subprocess
from collections.abc import Callable, Iterator

import pytest

from kbuild.errors import KbuildError
from kbuild.layerstore import Store, TarEntry, pack_layer
from kbuild.runtime.clusterfile import Distribution
from kbuild.runtime.distribute import host_layers, record_layers, send_missing
from kbuild.runtime.image import ImageInfo, inspect_image
from kbuild.runtime.preflight import gather_facts
from kbuild.runtime.relay import RelayHost, plan_relay, relay_layers
from kbuild.runtime.relay.session import Session, choose_stream
from kbuild.runtime.runevents import BytesSent, Event
from kbuild.runtime.ssh import Connection
from tests.fixtures.hosts import HostSet

pytestmark = [pytest.mark.integration]

DATA_ROOT = "/tmp/kbuild-relay-test"
TRACES = (
    "sha256sum /root/.ssh/authorized_keys; ls -A /run/kbuild-relay 2>/dev/null; "
    "systemctl list-units --all --no-legend 'kbuild-relay*'; "
    "ls /run/systemd/transient 2>/dev/null | grep kbuild-relay || true"
)


def _image(store: Store, tag: str, mb: int) -> ImageInfo:
    """Two layers: ``mb`` MB of incompressible bytes, and a small one."""
    big = b"".join(hashlib.sha256(f"{tag}{i}".encode()).digest() for i in range(mb * 32768))
    l1 = pack_layer(store, [TarEntry("big.bin", "file", 0o644, data=big, size=len(big))])
    l2 = pack_layer(store, [TarEntry(f"{tag}.txt", "file", 0o644, data=b"x\n", size=2)])
    config = {"architecture": "amd64", "os": "linux", "config": {}}
    store.tag(tag, store.write_image(config, [l1, l2]))
    return inspect_image(store, tag)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    return Store(tmp_path_factory.mktemp("relay-store"))


@pytest.fixture(scope="module")
def hosts(podman_hosts: Callable[..., HostSet]) -> HostSet:
    return podman_hosts(5, zstd=True)


@pytest.fixture
def conns(hosts: HostSet) -> Iterator[list[Connection]]:
    out = [hosts.connect(h) for h in hosts]
    try:
        yield out
    finally:
        for c in out:
            with contextlib.suppress(KbuildError):
                c.run(f"rm -rf {DATA_ROOT}", check=False)
            c.close()


def _relay_hosts(conns: list[Connection]) -> list[RelayHost]:
    out = []
    for c in conns:
        facts = gather_facts(c, DATA_ROOT)
        lines = tuple(c.known_hosts.lines(c.host, 22))
        out.append(RelayHost(c.host, c, 22, facts.tools, lines))
    return out


def _missing(conns: list[Connection], image: ImageInfo) -> dict[str, list[str]]:
    out = {}
    for c in conns:
        record_layers(c, DATA_ROOT, "relay", image.layers)
        out[c.host] = host_layers(c, DATA_ROOT, image).missing
    return out


def _traces(c: Connection) -> str:
    return c.run(TRACES).stdout


def test_each_layer_leaves_the_client_once_and_nothing_stays(
    store: Store, conns: list[Connection]
) -> None:
    image = _image(store, "relay:once", 4)
    before = [_traces(c) for c in conns]
    assert all("kbuild-relay" not in t for t in before)
    events: list[Event] = []
    todo = _missing(conns, image)
    res = relay_layers(
        _relay_hosts(conns), todo, store=store, data_root=DATA_ROOT,
        settings=Distribution(fanout=2), progress=events.append,
    )  # fmt: skip
    assert not res.failed and not res.probe_failed and not res.plan.direct
    # one tree per layer over all five hosts, two children at most
    for t in res.plan.trees.values():
        assert sorted(t.hosts()) == sorted(c.host for c in conns)
        assert max(len(k) for k in t.children.values()) <= 2
    # the client sent each layer once, to one host
    sent: dict[str, set[str]] = {}
    last: dict[str, int] = {}
    for e in events:
        if isinstance(e, BytesSent):
            sent.setdefault(e.layer, set()).add(e.host)
            last[e.layer] = e.done
    assert {k: len(v) for k, v in sent.items()} == {x.digest: 1 for x in image.layers}
    assert last == {x.digest: x.size for x in image.layers}
    assert res.sent == {x.hex: x.size for x in image.layers}
    # every host has every layer, verified
    for c in conns:
        assert host_layers(c, DATA_ROOT, image).missing == []
    assert [_traces(c) for c in conns] == before


def test_what_a_relay_key_can_and_cannot_do(
    store: Store, conns: list[Connection], hosts: HostSet
) -> None:
    image = _image(store, "relay:keys", 1)
    small = image.layers[1]
    rh = _relay_hosts(conns[:2])
    by_ip = {h.ip: h for h in rh}
    sender, receiver = rh[0], rh[1]
    plan = plan_relay({small.hex: [sender.ip, receiver.ip]},
                      eligible={small.hex: {sender.ip, receiver.ip}},
                      can_send={sender.ip}, fanout=4)  # fmt: skip
    before = [_traces(c) for c in conns]
    stream = choose_stream(store, small, [sender.tools, receiver.tools])
    session = Session("ab" * 8, by_ip, {small.hex: stream}, DATA_ROOT, Distribution(), {})
    try:
        assert session.begin([sender.ip, receiver.ip]) == {}
        session.configure(plan, exclude=set())
        d = session.dir
        ssh = (
            f"ssh -i {d}/key -o BatchMode=yes -o IdentitiesOnly=yes -o StrictHostKeyChecking=yes "
            f"-o UserKnownHostsFile={d}/known_hosts root@{receiver.ip}"
        )
        s = sender.conn
        assert s.run(f"stat -c %a {d} {d}/key").stdout.split() == ["700", "600"]
        assert s.run(f"{ssh} probe").stdout.strip() == "kbuild-relay ok"
        # no shell, no other command, no port forwarding
        for cmd in ("id", "'sh -c id'", "'cat /etc/shadow'", "'probe; id'"):
            r = s.run(f"{ssh} {cmd}", check=False)
            assert r.exit_status != 0 and "uid=" not in r.stdout and "root:" not in r.stdout
        r = s.run(f"{ssh} -W 127.0.0.1:22 </dev/null", check=False, timeout=30)
        assert r.exit_status != 0 and "SSH-2.0" not in r.stdout
        # only listed layers
        other = image.layers[0].hex
        r = s.run(f"{ssh} 'receive {other}' </dev/null", check=False)
        assert r.exit_status != 0 and "not listed" in r.stderr
        # a listed layer with other bytes, or more bytes: never complete
        for junk in ("head -c 100 /dev/zero", f"head -c {small.size + 10} /dev/urandom"):
            r = s.run(f"{junk} | {ssh} 'receive {small.hex}'", check=False)
            assert r.exit_status != 0
            assert host_layers(receiver.conn, DATA_ROOT, image).missing[-1].hex == small.hex
        # the key from another address is refused (from=)
        third = conns[2]
        key = s.read_file(f"{d}/key")
        assert key is not None
        third.put_file("/tmp/stolen", key, 0o600)
        r = third.run(f"ssh -i /tmp/stolen -o BatchMode=yes -o StrictHostKeyChecking=no "
                      f"-o UserKnownHostsFile=/dev/null root@{receiver.ip} probe", check=False)
        assert r.exit_status != 0 and "kbuild-relay ok" not in r.stdout
        third.run("rm -f /tmp/stolen")
    finally:
        session.end([sender.ip, receiver.ip], None)
    assert [_traces(c) for c in conns] == before


def _kill_ssh(container: str) -> None:
    """Every sshd of the host (its listener and sessions: the relay's too),
    by the pids in ssh.service's cgroup; stopped first so systemd does not
    restart it."""
    script = (
        "systemctl stop ssh; "
        "kill -9 $(cat /sys/fs/cgroup/systemd/system.slice/ssh.service/cgroup.procs) || true"
    )
    subprocess.run(["podman", "exec", container, "sh", "-c", script], check=True, timeout=60)


def test_relaying_host_dies_mid_transfer(
    store: Store, conns: list[Connection], hosts: HostSet
) -> None:
    image = _image(store, "relay:fault", 48)
    big = image.layers[0]
    # tree of the big layer (index 0, fanout 2): h0 -> h1, h2; h1 -> h3, h4
    victim = hosts[1]
    killed = False
    to: dict[str, set[str]] = {}

    def on_event(e: Event) -> None:
        nonlocal killed
        if isinstance(e, BytesSent):
            to.setdefault(e.layer, set()).add(e.host)
        if isinstance(e, BytesSent) and not killed and e.done > big.size // 4:
            killed = True
            _kill_ssh(victim.container)

    before = [_traces(c) for c in conns]
    todo = _missing(conns, image)
    res = first = relay_layers(
        _relay_hosts(conns), todo, store=store, data_root=DATA_ROOT,
        settings=Distribution(fanout=2, stall_timeout=6), progress=on_event,
    )  # fmt: skip
    assert killed
    assert res.plan.trees[big.hex].children[conns[1].host] == [conns[3].host, conns[4].host]
    # the hosts the victim fed got the layer again from the root's kept copy;
    # the client sent each layer once, and only the victim lacks anything
    assert victim.ip in res.failed
    fixed = res.repair.trees[big.hex]
    assert fixed.root == conns[0].host
    assert sorted(fixed.hosts()[1:]) == sorted([conns[3].host, conns[4].host])
    assert {k: len(v) for k, v in to.items()} == {x.digest: 1 for x in image.layers}
    for i in (0, 2, 3, 4):
        assert host_layers(conns[i], DATA_ROOT, image).missing == []
    # the fallback: the client sends what each host still lacks; only the victim fails
    failed: dict[str, str] = {}
    for c in conns:
        try:
            facts = gather_facts(c, DATA_ROOT)
            send_missing(c, store, DATA_ROOT, host_layers(c, DATA_ROOT, image),
                         host_tools=facts.tools)  # fmt: skip
        except KbuildError as exc:
            failed[c.host] = str(exc)
    assert list(failed) == [victim.ip]
    assert victim.name in failed[victim.ip] or victim.ip in failed[victim.ip]
    for i in (0, 2, 3, 4):
        assert host_layers(conns[i], DATA_ROOT, image).missing == []
    # the victim comes back; a re-run sends only to it
    subprocess.run(["podman", "exec", victim.container, "systemctl", "start", "ssh"],
                   check=True, timeout=60)  # fmt: skip
    conns[1] = hosts.connect(victim)
    events: list[Event] = []
    todo = _missing(conns, image)
    assert [ip for ip, m in todo.items() if m] == [victim.ip]
    res = relay_layers(_relay_hosts(conns), todo, store=store, data_root=DATA_ROOT,
                       settings=Distribution(), progress=events.append)  # fmt: skip
    assert not res.plan.trees and list(res.plan.direct) == [victim.ip]
    facts = gather_facts(conns[1], DATA_ROOT)
    send_missing(conns[1], store, DATA_ROOT, host_layers(conns[1], DATA_ROOT, image),
                 host_tools=facts.tools, progress=events.append)  # fmt: skip
    assert {e.host for e in events if isinstance(e, BytesSent)} == {victim.name}
    assert host_layers(conns[1], DATA_ROOT, image).missing == []
    # the hosts that were up are clean; the victim, dead during the cleanup,
    # keeps the first run's traces until its timer fires (triggered here)
    after = [_traces(c) for c in conns]
    assert after[:1] + after[2:] == before[:1] + before[2:]
    assert f"kbuild-relay-{first.run_id}" in after[1]
    conns[1].run(f"systemctl start kbuild-relay-{first.run_id}.service")
    assert _traces(conns[1]) == before[1]


def test_a_host_refusing_root_key_login_gets_layers_directly(
    store: Store, conns: list[Connection]
) -> None:
    image = _image(store, "relay:probe", 2)
    three = conns[:3]
    refusing = three[2]
    cfg = "/etc/ssh/sshd_config.d/kbuild-test.conf"
    before = [_traces(c) for c in three]
    refusing.put_file(cfg, b"AuthorizedKeysFile none\n")
    refusing.run("systemctl reload ssh")
    try:
        events: list[Event] = []
        todo = _missing(three, image)
        res = relay_layers(_relay_hosts(three), todo, store=store, data_root=DATA_ROOT,
                           settings=Distribution(), progress=events.append)  # fmt: skip
        assert set(res.probe_failed) == {refusing.host}
        assert "probe from" in res.probe_failed[refusing.host]
        for t in res.plan.trees.values():
            assert refusing.host not in t.hosts() and len(t.hosts()) == 2
        for c in three[:2]:
            assert host_layers(c, DATA_ROOT, image).missing == []
        left = host_layers(refusing, DATA_ROOT, image)
        assert [x.hex for x in left.missing] == [x.hex for x in image.layers]
        facts = gather_facts(refusing, DATA_ROOT)
        send_missing(refusing, store, DATA_ROOT, left, host_tools=facts.tools)
        assert host_layers(refusing, DATA_ROOT, image).missing == []
        # the plan was made twice: the second replaced the run's key lines; all gone now
        assert [_traces(c) for c in three] == before
    finally:
        refusing.run(f"rm -f {cfg} && systemctl reload ssh")
