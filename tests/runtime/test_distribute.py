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
from kbuild.runtime.image import ImageInfo, Layer, inspect_image
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
            boot = conn.run("cat /proc/sys/kernel/random/boot_id").stdout
            for layer in image.layers:
                marker = conn.run(f"cat {layer_store(DATA_ROOT)}/{layer.hex}/verified").stdout
                assert marker.startswith(f"hex={layer.hex}\nboot={boot}files=")
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


def test_layer_lost_in_a_power_cut_is_sent_again_and_remounted(
    store: Store, hosts: tuple[HostSet, HostSet]
) -> None:
    """A marker from an earlier boot whose files no longer add up (data never
    synced before the power went): the layer is sent again, the rootfs
    mounted again over it."""
    image = _image(store)
    conn = _conn(hosts[0])
    paths = ClusterPaths(DATA_ROOT, "cut")
    first = f"{layer_store(DATA_ROOT)}/{image.layers[0].hex}"
    try:
        facts = gather_facts(conn, DATA_ROOT)
        send_missing(
            conn, store, DATA_ROOT, host_layers(conn, DATA_ROOT, image), host_tools=facts.tools
        )
        assert mount_rootfs(conn, paths, image.layers) is True
        conn.run(f"sed -i 's/^boot=.*/boot=before-the-cut/' {first}/verified")
        assert host_layers(conn, DATA_ROOT, image).missing == []  # files add up: trusted
        assert mount_rootfs(conn, paths, image.layers) is False
        conn.run(f": > {first}/fs/data/keep.txt")  # its data never reached the disk
        todo = host_layers(conn, DATA_ROOT, image)
        assert todo.missing == [image.layers[0]]
        send_missing(conn, store, DATA_ROOT, todo, host_tools=facts.tools)
        assert mount_rootfs(conn, paths, image.layers) is True
        assert conn.run(f"cat {paths.rootfs}/data/keep.txt").stdout == "keep\n"
        assert mount_rootfs(conn, paths, image.layers) is False
    finally:
        unmount_rootfs(conn, paths)
        conn.run(f"rm -rf {DATA_ROOT}")


def _q(text: str) -> str:
    return "'" + text + "'"


def _receive_cmd(hexname: str, mode: str) -> str:
    return remote_script("receive-layer.sh", layer_store(DATA_ROOT), hexname, mode)


def _leftovers(conn: Connection) -> str:
    return conn.run(
        f"ls -a {layer_store(DATA_ROOT)} 2>/dev/null | grep -v -x -e . -e .. -e .lock; true"
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


def _other_blob_of_same_tar(store: Store, layer: Layer) -> tuple[bytes, bytes, str, str]:
    """The layer's blob, another zstd blob of the same tar (same diffID), the
    blob digest's hex and the receive command that expects that digest."""
    blob = store.open_blob(layer.digest).read()
    tar_bytes = zstandard.ZstdDecompressor().decompressobj().decompress(blob)
    assert hashlib.sha256(tar_bytes).hexdigest() == layer.hex
    other = zstandard.ZstdCompressor(level=19).compress(tar_bytes)
    assert other != blob
    want = layer.digest.removeprefix("sha256:")
    cmd = remote_script("receive-layer.sh", layer_store(DATA_ROOT), layer.hex, "zstd", want)
    return blob, other, want, cmd


def test_compressed_stream_is_checked_by_its_blob_digest(
    store: Store, hosts: tuple[HostSet, HostSet]
) -> None:
    """The host hashes the zstd stream as received against the blob digest: a
    different blob of the same tar (same diffID) is refused, the right one kept."""
    image = _image(store)
    layer = image.layers[0]
    conn = _conn(hosts[1])
    blob, other, want, cmd = _other_blob_of_same_tar(store, layer)
    try:
        with pytest.raises(HostError) as err:
            conn.run(cmd, stdin=other)
        assert err.value.exit_status == 4
        assert f"sha256 of the received zstd blob is {hashlib.sha256(other).hexdigest()}" in (
            err.value.output_tail
        )
        # one flipped byte in the middle of the real blob
        bad = bytearray(blob)
        bad[len(bad) // 2] ^= 0xFF
        with pytest.raises(HostError) as err:
            conn.run(cmd, stdin=bytes(bad))
        assert err.value.exit_status in (3, 4)
        assert _leftovers(conn) == ""
        assert host_layers(conn, DATA_ROOT, image).missing[0] == layer
        # a bad sum argument is refused before anything is read
        with pytest.raises(HostError) as err:
            conn.run(cmd.replace(want, "x" * 64), stdin=blob)
        assert err.value.exit_status == 2
        conn.run(cmd, stdin=blob)
        got = conn.run(f"sha256sum {layer_store(DATA_ROOT)}/{layer.hex}/fs/data/big.bin").stdout
        assert (
            got.split()[0] == hashlib.sha256(hashlib.sha256(b"seed").digest() * 40000).hexdigest()
        )
        assert layer.hex not in {x.hex for x in host_layers(conn, DATA_ROOT, image).missing}
    finally:
        conn.run(f"rm -rf {DATA_ROOT}")


def test_blob_not_matching_its_diff_id_is_not_sent(
    tmp_path: Path, hosts: tuple[HostSet, HostSet]
) -> None:
    """The host trusts the blob digest only because this side checked the blob
    against the diffID: a blob whose tar is not the diffID never leaves."""
    from kbuild.errors import DigestMismatch

    local = Store(tmp_path / "s")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("f")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"a"))
    blob = zstandard.ZstdCompressor().compress(buf.getvalue())
    lie = "sha256:" + hashlib.sha256(b"some other tar").hexdigest()
    layer = LayerInfo(
        digest=local.put_bytes(blob),
        diff_id=lie,
        size=len(blob),
        uncompressed_size=len(buf.getvalue()),
        media_type=MediaType.OCI_LAYER_ZSTD,
    )
    local.tag("lie:1", local.write_image({"architecture": "amd64", "os": "linux"}, [layer]))
    image = inspect_image(local, "lie:1")
    conn = _conn(hosts[1])
    events: list[Event] = []
    try:
        facts = gather_facts(conn, DATA_ROOT)
        assert "zstd" in facts.tools
        todo = host_layers(conn, DATA_ROOT, image)
        with pytest.raises(DigestMismatch):
            send_missing(
                conn, local, DATA_ROOT, todo, host_tools=facts.tools, progress=events.append
            )
        assert not [e for e in events if isinstance(e, BytesSent)]
        assert conn.run(f"ls -a {layer_store(DATA_ROOT)} 2>/dev/null | wc -l").stdout.strip() in (
            "0",
            "2",
        )
    finally:
        conn.run(f"rm -rf {DATA_ROOT}")


