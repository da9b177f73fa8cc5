"""Local hosts as podman containers (``--provider podman`` and the test hosts).

A host is a privileged podman container made from a Debian root filesystem
that boots systemd and sshd, on a podman network of its own. The root
filesystem is built once with debootstrap, prepared by
``scripts/podman-host-prepare.sh``, cached as a tarball outside the repository
and imported once as a podman image; nothing is rebuilt while both exist.

Every host gets a podman volume of its own mounted at ``/var/lib/kbuild``
(:data:`DATA_MOUNT`): the container's root is overlayfs, where an overlay
upper dir cannot live, so kbuild's default dataRoot ``/var/lib/kbuild/data``
is on that volume, a real disk that survives ``podman restart`` (a reboot of
the host). Every container, volume and network carries the label
``io.kbuild.cluster=<name>``, so :func:`delete_cluster` and
:func:`delete_all` find them again; a host's volume goes with it. Callers may
add labels of their own (the test fixtures mark the containers of one test
run). The provider talks to nothing but podman and the hosts it made.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import ipaddress
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from kbuild.errors import ClusterError, HostError, UsageError
from kbuild.runtime.ssh import Credentials

__all__ = [
    "BASE_PACKAGES",
    "CLUSTER_LABEL",
    "DATA_MOUNT",
    "HostImage",
    "PodmanHost",
    "ProviderEvent",
    "add_sudo_user",
    "apt_mirror",
    "create_hosts",
    "delete_all",
    "delete_by_label",
    "delete_cluster",
    "ensure_host_image",
    "host_cache_dir",
    "list_clusters",
    "network_name",
    "network_subnet",
    "restart_host",
    "start_host",
    "stop_host",
    "volume_name",
    "wait_for_ssh",
]

CLUSTER_LABEL = "io.kbuild.cluster"
ROLE_LABEL = "io.kbuild.role"
DATA_MOUNT = "/var/lib/kbuild"
"""Where each host's own podman volume is mounted (kbuild's data, off overlayfs)."""
BASE_PACKAGES: tuple[str, ...] = (
    "systemd",
    "systemd-sysv",
    "dbus",
    "openssh-server",
    "iproute2",
    "procps",
    "sudo",
)
IMAGE_REPOSITORY = "localhost/kbuild-host"
PREPARE_SCRIPT = Path(__file__).with_name("scripts") / "podman-host-prepare.sh"
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
_RUN_FLAGS = (
    "--privileged",
    # a cgroup namespace of its own: on cgroup v1 podman's default is the
    # host's, and runc inside the host (Kubernetes pods) then computes cgroup
    # mount paths the host's mount table does not have
    "--cgroupns=private",
    "--ulimit",
    "nofile=16384:16384",
    "--ulimit",
    "nproc=32768:32768",
)


@dataclass(frozen=True)
class ProviderEvent:
    """Progress of the provider: ``what`` is one of ``image-build``,
    ``image-import``, ``network``, ``host-start``, ``host-ready``, ``delete``."""

    what: str
    name: str
    detail: str = ""


Progress = Callable[[ProviderEvent], None]


@dataclass(frozen=True)
class HostImage:
    """A host root filesystem: Debian suite plus the packages debootstrap adds."""

    suite: str = "bookworm"
    packages: tuple[str, ...] = BASE_PACKAGES

    @property
    def key(self) -> str:
        """Short hash of the suite, the package list and the prepare script."""
        h = hashlib.sha256()
        h.update(self.suite.encode() + b"\0")
        for p in sorted(set(self.packages)):
            h.update(p.encode() + b"\0")
        h.update(PREPARE_SCRIPT.read_bytes())
        return h.hexdigest()[:12]

    @property
    def tag(self) -> str:
        """The podman image name, ``localhost/kbuild-host:<suite>-<key>``."""
        return f"{IMAGE_REPOSITORY}:{self.suite}-{self.key}"

    def tarball(self, cache_dir: Path) -> Path:
        """Where the cached root filesystem tarball lives."""
        return cache_dir / f"debian-{self.suite}-{self.key}.tar"


@dataclass(frozen=True)
class PodmanHost:
    """One running host: its hostname, container, address and SSH credentials."""

    name: str
    container: str
    ip: str
    credentials: Credentials
    cluster: str
    network: str
    role: str = ""
    extra: Mapping[str, str] = field(default_factory=dict)

    @property
    def port(self) -> int:
        """The SSH port (22)."""
        return self.credentials.port


# ---------------------------------------------------------------- podman calls


def _podman(
    *args: str,
    input: bytes | None = None,
    timeout: float = 120.0,
    check: bool = True,
    what: str = "podman",
) -> subprocess.CompletedProcess[bytes]:
    cmd = ["podman", *args]
    try:
        proc = subprocess.run(cmd, input=input, capture_output=True, timeout=timeout, check=False)
    except FileNotFoundError as exc:
        raise ClusterError(
            "podman is not installed", hint="install podman to use --provider podman"
        ) from exc
    except subprocess.TimeoutExpired as exc:
        raise ClusterError(f"{what}: `podman {args[0]}` did not finish in {timeout:.0f} s") from exc
    if check and proc.returncode != 0:
        tail = proc.stderr.decode(errors="replace").strip().splitlines()[-10:]
        raise ClusterError(
            f"{what}: `podman {' '.join(args[:2])}` failed (exit {proc.returncode}): "
            + " | ".join(tail)
        )
    return proc


def _runtime_args() -> list[str]:
    """``--runtime runc`` when runc is there: crun refuses this machine's
    hybrid cgroup layout, runc boots systemd in it."""
    env = os.environ.get("KBUILD_PODMAN_RUNTIME")
    if env:
        return ["--runtime", env]
    path = shutil.which("runc") or shutil.which("runc", path="/usr/sbin:/usr/bin:/sbin")
    return ["--runtime", path] if path else []


def _exec(container: str, script: str, *, input: bytes | None = None, timeout: float = 60) -> None:
    """Run ``sh -c script`` in a container; secrets go through ``input`` only."""
    proc = _podman(
        "exec", "-i", container, "sh", "-c", script,
        input=input, timeout=timeout, check=False, what=container,
    )  # fmt: skip
    if proc.returncode != 0:
        raise HostError(
            container,
            "setting up the host failed",
            command=script,
            exit_status=proc.returncode,
            output_tail="\n".join(proc.stderr.decode(errors="replace").splitlines()[-20:]),
        )


# ---------------------------------------------------------------- image


def host_cache_dir() -> Path:
    """``$KBUILD_HOST_CACHE``, else ``/var/cache/kbuild/hosts`` (root) or
    ``$XDG_CACHE_HOME/kbuild/hosts``."""
    env = os.environ.get("KBUILD_HOST_CACHE")
    if env:
        return Path(env)
    if os.geteuid() == 0:
        return Path("/var/cache/kbuild/hosts")
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "kbuild" / "hosts"


def apt_mirror() -> str:
    """The Debian mirror apt uses on this machine (for debootstrap)."""
    env = os.environ.get("KBUILD_DEBIAN_MIRROR")
    if env:
        return env
    files = [Path("/etc/apt/sources.list")]
    d = Path("/etc/apt/sources.list.d")
    if d.is_dir():
        files += sorted(d.iterdir())
    for f in files:
        try:
            text = f.read_text()
        except OSError:
            continue
        for line in text.splitlines():
            line = line.strip()
            m = re.match(r"^URIs:\s*(\S+)", line)
            if m and "security" not in m.group(1):
                return m.group(1)
            m = re.match(r"^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)", line)
            if m and "security" not in m.group(1):
                return m.group(1)
    return "http://deb.debian.org/debian"


def _image_exists(tag: str) -> bool:
    return _podman("image", "exists", tag, check=False).returncode == 0


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _build_tarball(spec: HostImage, dest: Path, progress: Progress | None) -> None:
    if shutil.which("debootstrap") is None:
        raise ClusterError(
            "debootstrap is needed to build the host image",
            hint="apt-get install debootstrap",
        )
    if progress:
        progress(ProviderEvent("image-build", spec.tag, "debootstrap " + spec.suite))
    work = Path(tempfile.mkdtemp(prefix=".build-", dir=dest.parent))
    try:
        rootfs = work / "rootfs"
        cmd = [
            "debootstrap", "--variant=minbase",
            "--include=" + ",".join(spec.packages), spec.suite, str(rootfs), apt_mirror(),
        ]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, timeout=1800, check=False)
        if proc.returncode != 0:
            log = (rootfs / "debootstrap" / "debootstrap.log")
            tail = proc.stderr.decode(errors="replace")
            if log.exists():
                tail += log.read_text(errors="replace")
            raise ClusterError(
                f"debootstrap {spec.suite} failed (exit {proc.returncode}): "
                + " | ".join(tail.strip().splitlines()[-8:])
            )
        prep = subprocess.run(
            ["sh", str(PREPARE_SCRIPT), str(rootfs)], capture_output=True, timeout=120, check=False
        )
        if prep.returncode != 0:
            raise ClusterError(
                f"{PREPARE_SCRIPT.name} failed: " + prep.stderr.decode(errors="replace").strip()
            )
        tmp = work / "rootfs.tar"
        subprocess.run(
            ["tar", "--numeric-owner", "--xattrs", "-C", str(rootfs), "-cf", str(tmp), "."],
            check=True, capture_output=True, timeout=600,
        )  # fmt: skip
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, dest)
        dfd = os.open(dest.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def ensure_host_image(
    spec: HostImage | None = None,
    *,
    cache_dir: Path | None = None,
    progress: Progress | None = None,
) -> str:
    """Return the podman image tag of the host image, building what is missing.

    The tarball is built with debootstrap only when it is not in the cache;
    the podman image is imported only when podman lacks it. A file lock in the
    cache directory keeps two processes from building it at the same time.
    """
    spec = spec or HostImage()
    cache = cache_dir or host_cache_dir()
    if _image_exists(spec.tag):
        return spec.tag
    with _file_lock(cache / ".lock"):
        if _image_exists(spec.tag):
            return spec.tag
        tarball = spec.tarball(cache)
        if not tarball.exists():
            _build_tarball(spec, tarball, progress)
        if progress:
            progress(ProviderEvent("image-import", spec.tag, str(tarball)))
        _podman(
            "import", "--change", "CMD=/sbin/init", str(tarball), spec.tag,
            timeout=600, what="host image",
        )  # fmt: skip
    return spec.tag


# ---------------------------------------------------------------- networks


def network_name(cluster: str) -> str:
    """The podman network of a cluster's hosts."""
    return f"kbuild-{cluster}"


