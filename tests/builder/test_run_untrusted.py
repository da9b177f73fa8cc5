"""A base image is untrusted: its symlinks and devices must not reach the build machine.

RUN runs host tools in the image's rootfs; every mount but the rootfs, a
private /tmp and /var/tmp and a minimal /dev is read-only and nodev in its
mount namespace. COPY --from reads a stage's rootfs only inside it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from kbuild.errors import BuildError, UnsafeLayerError
from kbuild.layerstore import Store, TarEntry, pack_layer

from .util import run_build, write_tree

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="RUN needs root")


@pytest.fixture
def machine_dir() -> Iterator[Path]:
    """A directory of the build machine outside every private dir of RUN (/tmp, /var/tmp)."""
    path = Path(tempfile.mkdtemp(prefix="kbuild-test-machine-", dir="/var/lib"))
    (path / "existing").write_text("machine data\n")
    try:
        yield path
    finally:
        shutil.rmtree(path)


def _base(store: Store, entries: list[TarEntry], name: str = "base:1") -> None:
    layer = pack_layer(store, entries)
    store.tag(name, store.write_image({"os": "linux", "architecture": "amd64"}, [layer]))


def _failing_run(store: Store, ctx: Path, kubefile: str) -> str:
    with pytest.raises(BuildError) as info:
        run_build(store, ctx, kubefile)
    return str(info.value)


def test_run_cannot_write_through_an_absolute_symlink_of_the_base(
        store: Store, ctx: Path, machine_dir: Path) -> None:
    _base(store, [TarEntry("etc", "symlink", linkname=str(machine_dir))])
    text = _failing_run(store, ctx, "FROM base:1\nRUN echo pwned > etc/passwd\n")
    assert "Kubefile:2: RUN failed" in text and "Read-only file system" in text
    text = _failing_run(store, ctx, "FROM base:1\nRUN echo pwned >> etc/existing\n")
    assert "Read-only file system" in text
    text = _failing_run(store, ctx, "FROM base:1\nRUN rm etc/existing\n")
    assert "Read-only file system" in text
    assert sorted(os.listdir(machine_dir)) == ["existing"]
    assert (machine_dir / "existing").read_text() == "machine data\n"


def test_workdir_through_an_absolute_symlink_is_refused(
        store: Store, ctx: Path, machine_dir: Path) -> None:
    _base(store, [TarEntry("etc", "symlink", linkname=str(machine_dir))])
    text = _failing_run(store, ctx, "FROM base:1\nWORKDIR /etc/sub\nRUN true\n")
    assert "cannot enter the working directory /etc/sub" in text
    assert "Read-only file system" in text
    assert sorted(os.listdir(machine_dir)) == ["existing"]


def test_a_symlink_into_the_machine_tmp_reaches_only_the_private_tmp(
        store: Store, ctx: Path, tmp_path: Path) -> None:
    host_tmp = tmp_path / "host-tmp"  # under the machine's /tmp
    host_tmp.mkdir()
    marker = f"kbuild-run-test-{os.getpid()}-{id(store)}"
    _base(store, [TarEntry("t", "symlink", linkname=str(host_tmp))])
    built = run_build(store, ctx, "FROM base:1\n"
                      f"RUN test ! -e t && mkdir -p \"$(readlink t)\" && echo private > t/f "
                      f"&& cat t/f > seen && echo tmp > /tmp/{marker} "
                      f"&& echo vartmp > /var/tmp/{marker}\n")
    root = built.rootfs(tmp_path / "r")
    assert (root / "seen").read_text() == "private\n"
    assert list(host_tmp.iterdir()) == []
    assert not Path("/tmp", marker).exists() and not Path("/var/tmp", marker).exists()


def test_devices_of_the_image_and_of_the_machine_cannot_be_opened(
        store: Store, ctx: Path) -> None:
    _base(store, [TarEntry("zero", "char", 0o666, rdev=os.makedev(1, 5)),
                  TarEntry("kmsg", "symlink", linkname="/dev/kmsg")])
    text = _failing_run(store, ctx, "FROM base:1\nRUN head -c 1 zero > /dev/null\n")
    assert "cannot open 'zero' for reading: Permission denied" in text
    # /dev is a fresh one: the machine's /dev/kmsg is not there, writing makes a plain file
    run_build(store, ctx, "FROM base:1\nRUN echo kbuild-test > kmsg && test -f /dev/kmsg\n")
    # … with what scripts need
    run_build(store, ctx, "FROM base:1\nRUN echo ok > /dev/null && head -c 4 /dev/urandom "
                          "| od > /dev/null && test -c /dev/zero && test -d /dev/shm "
                          "&& echo shm > /dev/shm/x\n")


def test_copy_over_a_base_directory_that_is_an_absolute_symlink(
        store: Store, ctx: Path, machine_dir: Path, tmp_path: Path) -> None:
    _base(store, [TarEntry("etc", "symlink", linkname=str(machine_dir))])
    write_tree(ctx, {"f": "from context\n"})
    # in the overlay the COPY's etc/ directory hides the base's etc symlink
    built = run_build(store, ctx, "FROM base:1 AS s\nCOPY f /etc/f\n"
                      "RUN cat etc/f > copied && echo new > etc/new\n", tags=["s:1"])
    assert sorted(os.listdir(machine_dir)) == ["existing"]
    # unpacking the layers into one tree refuses etc/f written through etc -> /…
    with pytest.raises(UnsafeLayerError, match="'etc/f' is written through symlink 'etc'"):
        built.rootfs(tmp_path / "r")
    text = _failing_run(store, ctx, "FROM s:1\nFROM scratch\nCOPY --from=0 /etc/f /g\n")
    assert "Kubefile:3: layer entry 'etc/f' is written through symlink 'etc'" in text
    # a stage of one layer is its snapshot: the symlink is not followed out of it
    text = _failing_run(store, ctx, "FROM scratch\nCOPY --from=base:1 /etc/existing /g\n")
    assert "Kubefile:2: source '/etc/existing' leads outside the stage 'base:1'" in text
    assert sorted(os.listdir(machine_dir)) == ["existing"]


def test_normal_runs_read_the_machine_and_use_the_network(
        store: Store, ctx: Path, tmp_path: Path) -> None:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"downloaded\n"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/file"
        built = run_build(store, ctx, f"""FROM scratch
RUN mkdir -p bin etc && cp /bin/true bin/true && cp /etc/hostname etc/hostname \\
    && wget -q -O etc/wget {url} && curl -sf -o etc/curl {url} \\
    && tar -C /etc -cf - hostname | tar -C etc -xf - --transform s/hostname/tarred/ \\
    && cd "$ROOTFS" && echo rootfs > etc/via-rootfs
""")
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
    root = built.rootfs(tmp_path / "r")
    assert (root / "bin/true").read_bytes() == Path("/bin/true").read_bytes()
    assert (root / "etc/hostname").read_text() == Path("/etc/hostname").read_text()
    assert (root / "etc/tarred").read_text() == Path("/etc/hostname").read_text()
    assert (root / "etc/wget").read_text() == (root / "etc/curl").read_text() == "downloaded\n"
    assert (root / "etc/via-rootfs").read_text() == "rootfs\n"
    # the read-only mounts stayed inside the RUN's namespace
    for path in ("/", "/tmp", "/var/lib", str(tmp_path)):
        assert not os.statvfs(path).f_flag & os.ST_RDONLY, path
    assert "kbuild-run" not in Path("/proc/self/mountinfo").read_text()
