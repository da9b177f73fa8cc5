"""End to end: a cluster survives a reboot of its host.

The hello-service image runs on a podman host with dataRoot on the host's data
volume (``/var/lib/kbuild``, a real disk, not the container's overlayfs or
tmpfs). ``podman restart`` of the container reboots its systemd; afterwards the
rootfs overlay is mounted again by its systemd mount unit, the image's files
and the files rendered at run time (upper dir) are there, and the service
(a systemd unit the image's init script installed) answers again. With a
dataRoot on tmpfs the upper dir is gone after the restart and this test fails.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kbuild.runtime.providers import podman
from tests.fixtures.hosts import HostSet
from tests.runtime.e2e_helpers import IMAGE, Env, build_example, clusterfile, get, kbuild, snapshot

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DATA_ROOT = podman.DATA_MOUNT + "/data"  # kbuild's default dataRoot, on the host's volume
MARKER = "/run/kbuild-reboot-marker"  # tmpfs: gone after a reboot


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    base = tmp_path_factory.mktemp("kbuild-reboot")
    e = Env(root=base / "store", state=base / "state")
    build_example(e, base)
    yield e


def test_rootfs_and_service_survive_a_reboot(
    env: Env, podman_hosts: Callable[..., HostSet], tmp_path: Path
) -> None:
    hosts = podman_hosts(1)
    h = hosts[0]
    conn = hosts.connect(h)
    assert conn.run(f"stat -f -c %T {podman.DATA_MOUNT}").stdout.strip() != "overlayfs"
    before = snapshot(conn, DATA_ROOT)
    cf = tmp_path / "Clusterfile"
    text = clusterfile(
        "reboot", IMAGE, [h.ip], [], ssh=f"{{passwd: {h.root_password}}}",
        data_root=DATA_ROOT, extra_spec="  env: [Greeting=hi-reboot]\n",
    )  # fmt: skip
    cf.write_text(text)
    kbuild(env, "run", "-f", str(cf), "--progress", "plain")
    expected = "hi-reboot from h0 (cluster reboot)\n"
    assert get(h.ip) == expected
    rootfs, upper = f"{DATA_ROOT}/reboot/rootfs", f"{DATA_ROOT}/reboot/upper"
    rendered = conn.run(f"cat {upper}/etc/hello-service.env").stdout
    assert "hi-reboot" in rendered
    conn.run(f"touch {MARKER}")
    conn.close()

    # reboot: the container's systemd starts from scratch, the volume stays
    podman.restart_host(
        podman.PodmanHost(
            name=h.name, container=h.container, ip=h.ip,
            credentials=h.credentials(), cluster=h.cluster, network=h.network,
        )
    )  # fmt: skip
    conn = hosts.connect(h)
    try:
        assert conn.run(f"test -e {MARKER}", check=False).exit_status == 1, "no reboot"
        unit = shlex.quote(conn.run(f"systemd-escape --path {rootfs}").stdout.strip() + ".mount")
        # systemd mounted the overlay again at boot
        state = conn.run(
            f"systemctl is-active {unit}; systemctl is-enabled {unit}", check=False
        ).stdout.split()
        assert state == ["active", "enabled"], state
        found = conn.run(f"findmnt -n -o FSTYPE,TARGET {rootfs}", check=False).stdout.split()
        assert found == ["overlay", rootfs], found
        # files of the image (lower layers) and of the run (upper dir)
        assert conn.run(f"test -x {rootfs}/bin/hello-service && test -f {rootfs}/scripts/"
                        "init-host.sh", check=False).ok  # fmt: skip
        assert conn.run(f"cat {upper}/etc/hello-service.env").stdout == rendered
        assert conn.run(f"cat {rootfs}/etc/hello-service.env").stdout == rendered
        assert conn.run(f"test -s {rootfs}/initialized-at", check=False).ok
        # the service, a systemd unit of the image's init script, is back
        assert get(h.ip, attempts=80) == expected
        assert conn.run("systemctl is-active kbuild-hello.service").stdout.strip() == "active"

        # delete --all after the reboot leaves the host as it was
        kbuild(env, "delete", "--all", "--cluster-name", "reboot", "--progress", "plain")
        assert snapshot(conn, DATA_ROOT) == before
    finally:
        conn.close()
