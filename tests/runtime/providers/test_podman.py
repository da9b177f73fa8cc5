"""The podman host provider against real podman (``--provider podman``)."""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from collections.abc import Iterator

import pytest

from kbuild.errors import ClusterError, HostError, UsageError
from kbuild.runtime.executor import Credentials
from kbuild.runtime.providers import podman
from kbuild.runtime.ssh import Connection
from tests.fixtures.hosts import RUN_ID, RUN_LABEL

pytestmark = pytest.mark.integration


def _names(kind: str, cluster: str) -> list[str]:
    args = ["ps", "-a"] if kind == "container" else [kind, "ls"]
    fmt = "{{.Names}}" if kind == "container" else "{{.Name}}"
    out = subprocess.run(
        ["podman", *args, "--filter", f"label={podman.CLUSTER_LABEL}={cluster}", "--format", fmt],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return out.split()


@pytest.fixture
def cluster_name() -> Iterator[str]:
    name = f"p{uuid.uuid4().hex[:8]}"
    try:
        yield name
    finally:
        podman.delete_cluster(name)


def test_host_image_is_cached_and_not_rebuilt(host_image: str) -> None:
    spec = podman.HostImage()
    assert host_image == spec.tag and spec.tag.startswith("localhost/kbuild-host:bookworm-")
    tarball = spec.tarball(podman.host_cache_dir())
    assert tarball.exists()
    before = tarball.stat().st_mtime_ns
    start = time.monotonic()
    assert podman.ensure_host_image() == host_image
    assert time.monotonic() - start < 5
    assert tarball.stat().st_mtime_ns == before
    other = podman.HostImage(packages=(*podman.BASE_PACKAGES, "zstd"))
    assert other.key != spec.key and "zstd" not in podman.BASE_PACKAGES


def test_arm64_host_image_is_cached_apart_and_runs_arm64(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from tests.fixtures.hosts import arm64_host_image

    native, arm = podman.HostImage(), podman.HostImage(arch="arm64")
    # the native image keeps the names its cache has always had
    assert native.tarball(tmp_path).name == f"debian-bookworm-{native.key}.tar"
    assert arm.tarball(tmp_path).name == f"debian-bookworm-arm64-{native.key}.tar"
    assert arm.tag == f"localhost/kbuild-host:bookworm-arm64-{native.key}"
    assert arm64_host_image() == arm.tag
    assert arm.tarball(podman.host_cache_dir()).exists()
    out = subprocess.run(
        ["podman", "run", "--rm", "--arch", "arm64", "--ulimit", "nofile=16384:16384",
         "--ulimit", "nproc=32768:32768", arm.tag, "uname", "-m"],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout  # fmt: skip
    assert out.strip() == "aarch64"


def test_a_foreign_host_image_needs_binfmt(tmp_path) -> None:  # type: ignore[no-untyped-def]
    spec = podman.HostImage(arch="riscv64")
    if os.path.exists("/proc/sys/fs/binfmt_misc/qemu-riscv64"):
        pytest.skip("this machine runs riscv64 binaries")
    with pytest.raises(ClusterError, match="qemu-riscv64 is not registered"):
        podman.ensure_host_image(spec, cache_dir=tmp_path)
    assert not list(tmp_path.glob("*.tar"))


def test_create_and_delete_hosts(host_image: str, cluster_name: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    events: list[podman.ProviderEvent] = []
    hosts = podman.create_hosts(
        cluster_name, ["m0", "n0"], roles=["master", "node"], image=host_image,
        labels={RUN_LABEL: RUN_ID}, progress=events.append,
    )  # fmt: skip
    assert [h.name for h in hosts] == ["m0", "n0"]
    assert [h.role for h in hosts] == ["master", "node"]
    assert hosts[0].ip != hosts[1].ip and hosts[0].port == 22
    # A random root password was set (none was given) and works over SSH.
    creds = hosts[0].credentials
    assert creds.user == "root" and creds.password and len(creds.password) >= 16
    assert creds.password not in repr(hosts[0])
    subnet = podman.network_subnet(cluster_name)
    assert all(subnet.overlaps(type(subnet)(h.ip + "/32")) for h in hosts)
    facts = []
    for h in hosts:
        with Connection(h.ip, h.credentials, known_hosts=tmp_path / "kh") as c:
            facts.append(c.run(
                "hostname; cat /etc/machine-id; systemctl is-system-running --wait; "
                "cat /etc/ssh/ssh_host_ed25519_key.pub; command -v zstd || echo no-zstd; "
                "command -v tar sha256sum sudo tc; systemctl is-active ssh; "
                "pgrep -c agetty || true; stat -f -c %T /var/lib /var/lib/kbuild; "
                "findmnt -n -o TARGET /var/lib/kbuild"
            ).stdout.split("\n"))  # fmt: skip
    assert [f[0] for f in facts] == ["m0", "n0"]
    assert facts[0][1] != facts[1][1]  # machine-id per host
    assert facts[0][2] == "running", facts[0]
    assert facts[0][3] != facts[1][3]  # ssh host keys per host, not from the image
    assert facts[0][4] == "no-zstd"
    assert len([x for x in facts[0][5:9] if x.startswith("/")]) == 4
    assert facts[0][9] == "active" and facts[0][10] == "0"
    # kbuild's data is on a volume of each host, not on the container's overlayfs
    assert facts[0][11] == "overlayfs" and facts[0][12] != "overlayfs", facts[0]
    assert facts[0][13] == podman.DATA_MOUNT
    volumes = sorted(podman.volume_name(h.container) for h in hosts)
    assert sorted(_names("volume", cluster_name)) == volumes
    # Labels let delete --all find everything.
    assert sorted(_names("container", cluster_name)) == sorted(h.container for h in hosts)
    assert _names("network", cluster_name) == [podman.network_name(cluster_name)]
    labels = json.loads(subprocess.run(
        ["podman", "inspect", "--format", "{{json .Config.Labels}}", hosts[0].container],
        capture_output=True, text=True, check=True).stdout)  # fmt: skip
    assert labels[podman.CLUSTER_LABEL] == cluster_name and labels[RUN_LABEL] == RUN_ID
    assert labels[podman.ROLE_LABEL] == "master"
    assert set(podman.list_clusters()[cluster_name]) == {h.container for h in hosts}
    assert {e.what for e in events} >= {"network", "host-start", "host-ready"}
    removed = podman.delete_cluster(cluster_name)
    assert set(removed) >= {h.container for h in hosts}
    assert set(removed) >= set(volumes)
    assert _names("container", cluster_name) == [] and _names("network", cluster_name) == []
    assert _names("volume", cluster_name) == []
    assert podman.delete_cluster(cluster_name) == []
    assert cluster_name not in podman.list_clusters()


def test_sudo_user_and_key_only_root(host_image: str, cluster_name: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    key = tmp_path / "id"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    pub = (tmp_path / "id.pub").read_text()
    [host] = podman.create_hosts(
        cluster_name, ["s0"], image=host_image, authorized_keys=[pub],
        sudo_user="deploy", sudo_password="s3cret-pw", labels={RUN_LABEL: RUN_ID},
    )  # fmt: skip
    assert host.credentials.user == "deploy" and host.credentials.password == "s3cret-pw"
    with Connection(host.ip, host.credentials, known_hosts=tmp_path / "kh") as c:
        assert c.run("id -un", sudo=False).stdout == "deploy\n"
        assert c.run("id -un").stdout == "root\n"
    root_key = Credentials(user="root", key_file=str(key))
    with Connection(host.ip, root_key, known_hosts=tmp_path / "kh") as c:
        assert c.run("id -un").stdout == "root\n"
    # No root password was set: root cannot log in with one.
    with pytest.raises(HostError, match="authentication failed"):
        Connection(host.ip, Credentials(password="s3cret-pw"),
                   known_hosts=tmp_path / "kh").connect()  # fmt: skip


def test_internal_network_has_no_way_out(host_image: str, cluster_name: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    [host] = podman.create_hosts(
        cluster_name, ["i0"], image=host_image, internal=True, root_password="pw-internal",
        labels={RUN_LABEL: RUN_ID},
    )  # fmt: skip
    out = subprocess.run(
        ["podman", "network", "inspect", podman.network_name(cluster_name)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert json.loads(out)[0]["internal"] is True
    with Connection(host.ip, host.credentials, known_hosts=tmp_path / "kh") as c:
        assert c.run("ip route show default").stdout.strip() == ""


def test_failed_create_leaves_nothing(host_image: str, cluster_name: str) -> None:
    with pytest.raises(ClusterError):
        podman.create_hosts(cluster_name, ["x0"], image="localhost/kbuild-no-such-image:1",
                            labels={RUN_LABEL: RUN_ID})  # fmt: skip
    assert _names("container", cluster_name) == [] and _names("volume", cluster_name) == []
    with pytest.raises(UsageError, match="not valid"):
        podman.create_hosts("Bad Name", ["a"], image=host_image)
    with pytest.raises(UsageError, match="not valid"):
        podman.create_hosts(cluster_name, ["UPPER"], image=host_image)


def test_restart_keeps_address_and_data(host_image: str, cluster_name: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    hosts = podman.create_hosts(
        cluster_name, ["r0", "r1"], image=host_image, root_password="pw-restart",
        labels={RUN_LABEL: RUN_ID},
    )  # fmt: skip
    h = hosts[0]
    with Connection(h.ip, h.credentials, known_hosts=tmp_path / "kh") as c:
        c.run(f"echo kept > {podman.DATA_MOUNT}/f; echo gone > /run/f; echo gone > /tmp/f")
    # a restarted host keeps its address (a Clusterfile names it) and its volume
    assert podman.restart_host(h) == h.ip
    with Connection(h.ip, h.credentials, known_hosts=tmp_path / "kh") as c:
        out = c.run(f"cat {podman.DATA_MOUNT}/f; cat /run/f /tmp/f 2>&1 || true").stdout
    assert out.splitlines()[0] == "kept" and "gone" not in out
    # a leftover volume of a host that no longer exists is not handed to a new one
    subprocess.run(["podman", "rm", "-f", "-t", "0", h.container], check=True,
                   capture_output=True)  # fmt: skip
    assert podman.volume_name(h.container) in _names("volume", cluster_name)
    [again] = podman.create_hosts(
        cluster_name, ["r0"], image=host_image, root_password="pw-restart",
        labels={RUN_LABEL: RUN_ID},
    )  # fmt: skip
    assert again.ip != hosts[1].ip
    with Connection(again.ip, again.credentials, known_hosts=tmp_path / "kh2") as c:
        assert c.run(f"ls -A {podman.DATA_MOUNT}").stdout == ""
    # a host that exists is refused, its volume untouched
    with pytest.raises(ClusterError, match="already exists"):
        podman.create_hosts(cluster_name, ["r1"], image=host_image, labels={RUN_LABEL: RUN_ID})
    assert sorted(_names("volume", cluster_name)) == sorted(
        podman.volume_name(x.container) for x in hosts
    )


def test_wait_for_ssh_is_bounded(podman_hosts) -> None:  # type: ignore[no-untyped-def]
    hs = podman_hosts(1)
    unused = str(podman.network_subnet(hs.cluster).network_address + 251)
    start = time.monotonic()
    with pytest.raises(HostError, match="did not come up within 2 s"):
        podman.wait_for_ssh(unused, timeout=2, name="ghost")
    assert time.monotonic() - start < 6
    podman.wait_for_ssh(hs[0].ip, timeout=5)


def test_hosts_of_dead_test_runs_are_swept(host_image: str) -> None:
    from tests.fixtures import hosts as fx

    child = subprocess.Popen(["true"])
    child.wait()
    runs = {"dead": (f"dead{uuid.uuid4().hex[:6]}", str(child.pid)),
            "live": (f"live{uuid.uuid4().hex[:6]}", str(os.getpid()))}  # fmt: skip
    try:
        for run, pid in runs.values():
            subprocess.run(
                ["podman", "create", "--name", f"kbuild-sweep-{run}", "--label",
                 f"{fx.RUN_LABEL}={run}", "--label", f"{fx.PID_LABEL}={pid}", host_image,
                 "/sbin/init"], check=True, capture_output=True,
            )  # fmt: skip
            subprocess.run(
                ["podman", "volume", "create", "--label", f"{fx.RUN_LABEL}={run}",
                 "--label", f"{fx.PID_LABEL}={pid}", f"kbuild-sweep-{run}-data"],
                check=True, capture_output=True,
            )  # fmt: skip
        # a dead run that left only a volume (killed between volume and container)
        orphan = f"orphan{uuid.uuid4().hex[:6]}"
        runs["orphan"] = (orphan, str(child.pid))
        subprocess.run(
            ["podman", "volume", "create", "--label", f"{fx.RUN_LABEL}={orphan}",
             "--label", f"{fx.PID_LABEL}={child.pid}", f"kbuild-sweep-{orphan}-data"],
            check=True, capture_output=True,
        )  # fmt: skip
        fx._sweep_dead_runs()
        vols = ["podman", "volume", "ls", "--format", "{{.Name}}"]
        left_vols = subprocess.run(vols, capture_output=True, text=True, check=True).stdout.split()
        assert f"kbuild-sweep-{runs['dead'][0]}-data" not in left_vols
        assert f"kbuild-sweep-{orphan}-data" not in left_vols
        assert f"kbuild-sweep-{runs['live'][0]}-data" in left_vols
        ps = ["podman", "ps", "-a", "--format", "{{.Names}}"]
        left = subprocess.run(ps, capture_output=True, text=True, check=True).stdout.split()
        assert f"kbuild-sweep-{runs['dead'][0]}" not in left
        assert f"kbuild-sweep-{runs['live'][0]}" in left
    finally:
        for run, _ in runs.values():
            podman.delete_by_label(fx.RUN_LABEL, run)