class _Gauge:
    """The real connection, counting its streams in flight (to see overlap)."""

    def __init__(self, conn: Connection) -> None:
        import threading

        self.conn = conn
        self.lock = threading.Lock()
        self.now = 0
        self.most = 0

    def __getattr__(self, name: str) -> object:
        return getattr(self.conn, name)

    def run_with_input(self, *args: object, **kwargs: object) -> object:
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)
        try:
            time.sleep(0.3)  # both streams open before either can finish
            return self.conn.run_with_input(*args, **kwargs)  # type: ignore[arg-type]
        finally:
            with self.lock:
                self.now -= 1


def test_a_host_receives_two_layers_at_once(store: Store, hosts: tuple[HostSet, HostSet]) -> None:
    from kbuild.runtime.distribute import LAYER_STREAMS

    image = _image(store)
    conn = _conn(hosts[1])
    gauge = _Gauge(conn)
    try:
        facts = gather_facts(conn, DATA_ROOT)
        todo = host_layers(conn, DATA_ROOT, image)
        sent = send_missing(gauge, store, DATA_ROOT, todo, host_tools=facts.tools)  # type: ignore[arg-type]
        assert sent == sum(x.size for x in image.layers)
        assert gauge.most == LAYER_STREAMS == 2
        assert host_layers(conn, DATA_ROOT, image).missing == []
    finally:
        conn.run(f"rm -rf {DATA_ROOT}")


def test_openssl_hashes_the_stream_when_the_host_has_it(
    store: Store, hosts: tuple[HostSet, HostSet]
) -> None:
    """With openssl on the host the stream is hashed by `openssl dgst` (SHA
    instructions); the check still refuses a wrong stream and keeps the right one."""
    import subprocess

    image = _image(store)
    layer = image.layers[0]
    host = hosts[1][0]
    real = "/usr/local/lib/kbuild-test-openssl"
    subprocess.run(["podman", "cp", "/usr/bin/openssl", f"{host.container}:{real}"],
                   check=True, capture_output=True, timeout=60)  # fmt: skip
    conn = _conn(hosts[1])
    # a wrapper that notes each use, then runs the real openssl
    conn.run(
        "printf '%s\\n' '#!/bin/sh' 'echo \"$*\" >>/tmp/kbuild-openssl.log' "
        f"'exec {real} \"$@\"' >/usr/local/bin/openssl && chmod 755 /usr/local/bin/openssl"
    )
    blob, other, want, cmd = _other_blob_of_same_tar(store, layer)
    try:
        with pytest.raises(HostError) as err:
            conn.run(cmd, stdin=other)
        assert err.value.exit_status == 4
        assert f"is {hashlib.sha256(other).hexdigest()}, not {want}" in err.value.output_tail
        assert _leftovers(conn) == ""
        conn.run(cmd, stdin=blob)
        assert layer.hex not in {x.hex for x in host_layers(conn, DATA_ROOT, image).missing}
        assert conn.run("cat /tmp/kbuild-openssl.log").stdout == "dgst -sha256 -r\n" * 2
    finally:
        conn.run(f"rm -rf {DATA_ROOT} /usr/local/bin/openssl {real} /tmp/kbuild-openssl.log")
