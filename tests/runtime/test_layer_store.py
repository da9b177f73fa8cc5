"""The host layer store's scripts, run for real on this machine.

Several clusters on one host share ``<dataRoot>/layers``: deleting one keeps
what another lists or is receiving (a) ; a layer marked complete in an
earlier boot is trusted only when its files still add up (b); the rootfs of
a data root with a space, brackets or a backslash is found in
/proc/self/mounts and unmounted (c).
"""

from __future__ import annotations

import hashlib
import io
import os
import signal
import subprocess
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kbuild.runtime.distribute import layer_store, present_layers
from kbuild.runtime.image import Layer
from kbuild.runtime.local import LocalConnection
from kbuild.runtime.mount import ClusterPaths, is_mounted, mounts_escape
from kbuild.runtime.remote import script_argv

BIG = 4 << 20  # a layer whose transfer we can hold half-way


def _tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _layer(tag: str, size: int = 10) -> tuple[str, bytes]:
    data = _tar({f"{tag}/a": tag.encode() * size, f"{tag}/b": b"b\n"})
    return hashlib.sha256(data).hexdigest(), data


def _run(name: str, *args: str, stdin: bytes = b"") -> str:
    res = subprocess.run(script_argv(name, *args), input=stdin, capture_output=True, timeout=60)
    assert res.returncode == 0, (name, res.stderr.decode())
    return res.stdout.decode()


def _receive(data_root: Path, hexname: str, data: bytes) -> str:
    return _run("receive-layer.sh", layer_store(str(data_root)), hexname, "none", stdin=data)


def _incoming(store: Path) -> list[Path]:
    return sorted(store.glob(".incoming-*"))