def volume_name(container: str) -> str:
    """The podman volume of a host container, mounted at :data:`DATA_MOUNT`."""
    return f"{container}-data"


def _create_volume(container: str, labels: Mapping[str, str]) -> str:
    """Create the host's data volume; a leftover of a host that is gone is
    removed first (its data belonged to a cluster that no longer exists)."""
    name = volume_name(container)
    if _podman("volume", "exists", name, check=False).returncode == 0:
        if _podman("container", "exists", container, check=False).returncode == 0:
            raise ClusterError(
                f"podman container {container} already exists",
                hint="delete the cluster first (kbuild delete --all)",
            )
        _podman("volume", "rm", "-f", name, timeout=120, what=name)
    _podman("volume", "create", *_label_args(labels), name, timeout=60, what=name)
    return name


def _check_name(cluster: str) -> None:
    if not _NAME_RE.match(cluster):
        raise UsageError(
            f"cluster name {cluster!r} is not valid for podman hosts",
            hint="use lower-case letters, digits, '-', '_' and '.'",
        )


def _label_args(labels: Mapping[str, str]) -> list[str]:
    out: list[str] = []
    for k, v in labels.items():
        out += ["--label", f"{k}={v}"]
    return out


def _ensure_network(
    cluster: str, labels: Mapping[str, str], *, internal: bool, progress: Progress | None
) -> str:
    name = network_name(cluster)
    if _podman("network", "exists", name, check=False).returncode == 0:
        return name
    args = ["network", "create", *_label_args(labels)]
    if internal:
        args.append("--internal")
    args.append(name)
    if progress:
        progress(ProviderEvent("network", name, "internal" if internal else ""))
    proc = _podman(*args, check=False, what=name)
    if proc.returncode != 0 and _podman("network", "exists", name, check=False).returncode != 0:
        raise ClusterError(
            f"cannot create podman network {name}: "
            + proc.stderr.decode(errors="replace").strip()
        )
    return name


