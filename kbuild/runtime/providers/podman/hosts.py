"""Local hosts as podman containers (``--provider podman`` and the test hosts).

A host is a privileged podman container made from a Debian root filesystem
that boots systemd and sshd, on a podman network of its own. The root
filesystem is built once with debootstrap, prepared by
``host-prepare.sh``, cached as a tarball outside the repository
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

import secrets
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from kbuild.errors import HostError, UsageError
from kbuild.runtime.executor import Credentials
from kbuild.runtime.provider import ProviderEvent
from kbuild.runtime.providers.podman.command import (
    NAME_RE,
    Progress,
    exec_in,
    label_args,
    podman,
    runtime_args,
)
from kbuild.runtime.providers.podman.image import ensure_host_image
from kbuild.runtime.providers.podman.network import (
    check_name,
    container_ip,
    create_volume,
    ensure_network,
    free_addresses,
)

CLUSTER_LABEL = "io.kbuild.cluster"
ROLE_LABEL = "io.kbuild.role"
DATA_MOUNT = "/var/lib/kbuild"
"""Where each host's own podman volume is mounted (kbuild's data, off overlayfs)."""
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
        exec_in(container, "chpasswd", input=f"root:{root_password}\n".encode())
    if authorized_keys:
        keys = "".join(k.strip() + "\n" for k in authorized_keys).encode()
        exec_in(
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
    if not NAME_RE.match(user) or user == "root":
        raise UsageError(f"user name {user!r} is not valid")
    exec_in(container, f"id -u {user} >/dev/null 2>&1 || useradd -m -s /bin/bash -G sudo {user}")
    if password is not None:
        exec_in(container, "chpasswd", input=f"{user}:{password}\n".encode())
    if authorized_keys:
        keys = "".join(k.strip() + "\n" for k in authorized_keys).encode()
        exec_in(
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
    _check_names(cluster, hostnames)
    if root_password is None and not authorized_keys:
        root_password = secrets.token_urlsafe(18)
    all_labels = {CLUSTER_LABEL: cluster, **(labels or {})}
    img = image or ensure_host_image(progress=progress)
    net = ensure_network(cluster, all_labels, internal=internal, progress=progress)
    started: list[str] = []
    volumes: list[str] = []
    try:
        addresses = free_addresses(net, len(hostnames))
        for i, hostname in enumerate(hostnames):
            role = roles[i] if roles else ""
            container = _start(cluster, hostname, role, img, net, addresses[i], all_labels,
                               volumes, progress)  # fmt: skip
            started.append(container)
        if sudo_user:
            creds = Credentials(user=sudo_user, password=sudo_password)
        else:
            creds = Credentials(user="root", password=root_password)
        hosts: list[PodmanHost] = []
        for i, container in enumerate(started):
            ip = container_ip(container, net)
            wait_for_ssh(ip, 22, timeout=ssh_timeout, name=hostnames[i])
            _setup_accounts(
                container, root_password=root_password, authorized_keys=authorized_keys,
                sudo_user=sudo_user, sudo_password=sudo_password,
            )  # fmt: skip
            hosts.append(PodmanHost(
                name=hostnames[i], container=container, ip=ip, credentials=creds,
                cluster=cluster, network=net, role=roles[i] if roles else "",
            ))  # fmt: skip
            if progress:
                progress(ProviderEvent("host-ready", hostnames[i], ip))
    except BaseException:
        if started:
            podman("rm", "-f", "-v", "-t", "0", *started, check=False, timeout=120)
        if volumes:
            podman("volume", "rm", "-f", *volumes, check=False, timeout=120)
        raise
    return hosts


def _check_names(cluster: str, hostnames: Sequence[str]) -> None:
    check_name(cluster)
    if not hostnames:
        raise UsageError("no host names given")
    for h in hostnames:
        if not NAME_RE.match(h):
            raise UsageError(f"host name {h!r} is not valid")


def _start(
    cluster: str, hostname: str, role: str, image: str, net: str, address: str,
    labels: Mapping[str, str], volumes: list[str], progress: Progress | None,
) -> str:  # fmt: skip
    """Start one host container (its data volume first); returns its name."""
    prefix = f"kbuild-{cluster}-"
    container = hostname if hostname.startswith(prefix) else prefix + hostname
    if progress:
        progress(ProviderEvent("host-start", hostname, container))
    vol = create_volume(container, labels)
    volumes.append(vol)
    podman(
        "run", "-d", *runtime_args(), "--name", container, "--hostname", hostname,
        "--network", net, *_RUN_FLAGS, *label_args(labels),
        "--volume", f"{vol}:{DATA_MOUNT}", "--ip", address,
        *(["--label", f"{ROLE_LABEL}={role}"] if role else []),
        image, "/sbin/init",
        timeout=120, what=hostname,
    )  # fmt: skip
    return container


def stop_host(container: str) -> None:
    """Stop a host (its address stops answering); :func:`start_host` boots it again."""
    podman("stop", "-t", "2", container, timeout=60, what=container)


def freeze_host(container: str) -> None:
    """Make a host stop answering at once, as a hung or powerless machine does:
    every process in it is frozen (cgroup freezer); :func:`thaw_host` resumes it.

    Not ``podman stop``/``start``: on cgroup v1 the host containers share the
    name=systemd hierarchy, and one host's systemd shutting down or booting
    wipes the cgroups the others' containerd and kubelet use."""
    podman("pause", container, timeout=60, what=container)


