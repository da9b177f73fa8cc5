"""End to end: an amd64 host and an arm64 host (emulated by qemu-user-static)
run the hello-service example built for both platforms, each with the binary
of its own architecture; an image without the arm64 platform is refused
before anything changes."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kbuild.runtime.ssh import Connection
from tests.fixtures.hosts import HostSet
from tests.runtime.e2e_helpers import Env, build_example, clusterfile, get, kbuild, snapshot

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DATA_ROOT = "/tmp/kbuild-arch"
MULTI, NO_ARM = "hello-service:multi", "hello-service:no-arm"
E_MACHINE = {"x86_64": "3e00", "aarch64": "b700"}  # ELF e_machine, little endian


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    base = tmp_path_factory.mktemp("kbuild-arch")
    e = Env(root=base / "store", state=base / "state")
    build_example(e, base / "multi", MULTI, ("amd64", "arm64"))
    build_example(e, base / "no-arm", NO_ARM, ("amd64", "s390x"))
    yield e


@pytest.fixture(scope="module")
def mixed(podman_hosts: Callable[..., HostSet]) -> HostSet:
    return podman_hosts(2, arm64=1)


def _e_machine(conn: Connection, path: str) -> str:
    return conn.run(f"od -An -tx1 -j18 -N2 {path}").stdout.replace(" ", "").strip()


def _cf(tmp_path: Path, name: str, image: str, hosts: HostSet) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(clusterfile(name, image, [hosts[0].ip], [hosts[1].ip], data_root=DATA_ROOT,
                                ssh=f"{{passwd: {hosts[0].root_password}}}"))
    return path


def test_a_platform_the_image_lacks_is_refused_before_any_change(
        env: Env, mixed: HostSet, tmp_path: Path) -> None:
    conns = {h.ip: mixed.connect(h) for h in mixed}
    before = {ip: snapshot(c, DATA_ROOT) for ip, c in conns.items()}
    out = kbuild(env, "run", "-f", str(_cf(tmp_path, "noarm", NO_ARM, mixed)),
                 "--progress", "plain", check=False)
    assert out.returncode != 0
    assert (f"{mixed[1].ip}: image {NO_ARM} has no platform for this host's architecture "
            "arm64 (it has: linux/amd64, linux/s390x)") in out.stderr
    assert {ip: snapshot(c, DATA_ROOT) for ip, c in conns.items()} == before


def test_amd64_master_and_arm64_node_each_run_their_own_binary(
        env: Env, mixed: HostSet, tmp_path: Path) -> None:
    conns = [mixed.connect(h) for h in mixed]
    assert [c.run("uname -m").stdout.strip() for c in conns] == ["x86_64", "aarch64"]
    cf = _cf(tmp_path, "arch", MULTI, mixed)
    try:
        kbuild(env, "run", "-f", str(cf), "--progress", "plain", timeout=900)
        for i, (host, conn) in enumerate(zip(mixed, conns, strict=True)):
            assert get(host.ip, attempts=120) == f"hello from h{i} (cluster arch)\n"
            machine = conn.run("uname -m").stdout.strip()
            binary = f"{DATA_ROOT}/arch/rootfs/bin/hello-service"
            assert _e_machine(conn, binary) == E_MACHINE[machine], (host.ip, machine)
        status = json.loads(kbuild(env, "status", "--cluster-name", "arch", "--format",
                                   "json").stdout)
        per_arch = {arch: json.loads(kbuild(env, "inspect", "--format", "json", "--platform",
                                            f"linux/{arch}", MULTI).stdout)["digest"]
                    for arch in ("amd64", "arm64")}  # fmt: skip
        assert status["manifest"] == per_arch["amd64"]  # the lead master's platform
        assert {h["ip"]: h["manifest"] for h in status["hosts"]} == {
            mixed[0].ip: per_arch["amd64"], mixed[1].ip: per_arch["arm64"]}
    finally:
        kbuild(env, "delete", "-f", str(cf), "--all", "--progress", "plain", check=False)