def network_subnet(cluster: str) -> ipaddress.IPv4Network:
    """The IPv4 subnet podman chose for the cluster's network."""
    out = _podman("network", "inspect", network_name(cluster)).stdout
    data = json.loads(out)[0]
    for sub in data.get("subnets") or []:
        net = ipaddress.ip_network(sub["subnet"])
        if isinstance(net, ipaddress.IPv4Network):
            return net
    raise ClusterError(f"podman network {network_name(cluster)} has no IPv4 subnet")


# ---------------------------------------------------------------- hosts


def _free_addresses(network: str, count: int) -> list[str]:
    """``count`` addresses of the network no container holds, gateway skipped.

    Hosts get fixed addresses (``--ip``): podman's IPAM may hand a restarted
    container another one, and a Clusterfile names hosts by address.
    """
    cluster = network[len("kbuild-"):]
    subnet = network_subnet(cluster)
    used: set[str] = set()
    names = _podman(
        "ps", "-a", "--filter", f"network={network}", "--format", "{{.Names}}"
    ).stdout.decode().split()
    if names:
        out = _podman("inspect", "--format", "{{json .NetworkSettings.Networks}}", *names)
        for line in out.stdout.decode().splitlines():
            nets = json.loads(line) or {}
            ip = (nets.get(network) or {}).get("IPAddress")
            if ip:
                used.add(str(ip))
    free: list[str] = []
    for addr in list(subnet.hosts())[1:]:  # the first one is the gateway
        if str(addr) not in used:
            free.append(str(addr))
            if len(free) == count:
                return free
    raise ClusterError(f"podman network {network} has no {count} free addresses")


