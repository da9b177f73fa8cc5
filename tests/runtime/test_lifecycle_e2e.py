"""End to end: the hello-service example image on real podman hosts through the CLI.

run on 3 hosts (the service answers on each), re-run (sends and changes
nothing), join a 4th, delete one, delete all (hosts as before). Then the
faults: dry-run, wrong password, a host that is down, a failing script on one
host (delete --all after the failed run; re-run after fixing continues), a
changed host key, and a non-root user through sudo.
"""

from __future__ import annotations

import ipaddress
import json
import shlex
import stat
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from kbuild.runtime.ssh import Connection
from tests.fixtures.hosts import HostSet
from tests.runtime.e2e_helpers import (
    IMAGE,
    Env,
    build_example,
    clusterfile,
    get,
    kbuild,
    refused,
    snapshot,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DATA_ROOT = (
    "/tmp/kbuild-e2e"  # tmpfs in the podman hosts: an overlay upper dir cannot live on overlayfs
)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    base = tmp_path_factory.mktemp("kbuild-e2e")
    e = Env(root=base / "store", state=base / "state")
    build_example(e, base)
    yield e


@pytest.fixture(scope="module")
def four(podman_hosts: Callable[..., HostSet]) -> HostSet:
    return podman_hosts(4)


@pytest.fixture(scope="module")
def two(podman_hosts: Callable[..., HostSet]) -> HostSet:
    return podman_hosts(2)


def _conns(hosts: HostSet) -> dict[str, Connection]:
    return {h.ip: hosts.connect(h) for h in hosts}


def test_run_rerun_join_delete_delete_all(env: Env, four: HostSet, tmp_path: Path) -> None:
    ips = [h.ip for h in four]
    conns = _conns(four)
    before = {ip: snapshot(c, DATA_ROOT) for ip, c in conns.items()}
    docs = (
        "kind: Config\nmetadata: {name: extra}\n"
        "spec: {path: etc/extra.yaml, strategy: merge, data: 'replicas: 2\\n'}\n"
        "---\nkind: Plugin\nmetadata: {name: count}\n"
        "spec: {type: SHELL, action: post-install, scope: master, "
        "data: 'echo $KBUILD_HOST >> $KBUILD_ROOTFS/post-install.log'}\n"
    )
    text = clusterfile(
        "e2e", IMAGE, ips[:1], ips[1:3], ssh=f"{{passwd: {four[0].root_password}}}",
        data_root=DATA_ROOT, docs=docs,
        extra_spec="  env: [Greeting=hi-e2e]\n"
                   "  hostAliases: [{ip: 10.1.2.3, hostnames: [harbor.local, reg.local]}]\n",
    )  # fmt: skip
    cf = tmp_path / "Clusterfile"
    cf.write_text(text)

    out = kbuild(env, "run", "-f", str(cf), "--progress", "plain")
    for i, ip in enumerate(ips[:3]):
        assert get(ip) == f"hi-e2e from h{i} (cluster e2e)\n"
    assert "sent " in out.stderr
    assert four[0].root_password not in out.stdout + out.stderr
    assert conns[ips[2]].run("getent hosts reg.local").stdout.split() == [
        "10.1.2.3", "harbor.local", "reg.local"
    ]
    # the image's own plugin (plugins/record.yaml) ran on every host
    for ip in ips[:3]:
        assert conns[ip].run(f"test -s {DATA_ROOT}/e2e/rootfs/initialized-at").ok
    # CMDS ran on master0 only
    m0 = conns[ips[0]]
    assert m0.run("cat /etc/kbuild-hello-welcome").stdout == (
        f"cluster e2e masters {ips[0]} nodes {ips[1]},{ips[2]}\n"
    )
    assert conns[ips[1]].run("test -e /etc/kbuild-hello-welcome", check=False).exit_status == 1
    # Config merged into the rootfs (upper dir), template rendered per host
    assert "replicas: 2" in m0.run(f"cat {DATA_ROOT}/e2e/rootfs/etc/extra.yaml").stdout
    assert m0.run(f"test -f {DATA_ROOT}/e2e/upper/etc/hello-service.env").ok
    # the mount is a systemd unit (survives reboot), enabled
    unit = shlex.quote(
        m0.run(f"systemd-escape --path {DATA_ROOT}/e2e/rootfs").stdout.strip() + ".mount"
    )
    assert m0.run(f"systemctl is-enabled {unit}").stdout.strip() == "enabled"
    assert m0.run(f"systemctl is-active {unit}").stdout.strip() == "active"
    # local state: 0700 dir, 0600 files; a copy of the Clusterfile on master0
    sdir = env.state / "e2e"
    assert stat.S_IMODE(sdir.stat().st_mode) == 0o700
    assert stat.S_IMODE((sdir / "Clusterfile").stat().st_mode) == 0o600
    assert m0.run(f"stat -c %a {DATA_ROOT}/e2e/Clusterfile").stdout.strip() == "600"
    state = json.loads((sdir / "state.json").read_text())
    assert state["status"] == "done"

    # re-run: nothing sent, nothing changed, no phase run again
    mtimes = {
        ip: c.run(f"stat -c %Y.%i {DATA_ROOT}/e2e/upper/etc/hello-service.env").stdout
        for ip, c in conns.items()
        if ip in ips[:3]
    }
    again = kbuild(env, "run", "-f", str(cf), "--progress", "plain")
    assert "sending" not in again.stderr and "sent " not in again.stderr
    assert "mounted" not in again.stderr and "rendered" not in again.stderr
    assert "==>" not in again.stderr
    assert m0.run(f"cat {DATA_ROOT}/e2e/rootfs/post-install.log").stdout == f"{ips[0]}\n"
    assert mtimes == {
        ip: c.run(f"stat -c %Y.%i {DATA_ROOT}/e2e/upper/etc/hello-service.env").stdout
        for ip, c in conns.items()
        if ip in ips[:3]
    }

    # join a 4th host
    kbuild(env, "join", "--nodes", ips[3], "--cluster-name", "e2e", "--progress", "plain")
    assert get(ips[3]) == "hi-e2e from h3 (cluster e2e)\n"
    assert m0.run(f"cat {DATA_ROOT}/e2e/rootfs/post-install.log").stdout == f"{ips[0]}\n"

    # exec by role
    ex = kbuild(env, "exec", "--cluster-name", "e2e", "--roles", "node", "--", "hostname")
    assert sorted(ex.stdout.splitlines()) == sorted(f"[{ips[i]}] h{i}" for i in (1, 2, 3))

    # another image on the running cluster (an update): only its layer is
    # sent, every rootfs moves to it in an upper dir of its own, the apps
    # launch again, a re-run changes nothing
    v2 = _update_image(env, tmp_path)
    cf2 = tmp_path / "Clusterfile.v2"
    cf2.write_text((sdir / "Clusterfile").read_text().replace(f"image: {IMAGE}", f"image: {v2}"))
    up = kbuild(env, "run", "-f", str(cf2), "--progress", "plain")
    running = ips
    # relay (the default): the client sends the new layer once, to one
    # host, and the hosts pass it on; none needs it from the client
    assert up.stderr.count("relay: layer ") == 1, up.stderr
    assert "sending: layer" not in up.stderr and "gets layers from the client" not in up.stderr
    state = json.loads((sdir / "state.json").read_text())
    assert len(state["images"]) == 2 and state["manifest"] == state["images"][1]
    tag = state["images"][1][7:19]
    for ip in running:
        c = conns[ip]
        assert c.run(f"cat {DATA_ROOT}/e2e/rootfs/v2.txt").stdout == "v2\n"
        assert c.run(f"test -f {DATA_ROOT}/e2e/upper-{tag}/etc/hello-service.env").ok
        assert state["hosts"][ip]["image"] == state["manifest"]
        assert get(ip).startswith("hi-e2e from")
    assert m0.run(f"cat {DATA_ROOT}/e2e/rootfs/v2-launched").stdout == "v2 launched\n"
    again = kbuild(env, "run", "-f", str(cf2), "--progress", "plain")
    assert "sending" not in again.stderr and "==>" not in again.stderr

    # delete one node: it is clean, the others still serve
    kbuild(env, "delete", "--nodes", ips[1], "--cluster-name", "e2e", "--progress", "plain")
    assert refused(ips[1])
    assert snapshot(conns[ips[1]], DATA_ROOT) == before[ips[1]]
    assert get(ips[2]).startswith("hi-e2e from h2")
    recorded = (sdir / "Clusterfile").read_text()
    assert ips[1] not in recorded and ips[3] in recorded

    # delete everything: every host as before the run
    kbuild(env, "delete", "--all", "--cluster-name", "e2e", "--progress", "plain")
    for ip, c in conns.items():
        assert snapshot(c, DATA_ROOT) == before[ip], ip
        assert refused(ip)
    assert not sdir.exists()


def _update_image(env: Env, tmp_path: Path) -> str:
    """hello-service v2: the example plus a file, and a launch of its own."""
    ctx = tmp_path / "v2"
    ctx.mkdir()
    (ctx / "v2.txt").write_text("v2\n")
    (ctx / "Kubefile").write_text(
        f"FROM {IMAGE}\nCOPY v2.txt v2.txt\n"
        'CMDS ["sh application/apps/welcome/welcome.sh",'
        ' "echo v2 launched > $KBUILD_ROOTFS/v2-launched"]\n'
    )
    kbuild(env, "build", "-t", "hello-service:e2e-v2", "--progress", "plain", str(ctx))
    return "hello-service:e2e-v2"


def test_dry_run_changes_nothing(env: Env, two: HostSet, tmp_path: Path) -> None:
    conns = _conns(two)
    before = {ip: snapshot(c, DATA_ROOT) for ip, c in conns.items()}
    out = kbuild(
        env, "run", IMAGE, "--masters", two[0].ip, "--nodes", two[1].ip,
        "--pk", str(two[0].key_file), "--cluster-name", "dry", "--dry-run", "--progress", "plain",
        "--data-root", DATA_ROOT,
    )  # fmt: skip
    for h in two:
        assert h.ip in out.stdout
    assert "send 5 layers" in out.stdout  # bin, etc, scripts, plugins, app
    for phase in ("init-host", "join-host", "launch"):
        assert phase in out.stdout
    assert {ip: snapshot(c, DATA_ROOT) for ip, c in conns.items()} == before
    assert not (env.state / "dry").exists()


def test_wrong_password_and_down_host_change_nothing(env: Env, two: HostSet) -> None:
    conns = _conns(two)
    before = {ip: snapshot(c, DATA_ROOT) for ip, c in conns.items()}
    bad = kbuild(
        env, "run", IMAGE, "--masters", two[0].ip, "--nodes", two[1].ip,
        "--passwd", "not-the-pw-42",
        "--cluster-name", "badpw", "--progress", "plain", "--data-root", DATA_ROOT, check=False,
    )  # fmt: skip
    assert bad.returncode != 0
    assert two[0].ip in bad.stderr and two[1].ip in bad.stderr
    assert "auth" in bad.stderr.lower()
    assert "not-the-pw-42" not in bad.stdout + bad.stderr
    assert "Traceback" not in bad.stderr
    # an address on the test network where no host runs
    net = ipaddress.ip_interface(two[0].ip + "/24").network
    down = str(net.network_address + 250)
    out = kbuild(
        env, "run", IMAGE, "--masters", two[0].ip, "--nodes", down,
        "--passwd", two[0].root_password, "--cluster-name", "down", "--progress", "plain",
        "--data-root", DATA_ROOT, check=False,
    )  # fmt: skip
    assert out.returncode != 0
    assert down in out.stderr and "connect" in out.stderr
    assert {ip: snapshot(c, DATA_ROOT) for ip, c in conns.items()} == before


def test_failing_script_delete_after_failure_and_continue(
    env: Env, two: HostSet, tmp_path: Path
) -> None:
    conns = _conns(two)
    ip0, ip1 = two[0].ip, two[1].ip
    before = {ip: snapshot(c, DATA_ROOT) for ip, c in conns.items()}
    plugin = (
        "kind: Plugin\nmetadata: {name: flaky}\n"
        "spec:\n  type: SHELL\n  action: pre-init-host\n  data: |\n"
        "    echo attempt >> $KBUILD_ROOTFS/pre-init.log\n"
        f'    if [ "$KBUILD_HOST" = {ip1} ] && [ ! -e /root/kbuild-fixed ]; then\n'
        "      echo boom-on-this-host; exit 3\n"
        "    fi\n"
    )
    # a non-root user with password sudo
    text = clusterfile(
        "flaky", IMAGE, [ip0], [ip1],
        ssh=f"{{user: {two[0].user}, passwd: {two[0].user_password}}}",
        data_root=DATA_ROOT, docs=plugin,
    )  # fmt: skip
    cf = tmp_path / "Clusterfile"
    cf.write_text(text)
    failed = kbuild(env, "run", "-f", str(cf), "--progress", "plain", check=False)
    assert failed.returncode != 0
    assert (
        ip1 in failed.stderr and "boom-on-this-host" in failed.stderr and "flaky" in failed.stderr
    )
    assert "Traceback" not in failed.stderr
    assert two[0].user_password not in failed.stdout + failed.stderr

    # delete --all works after a failed run and leaves the hosts as before
    kbuild(env, "delete", "--all", "-f", str(cf), "--progress", "plain")
    assert {ip: snapshot(c, DATA_ROOT) for ip, c in conns.items()} == before

    # fail again, fix the host, re-run: continues where it stopped
    assert kbuild(env, "run", "-f", str(cf), "--progress", "plain", check=False).returncode != 0
    conns[ip1].run("touch /root/kbuild-fixed")
    try:
        again = kbuild(env, "run", "-f", str(cf), "--progress", "plain")
        assert "sending" not in again.stderr  # layers were already there
        assert conns[ip0].run(f"cat {DATA_ROOT}/flaky/rootfs/pre-init.log").stdout == "attempt\n"
        assert (
            conns[ip1].run(f"cat {DATA_ROOT}/flaky/rootfs/pre-init.log").stdout
            == "attempt\nattempt\n"
        )
        assert get(ip0).startswith("hello from h0")
        assert get(ip1).startswith("hello from h1")

        # a changed host key is a hard error unless accepted explicitly
        conns[ip1].run(
            "rm -f /etc/ssh/ssh_host_* && ssh-keygen -A >/dev/null && systemctl restart ssh"
        )
        changed = kbuild(env, "exec", "--cluster-name", "flaky", "--", "true", check=False)
        assert changed.returncode != 0
        assert ip1 in changed.stderr and "key" in changed.stderr.lower()
        ok = kbuild(
            env, "exec", "--cluster-name", "flaky", "--accept-changed-host-key", "--", "echo", "hi"
        )
        assert f"[{ip1}] hi" in ok.stdout

        kbuild(env, "delete", "--all", "--cluster-name", "flaky", "--progress", "plain")
    finally:
        for h in two:
            two.connect(h, accept_changed_host_key=True).run("rm -f /root/kbuild-fixed")
    after = {
        ip: snapshot(two.connect(h, accept_changed_host_key=True), DATA_ROOT)
        for ip, h in zip([ip0, ip1], two, strict=True)
    }
    assert after == before


def test_apply_joins_and_deletes(env: Env, two: HostSet, tmp_path: Path) -> None:
    conns = _conns(two)
    ip0, ip1 = two[0].ip, two[1].ip
    before = snapshot(conns[ip1], DATA_ROOT)
    ssh = f"{{pk: {two[0].key_file}}}"
    one = tmp_path / "one.yaml"
    one.write_text(clusterfile("ap", IMAGE, [ip0], [], ssh=ssh, data_root=DATA_ROOT))
    both = tmp_path / "both.yaml"
    both.write_text(clusterfile("ap", IMAGE, [ip0], [ip1], ssh=ssh, data_root=DATA_ROOT))
    kbuild(env, "apply", "-f", str(one), "--progress", "plain")  # nothing recorded: a run
    assert get(ip0).startswith("hello from h0") and refused(ip1)
    plan = kbuild(env, "apply", "-f", str(both), "--dry-run")
    assert "join-host" in plan.stdout and ip1 in plan.stdout
    assert refused(ip1)
    kbuild(env, "apply", "-f", str(both), "--progress", "plain")
    assert get(ip1).startswith("hello from h1")
    failing = kbuild(env, "exec", "--cluster-name", "ap", "--", "exit 3", check=False)
    assert failing.returncode == 1
    assert f"[{ip0}] exit status 3" in failing.stderr and f"[{ip1}] exit status 3" in failing.stderr
    kbuild(env, "apply", "-f", str(one), "--progress", "plain")
    assert refused(ip1) and snapshot(conns[ip1], DATA_ROOT) == before
    assert get(ip0).startswith("hello from h0")
    kbuild(env, "delete", "--all", "-f", str(one), "--progress", "plain")
    assert refused(ip0)


def test_podman_provider_run_and_delete_all(env: Env) -> None:
    from kbuild.runtime.providers import podman
    from tests.fixtures.hosts import RUN_ID

    name = f"pv{RUN_ID}"[:20]
    try:
        out = kbuild(env, "run", IMAGE, "--provider", "podman", "--masters", "1", "--nodes", "1",
                     "--cluster-name", name, "--progress", "plain")  # fmt: skip
        assert "is up on 2 hosts" in out.stdout
        recorded = (env.state / name / "Clusterfile").read_text()
        assert len(podman.list_clusters().get(name, [])) == 2
        spec = next(yaml.safe_load_all(recorded))["spec"]
        # the hosts' data volume makes the default dataRoot usable (not tmpfs)
        assert spec.get("dataRoot", "/var/lib/kbuild/data") == "/var/lib/kbuild/data"
        vols = ["podman", "volume", "ls", "--filter", f"label={podman.CLUSTER_LABEL}={name}",
                "--format", "{{.Name}}"]  # fmt: skip
        assert len(subprocess.run(vols, capture_output=True, text=True).stdout.split()) == 2
        for group in spec["hosts"]:
            for ip in group["ips"]:
                assert get(ip).startswith("hello from ")
        # a re-run uses the recorded hosts and makes none
        kbuild(env, "run", IMAGE, "--provider", "podman", "--cluster-name", name)
        assert len(podman.list_clusters().get(name, [])) == 2
        kbuild(env, "delete", "--all", "--cluster-name", name, "--progress", "plain")
        assert name not in podman.list_clusters()
        assert not (env.state / name).exists()
        assert subprocess.run(vols, capture_output=True, text=True).stdout.split() == []
    finally:
        podman.delete_cluster(name)