def _start_transfer(store: Path, hexname: str, data: bytes) -> subprocess.Popen[bytes]:
    """A receive that has its temp dir and half of the stream."""
    before = set(_incoming(store))
    proc = subprocess.Popen(
        script_argv("receive-layer.sh", str(store), hexname, "none"),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        start_new_session=True,
    )  # fmt: skip
    assert proc.stdin is not None
    proc.stdin.write(data[: len(data) // 2])
    proc.stdin.flush()
    deadline = time.monotonic() + 20
    while set(_incoming(store)) == before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert set(_incoming(store)) != before, "the transfer made no temp dir"
    return proc


def _dead_transfer(store: Path, hexname: str, data: bytes) -> Path:
    """A transfer whose receiver was killed (-9: no trap ran), left behind."""
    before = set(_incoming(store))
    proc = _start_transfer(store, hexname, data)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=20)
    (left,) = set(_incoming(store)) - before
    return left


def test_deleting_one_cluster_keeps_what_another_uses(tmp_path: Path) -> None:
    dr = tmp_path / "data"
    store = dr / "layers"
    (only_a, a_data), (shared, s_data), (only_b, b_data) = (_layer(t) for t in "asb")
    coming, c_data = _layer("c", BIG)
    _run("prepare-data-root.sh", str(dr), "A", only_a, shared)
    # B's rootfs is mounted on an older image (an update in progress): that
    # image's layers stay listed until B's next provision
    old, old_data = _layer("o")
    (dr / "B" / "lower").mkdir(parents=True)
    (dr / "B" / "lower" / "0").symlink_to(store / old / "fs")
    _run("prepare-data-root.sh", str(dr), "B", shared, only_b, coming, shared)
    assert (dr / "B" / "layers.list").read_text().split() == [shared, only_b, coming, old]
    (dr / "B" / "lower" / "0").unlink()
    for hexname, data in ((only_a, a_data), (shared, s_data), (only_b, b_data), (old, old_data)):
        assert _receive(dr, hexname, data) == f"received {hexname}\n"
    dead = _dead_transfer(store, coming, c_data)
    running = _start_transfer(store, coming, c_data)
    (in_flight,) = set(_incoming(store)) - {dead}
    try:
        rootfs = mounts_escape(str(dr / "A" / "rootfs"))
        _run("remove-cluster.sh", str(dr), "A", rootfs)
        assert not (dr / "A").exists()
        assert sorted(p.name for p in store.iterdir() if not p.name.startswith(".")) == sorted(
            [shared, only_b, old]
        )
        assert _incoming(store) == [in_flight], "B's transfer must stay, the dead one go"
        assert running.stdin is not None
        running.stdin.write(c_data[len(c_data) // 2 :])
        out, err = running.communicate(timeout=60)
        assert running.returncode == 0, err
        assert out.decode() == f"received {coming}\n"
        assert (store / coming / "fs" / "c" / "a").stat().st_size == BIG
    finally:
        if running.poll() is None:
            os.killpg(running.pid, signal.SIGKILL)
            running.communicate(timeout=20)
    _run("remove-cluster.sh", str(dr), "B", mounts_escape(str(dr / "B" / "rootfs")))
    assert not dr.exists(), "the last cluster takes the data root kbuild created"


def test_a_new_transfer_clears_only_dead_ones(tmp_path: Path) -> None:
    """What distribute.send_missing did blindly (rm -rf .incoming-*) is now the
    receiver's job, and it spares transfers that are running."""
    dr = tmp_path / "data"
    store = dr / "layers"
    big, big_data = _layer("c", BIG)
    small, small_data = _layer("s")
    _run("prepare-data-root.sh", str(dr), "A", big, small)
    dead = _dead_transfer(store, big, big_data)
    running = _start_transfer(store, big, big_data)
    try:
        assert _receive(dr, small, small_data) == f"received {small}\n"
        assert dead not in _incoming(store) and len(_incoming(store)) == 1
    finally:
        os.killpg(running.pid, signal.SIGKILL)
        running.communicate(timeout=20)


def _marker(store: Path, hexname: str) -> dict[str, str]:
    lines = (store / hexname / "verified").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines)


def _set_boot(store: Path, hexname: str, boot: str) -> None:
    marker = _marker(store, hexname) | {"boot": boot}
    (store / hexname / "verified").write_text("".join(f"{k}={v}\n" for k, v in marker.items()))


def test_marker_from_an_earlier_boot_is_trusted_only_when_files_add_up(tmp_path: Path) -> None:
    dr = tmp_path / "data"
    store = dr / "layers"
    hexname, data = _layer("p", 1000)
    layer = Layer(digest="sha256:" + hexname, diff_id="sha256:" + hexname,
                  media_type="application/vnd.oci.image.layer.v1.tar", size=len(data))  # fmt: skip
    conn = LocalConnection("local")
    _receive(dr, hexname, data)
    marker = _marker(store, hexname)
    boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    # entries: the dir p, p/a, p/b; bytes: 1000 + 2
    assert marker == {"hex": hexname, "boot": boot, "files": "3", "bytes": "1002"}
    assert present_layers(conn, str(dr), [layer]) == {hexname}
    # another boot, files intact: trusted, not sent again
    _set_boot(store, hexname, "00000000-0000-0000-0000-000000000000")
    assert present_layers(conn, str(dr), [layer]) == {hexname}
    assert _receive(dr, hexname, data) == f"present {hexname}\n"
    # another boot, a file's data lost (power cut before it reached the disk)
    (store / hexname / "fs" / "p" / "a").write_bytes(b"")
    assert present_layers(conn, str(dr), [layer]) == set()
    assert _receive(dr, hexname, data) == f"received {hexname}\n"
    assert (store / hexname / "fs" / "p" / "a").read_bytes() == b"p" * 1000
    assert _marker(store, hexname)["boot"] == boot
    assert present_layers(conn, str(dr), [layer]) == {hexname}
    # another boot, a file gone: sent again
    _set_boot(store, hexname, "00000000-0000-0000-0000-000000000000")
    (store / hexname / "fs" / "p" / "b").unlink()
    assert present_layers(conn, str(dr), [layer]) == set()
    # this boot: trusted as written (no counting on the fast path)
    _set_boot(store, hexname, boot)
    assert present_layers(conn, str(dr), [layer]) == {hexname}
    # a marker of an older kbuild (no counts): not trusted
    (store / hexname / "verified").write_text(hexname + "\n")
    assert present_layers(conn, str(dr), [layer]) == set()
    assert _receive(dr, hexname, data) == f"received {hexname}\n"
    assert sorted(p.name for p in store.iterdir() if p.name != ".lock") == [hexname]


@pytest.fixture
def odd_rootfs(tmp_path: Path) -> Iterator[ClusterPaths]:
    """A cluster whose data root has a space, brackets, a dot and a backslash,
    its rootfs a real tmpfs mount."""
    if os.geteuid() != 0:
        pytest.skip("mounting needs root")
    dr = tmp_path / "a b[x].c\\d"
    paths = ClusterPaths(str(dr), "c")
    Path(paths.rootfs).mkdir(parents=True)
    _run("prepare-data-root.sh", str(dr), "c")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "kbuild-test", paths.rootfs],
                   check=True)  # fmt: skip
    try:
        yield paths
    finally:
        if os.path.ismount(paths.rootfs):
            subprocess.run(["umount", "-l", paths.rootfs], check=False)


def test_rootfs_under_an_odd_path_is_unmounted(odd_rootfs: ClusterPaths) -> None:
    paths = odd_rootfs
    Path(paths.rootfs, "f").write_text("x")
    assert os.path.ismount(paths.rootfs)
    assert "/a\\040b[x].c\\134d/c/rootfs tmpfs " in Path("/proc/self/mounts").read_text()
    _run("remove-cluster.sh", paths.data_root, paths.cluster, mounts_escape(paths.rootfs))
    assert not os.path.ismount(paths.rootfs)
    assert not Path(paths.base).exists()


def test_is_mounted_under_an_odd_path(odd_rootfs: ClusterPaths) -> None:
    """The Python side's check: the same literal comparison (fstype tmpfs here,
    so the overlay check says no while the plain one says yes)."""
    from kbuild.runtime.mount import in_mounts

    conn = LocalConnection("local")
    assert conn.run(in_mounts(odd_rootfs.rootfs), check=False).exit_status == 0
    assert conn.run(in_mounts(odd_rootfs.rootfs, "tmpfs"), check=False).exit_status == 0
    assert not is_mounted(conn, odd_rootfs)
    assert conn.run(in_mounts(odd_rootfs.rootfs + "x"), check=False).exit_status == 1
