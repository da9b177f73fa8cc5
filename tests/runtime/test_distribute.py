"""Layers to hosts: once, one stream, verified, nothing partial; mount and whiteouts.

Real podman hosts: one without zstd (the sender decompresses), one with.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import zstandard

from kbuild.errors import HostError
from kbuild.layerstore import LayerInfo, MediaType, Store, TarEntry, pack_layer
from kbuild.runtime.distribute import (
    host_layers,
    layer_store,
    remote_script,
    send_missing,
)
from kbuild.runtime.image import ImageInfo, inspect_image
from kbuild.runtime.layers import scan_image
from kbuild.runtime.mount import ClusterPaths, is_mounted, mount_rootfs, unmount_rootfs
from kbuild.runtime.preflight import gather_facts
from kbuild.runtime.runevents import BytesSent, Event
from kbuild.runtime.ssh import Connection
from tests.fixtures.hosts import HostSet

pytestmark = [pytest.mark.integration]

DATA_ROOT = "/tmp/kbuild-dist"


def _image(store: Store) -> ImageInfo:
    """Three layers: a big-ish random file, a file later deleted, the whiteout."""
    big = hashlib.sha256(b"seed").digest() * 40000  # 1.28 MB, compressible a bit
    l1 = pack_layer(store, [
        TarEntry("data", "dir", 0o755),
        TarEntry("data/big.bin", "file", 0o644, data=big, size=len(big)),
        TarEntry("data/keep.txt", "file", 0o644, data=b"keep\n", size=5),
    ])  # fmt: skip
    l2 = pack_layer(store, [
        TarEntry("data", "dir", 0o755),
        TarEntry("data/gone.txt", "file", 0o644, data=b"gone\n", size=5),
        TarEntry("etc", "dir", 0o755),
        TarEntry("etc/app.conf.tmpl", "file", 0o644, data=b"v={{ .V }}\n", size=10),
    ])  # fmt: skip
    l3 = pack_layer(store, [
        TarEntry("data", "dir", 0o755),
        TarEntry("data/gone.txt", "whiteout"),
    ])  # fmt: skip
    config = {"architecture": "amd64", "os": "linux", "config": {"Env": ["V=1"]}}
    desc = store.write_image(config, [l1, l2, l3])
    store.tag("dist:test", desc)
    return inspect_image(store, "dist:test")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    return Store(tmp_path_factory.mktemp("dist-store"))


@pytest.fixture(scope="module")
def hosts(podman_hosts: Callable[..., HostSet]) -> tuple[HostSet, HostSet]:
    return podman_hosts(1), podman_hosts(1, zstd=True)


def _conn(hs: HostSet) -> Connection:
    return hs.connect(hs[0])


def test_send_once_with_and_without_zstd(store: Store, hosts: tuple[HostSet, HostSet]) -> None:
    image = _image(store)
    scans = scan_image(store, image)
    plain, with_zstd = _conn(hosts[0]), _conn(hosts[1])
    try:
        for conn, has_zstd in ((plain, False), (with_zstd, True)):
            facts = gather_facts(conn, DATA_ROOT)
            assert ("zstd" in facts.tools) is has_zstd
            events: list[Event] = []
            todo = host_layers(conn, DATA_ROOT, image)
            assert [x.hex for x in todo.missing] == [x.hex for x in image.layers]
            sent = send_missing(
                conn, store, DATA_ROOT, todo, host_tools=facts.tools, progress=events.append
            )
            assert sent == sum(x.size for x in image.layers)
            last: dict[str, int] = {}
            for e in events:
                if isinstance(e, BytesSent):
                    last[e.layer] = e.done
            # raw blobs to a host with zstd, the decompressed tar to one without
            want = {
                x.digest: (x.size if has_zstd else s.size)
                for x, s in zip(image.layers, scans, strict=True)
            }
            assert last == want
            for layer in image.layers:
                assert (
                    conn.run(f"cat {layer_store(DATA_ROOT)}/{layer.hex}/verified").stdout
                    == layer.hex + "\n"
                )
            big = conn.run(
                f"sha256sum {layer_store(DATA_ROOT)}/{image.layers[0].hex}/fs/data/big.bin"
            ).stdout
            assert (
                big.split()[0]
                == hashlib.sha256(hashlib.sha256(b"seed").digest() * 40000).hexdigest()
            )
            # the whiteout became an overlay whiteout (a 0/0 character device)
            wh = conn.run(
                f"stat -c %F:%t:%T {layer_store(DATA_ROOT)}/{image.layers[2].hex}/fs/data/gone.txt"
            )
            assert wh.stdout.strip() == "character special file:0:0"
            # present layers are not sent again
            events.clear()
            again = host_layers(conn, DATA_ROOT, image)
            assert again.missing == [] and len(again.present) == 3
            assert (
                send_missing(
                    conn, store, DATA_ROOT, again, host_tools=facts.tools, progress=events.append
                )
                == 0
            )
            assert not [e for e in events if isinstance(e, BytesSent)]
    finally:
        for conn in (plain, with_zstd):
            conn.run(f"rm -rf {DATA_ROOT}")


def test_mount_overlay_unit_and_unmount(store: Store, hosts: tuple[HostSet, HostSet]) -> None:
    image = _image(store)
    conn = _conn(hosts[0])
    paths = ClusterPaths(DATA_ROOT, "mnt")
    try:
        facts = gather_facts(conn, DATA_ROOT)
        send_missing(
            conn, store, DATA_ROOT, host_layers(conn, DATA_ROOT, image), host_tools=facts.tools
        )
        assert mount_rootfs(conn, paths, image.layers) is True
        assert is_mounted(conn, paths)
        listing = conn.run(f"ls {paths.rootfs}/data").stdout.split()
        assert listing == ["big.bin", "keep.txt"]  # gone.txt deleted by the upper layer
        conn.run(f"echo new > {paths.rootfs}/data/new.txt")
        assert conn.run(f"cat {paths.upper}/data/new.txt").stdout == "new\n"
        # unchanged: nothing touched
        assert mount_rootfs(conn, paths, image.layers) is False
        # the unit survives a stop/start of the mount (as at boot)
        conn.run(f"systemctl stop {_q(paths.unit_name)} && systemctl start {_q(paths.unit_name)}")
        assert conn.run(f"cat {paths.rootfs}/data/keep.txt").stdout == "keep\n"
        assert conn.run(f"systemctl is-enabled {_q(paths.unit_name)}").stdout.strip() == "enabled"
        unmount_rootfs(conn, paths)
        assert not is_mounted(conn, paths)
        assert conn.run(f"test -e {_q(paths.unit_path)}", check=False).exit_status == 1
    finally:
        unmount_rootfs(conn, paths)
        conn.run(f"rm -rf {DATA_ROOT}")


def _q(text: str) -> str:
    return "'" + text + "'"


def _receive_cmd(hexname: str, mode: str) -> str:
    return remote_script("receive-layer.sh", layer_store(DATA_ROOT), hexname, mode)


def _leftovers(conn: Connection) -> str:
    return conn.run(
        f"ls -a {layer_store(DATA_ROOT)} 2>/dev/null | grep -v -x -e . -e .. ; true"
    ).stdout


def test_interrupted_transfer_leaves_nothing(store: Store, hosts: tuple[HostSet, HostSet]) -> None:
    image = _image(store)
    layer = image.layers[0]
    conn = _conn(hosts[0])
    try:
        blob = store.open_blob(layer.digest).read()
        raw = zstandard.ZstdDecompressor().decompressobj().decompress(blob)
        proc = conn.open_exec(_receive_cmd(layer.hex, "none"))
        proc.write(raw[: len(raw) // 2])
        proc.kill()  # the connection's channel goes away mid-stream
        deadline = time.monotonic() + 20
        while _leftovers(conn) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _leftovers(conn) == ""
    finally:
        conn.run(f"rm -rf {DATA_ROOT}")


def test_damaged_stream_is_rejected(store: Store, hosts: tuple[HostSet, HostSet]) -> None:
    image = _image(store)
    layer = image.layers[1]
    conn = _conn(hosts[0])
    other = io.BytesIO()
    with tarfile.open(fileobj=other, mode="w") as tar:
        info = tarfile.TarInfo("x")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"y"))
    try:
        with pytest.raises(HostError) as err:
            conn.run(_receive_cmd(layer.hex, "none"), stdin=other.getvalue())
        assert err.value.exit_status == 4
        assert "sha256 of the received tar" in err.value.output_tail
        # a cut zstd stream
        blob = store.open_blob(image.layers[0].digest).read()
        with pytest.raises(HostError):
            conn.run(_receive_cmd(image.layers[0].hex, "gzip"), stdin=blob[:100])
        assert _leftovers(conn) == ""
    finally:
        conn.run(f"rm -rf {DATA_ROOT}")


def test_layer_escaping_the_rootfs_is_refused_before_sending(tmp_path: Path) -> None:
    from kbuild.errors import UnsafeLayerError
    from kbuild.runtime.layers import scan_layer

    store = Store(tmp_path / "s")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("../../etc/evil")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"evil"))
    tar_bytes = buf.getvalue()
    blob = zstandard.ZstdCompressor().compress(tar_bytes)
    digest = store.put_bytes(blob)
    layer = LayerInfo(
        digest=digest,
        diff_id="sha256:" + hashlib.sha256(tar_bytes).hexdigest(),
        size=len(blob),
        uncompressed_size=len(tar_bytes),
        media_type=MediaType.OCI_LAYER_ZSTD,
    )
    store.tag("evil:1", store.write_image({"architecture": "amd64", "os": "linux"}, [layer]))
    image = inspect_image(store, "evil:1")
    with pytest.raises(UnsafeLayerError):
        scan_layer(store, image.layers[0])