def _container_ip(container: str, network: str) -> str:
    out = _podman("inspect", "--format", "{{json .NetworkSettings.Networks}}", container).stdout
    nets = json.loads(out) or {}
    ip = (nets.get(network) or {}).get("IPAddress") or ""
    if not ip:
        raise HostError(container, f"container has no address on network {network}")
    return str(ip)


def wait_for_ssh(host: str, port: int = 22, *, timeout: float = 90.0, name: str = "") -> None:
    """Wait until ``host:port`` answers with an SSH banner (bounded by ``timeout``)."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while True:
        try:
            with socket.create_connection((host, port), timeout=2.0) as s:
                s.settimeout(2.0)
                if s.recv(64).startswith(b"SSH-"):
                    return
                last = "no SSH banner"
        except OSError as exc:
            last = exc.strerror or str(exc)
        if time.monotonic() >= deadline:
            raise HostError(
                name or host,
                f"sshd on {host}:{port} did not come up within {timeout:.0f} s ({last})",
            )
        time.sleep(0.25)


def _setup_accounts(
    container: str,
    *,
    root_password: str | None,
    authorized_keys: Sequence[str],
    sudo_user: str | None,
    sudo_password: str | None,
) -> None:
    if root_password is not None:
        _exec(container, "chpasswd", input=f"root:{root_password}\n".encode())
    if authorized_keys:
        keys = "".join(k.strip() + "\n" for k in authorized_keys).encode()
        _exec(
            container,
            "umask 077 && mkdir -p /root/.ssh && cat >> /root/.ssh/authorized_keys",
            input=keys,
        )
    if sudo_user:
        add_sudo_user(container, sudo_user, sudo_password, authorized_keys=authorized_keys)


def add_sudo_user(
    container: str,
    user: str,
    password: str | None,
    *,
    authorized_keys: Sequence[str] = (),
) -> None:
    """Create a user in group ``sudo`` (sudo asks for its password) on a host."""
    if not _NAME_RE.match(user) or user == "root":
        raise UsageError(f"user name {user!r} is not valid")
    _exec(container, f"id -u {user} >/dev/null 2>&1 || useradd -m -s /bin/bash -G sudo {user}")
    if password is not None:
        _exec(container, "chpasswd", input=f"{user}:{password}\n".encode())
    if authorized_keys:
        keys = "".join(k.strip() + "\n" for k in authorized_keys).encode()
        _exec(
            container,
            f"umask 077 && mkdir -p ~{user}/.ssh && cat >> ~{user}/.ssh/authorized_keys"
            f" && chown -R {user}: ~{user}/.ssh",
            input=keys,
        )


def create_hosts(
    cluster: str,
    hostnames: Sequence[str],
    *,
    roles: Sequence[str] | None = None,
    image: str | None = None,
    internal: bool = False,
    root_password: str | None = None,
    authorized_keys: Sequence[str] = (),
    sudo_user: str | None = None,
    sudo_password: str | None = None,
    labels: Mapping[str, str] | None = None,
    ssh_timeout: float = 90.0,
    progress: Progress | None = None,
) -> list[PodmanHost]:
    """Start one host per name on the cluster's network and wait for sshd.

    Creates the network ``kbuild-<cluster>`` when missing (``internal=True``
    cuts it off from everything but this machine). With no ``root_password``
    and no ``authorized_keys`` a random root password is set. The returned
    credentials are those of ``sudo_user`` when given (password sudo), else
    root. Hosts started before a failure are removed again.
    """
    _check_name(cluster)
    if not hostnames:
        raise UsageError("no host names given")
    for h in hostnames:
        if not _NAME_RE.match(h):
            raise UsageError(f"host name {h!r} is not valid")
    if root_password is None and not authorized_keys:
        root_password = secrets.token_urlsafe(18)
    all_labels = {CLUSTER_LABEL: cluster, **(labels or {})}
    img = image or ensure_host_image(progress=progress)
    net = _ensure_network(cluster, all_labels, internal=internal, progress=progress)
    started: list[str] = []
    volumes: list[str] = []
    hosts: list[PodmanHost] = []
    addresses = _free_addresses(net, len(hostnames))
    try:
        for i, hostname in enumerate(hostnames):
            role = roles[i] if roles else ""
            container = f"kbuild-{cluster}-{hostname}" if not hostname.startswith(
                f"kbuild-{cluster}-") else hostname
            if progress:
                progress(ProviderEvent("host-start", hostname, container))
            vol = _create_volume(container, all_labels)
            volumes.append(vol)
            _podman(
                "run", "-d", *_runtime_args(), "--name", container, "--hostname", hostname,
                "--network", net, *_RUN_FLAGS, *_label_args(all_labels),
                "--volume", f"{vol}:{DATA_MOUNT}", "--ip", addresses[i],
                *(["--label", f"{ROLE_LABEL}={role}"] if role else []),
                img, "/sbin/init",
                timeout=120, what=hostname,
            )  # fmt: skip
            started.append(container)
        for i, container in enumerate(started):
            hostname = hostnames[i]
            ip = _container_ip(container, net)
            wait_for_ssh(ip, 22, timeout=ssh_timeout, name=hostname)
            _setup_accounts(
                container,
                root_password=root_password,
                authorized_keys=authorized_keys,
                sudo_user=sudo_user,
                sudo_password=sudo_password,
            )
            if sudo_user:
                creds = Credentials(user=sudo_user, password=sudo_password)
            else:
                creds = Credentials(user="root", password=root_password)
            hosts.append(
                PodmanHost(
                    name=hostname, container=container, ip=ip, credentials=creds,
                    cluster=cluster, network=net, role=roles[i] if roles else "",
                )
            )
            if progress:
                progress(ProviderEvent("host-ready", hostname, ip))
    except BaseException:
        if started:
            _podman("rm", "-f", "-v", "-t", "0", *started, check=False, timeout=120)
        if volumes:
            _podman("volume", "rm", "-f", *volumes, check=False, timeout=120)
        raise
    return hosts


def stop_host(container: str) -> None:
    """Stop a host (its address stops answering); :func:`start_host` boots it again."""
    _podman("stop", "-t", "2", container, timeout=60, what=container)


def start_host(host: PodmanHost, *, ssh_timeout: float = 90.0) -> str:
    """Start a stopped host again and wait for sshd; returns its (new) address."""
    _podman("start", host.container, timeout=60, what=host.container)
    ip = _container_ip(host.container, host.network)
    wait_for_ssh(ip, 22, timeout=ssh_timeout, name=host.name)
    return ip


def restart_host(host: PodmanHost, *, ssh_timeout: float = 90.0) -> str:
    """Restart a host (a reboot of its systemd; its volume stays) and wait for
    sshd; returns its address."""
    _podman("restart", "-t", "10", host.container, timeout=120, what=host.container)
    ip = _container_ip(host.container, host.network)
    wait_for_ssh(ip, 22, timeout=ssh_timeout, name=host.name)
    return ip


def _ls(kind: str, label_filter: str) -> list[str]:
    if kind == "container":
        out = _podman("ps", "-a", "--filter", f"label={label_filter}", "--format", "{{.Names}}")
    elif kind == "volume":
        out = _podman("volume", "ls", "--filter", f"label={label_filter}", "--format",
                      "{{.Name}}")  # fmt: skip
    else:
        out = _podman("network", "ls", "--filter", f"label={label_filter}", "--format",
                      "{{.Name}}")  # fmt: skip
    return [line for line in out.stdout.decode().split() if line]


def delete_by_label(key: str, value: str, *, progress: Progress | None = None) -> list[str]:
    """Remove every container, then every volume and network, labelled ``key=value``.

    Returns the names removed. Removing what is already gone is not an error.
    """
    flt = f"{key}={value}"
    removed: list[str] = []
    containers = _ls("container", flt)
    if containers:
        if progress:
            progress(ProviderEvent("delete", value, " ".join(containers)))
        _podman("rm", "-f", "-v", "-t", "0", *containers, check=False, timeout=300)
        removed += containers
    volumes = _ls("volume", flt)
    if volumes:
        if progress:
            progress(ProviderEvent("delete", value, " ".join(volumes)))
        _podman("volume", "rm", "-f", *volumes, check=False, timeout=300)
        removed += volumes
    for net in _ls("network", flt):
        if progress:
            progress(ProviderEvent("delete", value, net))
        _podman("network", "rm", "-f", net, check=False, timeout=120)
        removed.append(net)
    return removed


def delete_cluster(cluster: str, *, progress: Progress | None = None) -> list[str]:
    """Remove the hosts, their volumes and the network of one cluster."""
    return delete_by_label(CLUSTER_LABEL, cluster, progress=progress)


def list_clusters() -> dict[str, list[str]]:
    """Cluster name → its container names, for every cluster podman holds."""
    out = _podman(
        "ps", "-a", "--filter", f"label={CLUSTER_LABEL}",
        "--format", "{{.Names}} {{index .Labels \"" + CLUSTER_LABEL + "\"}}",
    ).stdout.decode()  # fmt: skip
    result: dict[str, list[str]] = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2:
            result.setdefault(parts[1], []).append(parts[0])
    for net in _ls("network", CLUSTER_LABEL):
        if net.startswith("kbuild-"):
            result.setdefault(net[len("kbuild-"):], [])
    vols = _podman(
        "volume", "ls", "--filter", f"label={CLUSTER_LABEL}",
        "--format", "{{index .Labels \"" + CLUSTER_LABEL + "\"}}",
    ).stdout.decode()  # fmt: skip
    for cluster in vols.split():
        result.setdefault(cluster, [])
    return result


def delete_all(*, progress: Progress | None = None) -> list[str]:
    """Remove every podman host, volume and network kbuild made (``kbuild delete --all``)."""
    removed: list[str] = []
    for cluster in list_clusters():
        removed += delete_cluster(cluster, progress=progress)
    return removed