def thaw_host(container: str) -> None:
    """Resume a host frozen by :func:`freeze_host`."""
    podman("unpause", container, timeout=60, what=container)


def start_host(host: PodmanHost, *, ssh_timeout: float = 90.0) -> str:
    """Start a stopped host again and wait for sshd; returns its (new) address."""
    podman("start", host.container, timeout=60, what=host.container)
    ip = container_ip(host.container, host.network)
    wait_for_ssh(ip, 22, timeout=ssh_timeout, name=host.name)
    return ip


def restart_host(host: PodmanHost, *, ssh_timeout: float = 90.0) -> str:
    """Restart a host (a reboot of its systemd; its volume stays) and wait for
    sshd; returns its address."""
    podman("restart", "-t", "10", host.container, timeout=120, what=host.container)
    ip = container_ip(host.container, host.network)
    wait_for_ssh(ip, 22, timeout=ssh_timeout, name=host.name)
    return ip


def _ls(kind: str, label_filter: str) -> list[str]:
    if kind == "container":
        out = podman("ps", "-a", "--filter", f"label={label_filter}", "--format", "{{.Names}}")
    elif kind == "volume":
        out = podman("volume", "ls", "--filter", f"label={label_filter}", "--format",
                      "{{.Name}}")  # fmt: skip
    else:
        out = podman("network", "ls", "--filter", f"label={label_filter}", "--format",
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
        podman("rm", "-f", "-v", "-t", "0", *containers, check=False, timeout=300)
        removed += containers
    volumes = _ls("volume", flt)
    if volumes:
        if progress:
            progress(ProviderEvent("delete", value, " ".join(volumes)))
        podman("volume", "rm", "-f", *volumes, check=False, timeout=300)
        removed += volumes
    for net in _ls("network", flt):
        if progress:
            progress(ProviderEvent("delete", value, net))
        podman("network", "rm", "-f", net, check=False, timeout=120)
        removed.append(net)
    return removed


def delete_cluster(cluster: str, *, progress: Progress | None = None) -> list[str]:
    """Remove the hosts, their volumes and the network of one cluster."""
    return delete_by_label(CLUSTER_LABEL, cluster, progress=progress)


def list_clusters() -> dict[str, list[str]]:
    """Cluster name → its container names, for every cluster podman holds."""
    out = podman(
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
    vols = podman(
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
