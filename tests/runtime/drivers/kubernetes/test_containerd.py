"""The Kubernetes driver's containerd files: parsed with tomllib, loaded by a real
containerd, pulls mirrored.

The real test starts containerd (Debian's 1.6, or a 2.x from the Kubernetes
build cache for config version 3) on a private socket with temp root/state
dirs, serves an image from a TLS docker-registry on 127.0.0.1 whose
certificate kbuild's PKI made, and pulls ``docker.io/…``,
``registry.k8s.io/…`` and ``quay.io/…`` names: they resolve to the local
registry only, proving that the mirror works for registries that are not
reachable. Registry, containerd and clients run in a network namespace with
only loopback, so not even a broken configuration can reach out.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import shutil
import signal
import subprocess
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from kbuild.errors import ClusterfileError, UsageError
from kbuild.layerstore import Store, TarEntry, pack_layer
from kbuild.layerstore.registry_layout import write_registry_storage
from kbuild.runtime import clusterfile
from kbuild.runtime.drivers.kubernetes.containerd import (
    MIRRORED_HOSTS,
    ContainerdSettings,
    ca_path,
    certs_d_files,
    config_version_for,
    embedded_registry,
    hosts_files,
    mirror_hosts_toml,
    render_config,
    write_tree,
)
from kbuild.runtime.drivers.kubernetes.pki import generate_ca, registry_cert
from tests.fixtures.registry import REGISTRY_BIN, free_port

REG = "sea.hub:5000"
PAUSE = f"{REG}/pause:3.10.2"


def _debian_containerd() -> str | None:
    path = shutil.which("containerd")
    return path if path and shutil.which("ctr") else None


def _cached_containerd2() -> str | None:
    for path in sorted(glob.glob("/var/cache/kbuild/kubernetes/*/bin/containerd"), reverse=True):
        if os.access(path, os.X_OK):
            return path
    return None


# --------------------------------------------------------------------------- unit


@pytest.mark.parametrize(
    ("version", "want"),
    [("2.4.2", 3), ("v2.0.0", 3), ("1.7.24", 2), ("1.6.20~ds1", 2), ("v1.5.0", 2)],
)
def test_config_version_for(version: str, want: int) -> None:
    assert config_version_for(version) == want


def test_config_version_for_refuses_old_and_junk() -> None:
    with pytest.raises(UsageError, match="too old"):
        config_version_for("1.4.13")
    with pytest.raises(UsageError, match="not a containerd version"):
        config_version_for("latest")


@pytest.mark.parametrize("driver", ["systemd", "cgroupfs"])
def test_config_v3(driver: str) -> None:
    text = render_config(ContainerdSettings(REG, PAUSE, version=3, cgroup_driver=driver,
                                            runc_binary="/usr/local/bin/runc"))
    doc = tomllib.loads(text)
    assert doc["version"] == 3
    images = doc["plugins"]["io.containerd.cri.v1.images"]
    assert images["registry"]["config_path"] == "/etc/containerd/certs.d"
    assert images["pinned_images"]["sandbox"] == PAUSE
    assert images["snapshotter"] == "overlayfs"
    runtime = doc["plugins"]["io.containerd.cri.v1.runtime"]
    runc = runtime["containerd"]["runtimes"]["runc"]
    assert runtime["containerd"]["default_runtime_name"] == "runc"
    assert runc["runtime_type"] == "io.containerd.runc.v2"
    assert runc["options"] == {"SystemdCgroup": driver == "systemd",
                               "BinaryName": "/usr/local/bin/runc"}
    assert runtime["cni"] == {"bin_dirs": ["/opt/cni/bin"], "conf_dir": "/etc/cni/net.d"}
    assert "io.containerd.grpc.v1.cri" not in doc["plugins"]


@pytest.mark.parametrize("driver", ["systemd", "cgroupfs"])
def test_config_v2(driver: str) -> None:
    doc = tomllib.loads(render_config(ContainerdSettings(
        REG, PAUSE, version=2, cgroup_driver=driver, certs_dir="/x/certs.d")))
    assert doc["version"] == 2
    cri = doc["plugins"]["io.containerd.grpc.v1.cri"]
    assert cri["sandbox_image"] == PAUSE
    assert cri["registry"] == {"config_path": "/x/certs.d"}
    assert cri["containerd"]["runtimes"]["runc"]["options"] == {
        "SystemdCgroup": driver == "systemd"}
    assert cri["cni"]["bin_dir"] == "/opt/cni/bin"


@pytest.mark.parametrize(
    "bad",
    [{"version": 1}, {"cgroup_driver": "cgroupv1"}, {"registry": "sea hub"}],
)
def test_config_refuses_bad_settings(bad: dict[str, object]) -> None:
    args: dict[str, object] = {"registry": REG, "sandbox_image": PAUSE, **bad}
    with pytest.raises(UsageError):
        render_config(ContainerdSettings(**args))  # type: ignore[arg-type]


def test_hosts_files_mirror_every_registry() -> None:
    files = hosts_files(REG)
    assert set(files) == {f"{h}/hosts.toml" for h in ("_default", *MIRRORED_HOSTS, REG)}
    ca = "/etc/containerd/certs.d/sea.hub:5000/ca.crt"
    assert ca_path("/etc/containerd/certs.d/", REG) == ca
    for text in files.values():
        doc = tomllib.loads(text)
        # the fallback server is the mirror too: nothing ever goes upstream
        assert doc["server"] == "https://sea.hub:5000"
        assert doc["ca"] == ca
        assert doc["host"] == {"https://sea.hub:5000": {"capabilities": ["pull", "resolve"],
                                                         "ca": ca}}
        assert "override_path" not in doc


def test_mirror_with_a_path_overrides_it() -> None:
    doc = tomllib.loads(mirror_hosts_toml("https://harbor.local/v2/proxy-hub/", ca=None))
    host = doc["host"]["https://harbor.local/v2/proxy-hub"]
    assert host["override_path"] is True and doc["override_path"] is True
    assert "ca" not in host
    with pytest.raises(UsageError):
        mirror_hosts_toml("ftp://x", ca=None)


def test_certs_d_files_and_write(tmp_path: Path) -> None:
    files = certs_d_files(REG, b"---CA---\n")
    assert files[f"{REG}/ca.crt"] == b"---CA---\n"
    write_tree(tmp_path, files)
    assert (tmp_path / "_default/hosts.toml").read_bytes() == files["_default/hosts.toml"]
    assert (tmp_path / REG / "ca.crt").read_bytes() == b"---CA---\n"
    assert not list(tmp_path.rglob(".*.tmp"))
    no_ca = certs_d_files(REG, None)
    assert f"{REG}/ca.crt" not in no_ca
    assert "ca" not in tomllib.loads(no_ca["docker.io/hosts.toml"].decode())
    with pytest.raises(UsageError):
        write_tree(tmp_path, {"../escape": b""})


# --------------------------------------------------------------------------- real containerd


def _dump(binary: str, config: Path) -> str:
    out = subprocess.run([binary, "--config", str(config), "config", "dump"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.mark.skipif(_debian_containerd() is None,
                    reason="containerd/ctr not installed (apt-get install -y containerd)")
def test_containerd_1x_loads_v2_config(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(render_config(ContainerdSettings(
        REG, PAUSE, version=2, certs_dir="/etc/kbuild-test/certs.d")))
    dumped = tomllib.loads(_dump(_debian_containerd() or "", config))
    cri = dumped["plugins"]["io.containerd.grpc.v1.cri"]
    assert cri["sandbox_image"] == PAUSE
    assert cri["registry"]["config_path"] == "/etc/kbuild-test/certs.d"
    assert cri["containerd"]["runtimes"]["runc"]["options"]["SystemdCgroup"] is True


@pytest.mark.skipif(_cached_containerd2() is None,
                    reason="no containerd 2.x built yet in /var/cache/kbuild/kubernetes/*/bin")
def test_containerd_2x_loads_v3_config(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(render_config(ContainerdSettings(REG, PAUSE, version=3)))
    dumped = tomllib.loads(_dump(_cached_containerd2() or "", config))
    images = dumped["plugins"]["io.containerd.cri.v1.images"]
    assert images["pinned_images"]["sandbox"] == PAUSE
    assert images["registry"]["config_path"] == "/etc/containerd/certs.d"
    runc = dumped["plugins"]["io.containerd.cri.v1.runtime"]["containerd"]["runtimes"]["runc"]
    assert runc["options"]["SystemdCgroup"] is True


class NetNS:
    """A network namespace with only loopback, held by a sleeping process.

    The registry, containerd and ctr/crictl run in it, so even a broken
    mirror configuration cannot send a packet beyond 127.0.0.1: a name that
    is not mirrored fails with "network unreachable" instead of going out.
    """

    def __init__(self) -> None:
        self.holder = subprocess.Popen(
            ["unshare", "--net", "sh", "-c", "ip link set lo up && echo ready && exec sleep 900"],
            stdout=subprocess.PIPE, start_new_session=True)
        assert self.holder.stdout is not None
        if self.holder.stdout.readline().strip() != b"ready":
            self.close()
            raise RuntimeError("could not set up a network namespace")

    def cmd(self, *argv: str) -> list[str]:
        """``argv`` run inside the namespace (nsenter execs it: same PID)."""
        return ["nsenter", f"--net=/proc/{self.holder.pid}/ns/net", "--", *argv]

    def run(self, *argv: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.cmd(*argv), capture_output=True, text=True, timeout=timeout)

    def close(self) -> None:
        _stop(self.holder)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


@dataclass
class Registry:
    """docker-registry with TLS inside a :class:`NetNS`."""

    work: Path
    port: int
    ns: NetNS
    proc: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def storage(self) -> Path:
        return self.work / "storage"

    def start(self, cert: Path, key: Path) -> None:
        config = self.work / "config.yml"
        config.write_text(
            "version: 0.1\nlog: {level: info, formatter: text, accesslog: {disabled: false}}\n"
            f"storage: {{filesystem: {{rootdirectory: {self.storage}}}}}\n"
            f"http: {{addr: '{self.host}', tls: {{certificate: {cert}, key: {key}}}}}\n")
        with (self.work / "registry.log").open("wb") as log:
            self.proc = subprocess.Popen(self.ns.cmd(REGISTRY_BIN, "serve", str(config)),
                                         stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        deadline = time.monotonic() + 15
        while self.ns.run("curl", "-sk", "-o", "/dev/null", f"https://{self.host}/v2/",
                          timeout=10).returncode != 0:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("registry did not start:\n" + self.log()[-2000:])
            time.sleep(0.1)

    def log(self) -> str:
        return (self.work / "registry.log").read_text(errors="replace")

    def requests(self) -> set[str]:
        """``METHOD /path?query`` of every request in the access log."""
        out = set()
        for line in self.log().splitlines():
            m = re.search(r'"(GET|HEAD) (/v2/\S*) HTTP', line)
            if m:
                out.add(f"{m.group(1)} {m.group(2)}")
        return out

    def stop(self) -> None:
        if self.proc is not None:
            _stop(self.proc)


@dataclass
class Daemon:
    """A containerd process on a private socket, inside the namespace."""

    ns: NetNS
    ctr: str
    socket: Path

    def ctr_run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return self.ns.run(self.ctr, "--address", str(self.socket), *args, timeout=timeout)


@contextlib.contextmanager
def _containerd(ns: NetNS, binary: str, ctr: str, work: Path, version: int,
                certs_dir: Path) -> Iterator[Daemon]:
    work.mkdir(parents=True, exist_ok=True)
    sock = work / "c.sock"
    settings = ContainerdSettings(
        registry=REG, sandbox_image=PAUSE, version=version, certs_dir=str(certs_dir),
        root=str(work / "root"), state=str(work / "state"), address=str(sock),
        cgroup_driver="cgroupfs",
    )
    config = work / "config.toml"
    config.write_text(render_config(settings))
    log = work / "containerd.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(ns.cmd(binary, "--config", str(config)), stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while not sock.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("containerd did not start:\n" + log.read_text()[-3000:])
            time.sleep(0.1)
        yield Daemon(ns, ctr, sock)
    finally:
        _stop(proc)
        _unmount_under(work)
        shutil.rmtree(work, ignore_errors=True)


def _unmount_under(path: Path) -> None:
    prefix = str(path.resolve()) + "/"
    with open("/proc/self/mounts") as f:
        points = [line.split()[1] for line in f if line.split()[1].startswith(prefix)]
    for point in sorted(points, key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, timeout=30)


@dataclass
class Mirror:
    ns: NetNS
    registry: Registry
    certs_d: Path


@pytest.fixture
def mirror(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mirror]:
    """A TLS registry (kbuild's PKI) holding images, and a certs.d mirroring to it."""
    work = tmp_path_factory.mktemp("ctd-mirror")
    ns = NetNS()
    reg = Registry(work, free_port(), ns)
    try:
        ca = generate_ca()
        crt, key = registry_cert(ca, "sea.hub", []).write(work / "pki", "registry")
        store = Store(work / "store")
        images = []
        for name, payload in (("docker.io/library/foo:1", b"foo"),
                              ("registry.k8s.io/pause:3.10.2", b"pause"),
                              ("quay.io/coreos/flannel:v0.1", b"flannel"),
                              ("example.invalid/team/app:2", b"app")):
            layer = pack_layer(store, [TarEntry("payload", "file", data=payload)])
            images.append((name, store.write_image({"architecture": "amd64", "os": "linux"},
                                                   [layer])))
        write_registry_storage(store, images, reg.storage)
        certs_d = work / "certs.d"
        write_tree(certs_d, certs_d_files(reg.host, ca.cert_pem, certs_dir=str(certs_d)))
        reg.start(crt, key)
        yield Mirror(ns, reg, certs_d)
    finally:
        reg.stop()
        ns.close()


def _pull_through_mirror(daemon: Daemon, m: Mirror, names: list[str]) -> None:
    for name in names:
        out = daemon.ctr_run("images", "pull", "--hosts-dir", str(m.certs_d), name)
        assert out.returncode == 0, f"{name}: {out.stdout}\n{out.stderr}"
    listed = daemon.ctr_run("images", "ls", "-q")
    assert set(listed.stdout.split()) >= set(names)
    # containerd asks the mirror with ?ns=<the registry the name was for>
    requests = m.registry.requests()
    for path, ns in (("library/foo/manifests/1", "docker.io"),
                     ("pause/manifests/3.10.2", "registry.k8s.io"),
                     ("coreos/flannel/manifests/v0.1", "quay.io")):
        assert f"HEAD /v2/{path}?ns={ns}" in requests, sorted(requests)


@pytest.mark.integration
@pytest.mark.skipif(_debian_containerd() is None or os.geteuid() != 0,
                    reason="needs root and containerd/ctr (apt-get install -y containerd)")
def test_containerd_1x_pulls_everything_from_the_mirror(mirror: Mirror, tmp_path: Path) -> None:
    binary = _debian_containerd() or ""
    with _containerd(mirror.ns, binary, "ctr", tmp_path / "ctd", 2, mirror.certs_d) as d:
        _pull_through_mirror(d, mirror, ["docker.io/library/foo:1",
                                         "registry.k8s.io/pause:3.10.2",
                                         "quay.io/coreos/flannel:v0.1"])
        assert len(d.ctr_run("content", "ls", "-q").stdout.split()) >= 9  # 3 x 3 blobs
        # without the hosts files the same name is not mirrored: it fails (no route
        # out of the namespace) and the mirror never hears of it
        empty = tmp_path / "empty-certs.d"
        empty.mkdir()
        before = mirror.registry.requests()
        out = d.ctr_run("images", "pull", "--hosts-dir", str(empty),
                        "docker.io/library/foo:2", timeout=60)
        assert out.returncode != 0
        assert mirror.registry.requests() == before


def _cached_ctr2() -> str | None:
    binary = _cached_containerd2()
    if binary is None:
        return None
    ctr = Path(binary).with_name("ctr")
    return str(ctr) if os.access(ctr, os.X_OK) else None


@pytest.mark.integration
@pytest.mark.skipif(_cached_ctr2() is None or os.geteuid() != 0,
                    reason="needs root and containerd 2.x + ctr in the Kubernetes build cache")
def test_containerd_2x_pulls_everything_from_the_mirror(mirror: Mirror, tmp_path: Path) -> None:
    binary, ctr = _cached_containerd2() or "", _cached_ctr2() or ""
    with _containerd(mirror.ns, binary, ctr, tmp_path / "ctd", 3, mirror.certs_d) as d:
        _pull_through_mirror(d, mirror, ["docker.io/library/foo:1",
                                         "registry.k8s.io/pause:3.10.2",
                                         "quay.io/coreos/flannel:v0.1",
                                         # no directory of its own: _default
                                         "example.invalid/team/app:2"])
        assert "HEAD /v2/team/app/manifests/2?ns=example.invalid" in mirror.registry.requests()


def _crictl() -> str | None:
    for path in sorted(glob.glob("/var/cache/kbuild/kubernetes/*/bin/crictl"), reverse=True):
        if os.access(path, os.X_OK):
            return path
    return shutil.which("crictl")


@pytest.mark.integration
@pytest.mark.skipif(_crictl() is None or os.geteuid() != 0,
                    reason="needs root and crictl (built into the Kubernetes cache)")
@pytest.mark.parametrize(
    "flavour",
    [
        pytest.param("1.x", id="containerd-1.x-config-v2",
                     marks=pytest.mark.skipif(_debian_containerd() is None,
                                              reason="Debian's containerd not installed")),
        pytest.param("2.x", id="containerd-2.x-config-v3",
                     marks=pytest.mark.skipif(_cached_ctr2() is None,
                                              reason="containerd 2.x not built yet")),
    ],
)
def test_cri_pulls_through_config_path(mirror: Mirror, tmp_path: Path, flavour: str) -> None:
    """The CRI plugin (what the kubelet uses) reads certs.d through config_path."""
    crictl = _crictl() or ""
    if flavour == "1.x":
        binary, ctr, version = _debian_containerd() or "", "ctr", 2
    else:
        binary, ctr, version = _cached_containerd2() or "", _cached_ctr2() or "", 3
    with _containerd(mirror.ns, binary, ctr, tmp_path / "ctd", version, mirror.certs_d) as d:
        endpoint = f"unix://{d.socket}"
        base = [crictl, "--runtime-endpoint", endpoint, "--image-endpoint", endpoint,
                "--timeout", "60s"]
        for name in ("docker.io/library/foo:1", "registry.k8s.io/pause:3.10.2"):
            out = mirror.ns.run(*base, "pull", name)
            assert out.returncode == 0, f"{name}: {out.stdout}\n{out.stderr}"
        images = mirror.ns.run(*base, "images", "-o", "json")
        assert images.returncode == 0, images.stderr
        assert "docker.io/library/foo:1" in images.stdout
        assert "registry.k8s.io/pause:3.10.2" in images.stdout
        requests = mirror.registry.requests()
        assert "HEAD /v2/library/foo/manifests/1?ns=docker.io" in requests
        assert "HEAD /v2/pause/manifests/3.10.2?ns=registry.k8s.io" in requests
        info = mirror.ns.run(*base, "info")
        assert info.returncode == 0, info.stderr
        if flavour == "1.x":  # 2.x's CRI info leaves out the image service's config
            assert PAUSE in info.stdout and str(mirror.certs_d) in info.stdout


@pytest.mark.parametrize(
    ("registry", "want"),
    [
        ("", ("sea.hub", 5000)),
        ("registry: {localRegistry: {domain: Hub.Local, port: 5443}}", ("hub.local", 5443)),
        ("registry: {localRegistry: {domain: x.y, port: '8443'}}", ("x.y", 8443)),
    ],
)
def test_embedded_registry_from_clusterfile(registry: str, want: tuple[str, int]) -> None:
    cf = clusterfile.loads(_CF.format(registry=registry))
    assert embedded_registry(cf.cluster) == want


@pytest.mark.parametrize(
    "registry",
    ["registry: {localRegistry: {domain: 'bad domain'}}",
     "registry: {localRegistry: {port: 70000}}",
     "registry: {localRegistry: {port: abc}}",
     "registry: {localRegistry: [x]}"],
)
def test_embedded_registry_refuses_bad_values(registry: str) -> None:
    cf = clusterfile.loads(_CF.format(registry=registry))
    with pytest.raises(ClusterfileError, match=r"spec\.registry\.localRegistry"):
        embedded_registry(cf.cluster)


_CF = """
apiVersion: sealer.io/v2
kind: Cluster
metadata: {{name: c}}
spec:
  image: kubernetes:v1.37.2
  hosts: [{{ips: [10.0.0.2], roles: [master]}}]
  {registry}
"""
