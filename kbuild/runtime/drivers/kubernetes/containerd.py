"""containerd's configuration: the daemon config and the ``certs.d`` registry hosts.

Every host's containerd pulls *everything* from the cluster's embedded
registry: the CRI plugin is told to read registry hosts from a ``certs.d``
directory (``config_path``), and that directory holds

- ``_default/hosts.toml``: any registry without a directory of its own;
- ``<host>/hosts.toml`` for docker.io, registry.k8s.io, k8s.gcr.io, quay.io,
  gcr.io, ghcr.io (containerd before 1.7 has no ``_default``) and for the
  embedded registry itself;
- ``<registry>/ca.crt``: the cluster CA the embedded registry's certificate
  is signed by.

Each mirror file names the embedded registry as a ``[host]`` with
``capabilities = ["pull", "resolve"]`` and its ``ca``, and also as the
``server``: containerd falls back to ``server`` when a mirror misses, and a
fallback to the real upstream would try the internet. ``override_path`` is
set when the mirror endpoint has a path of its own (a Harbor proxy project,
``https://harbor/v2/proxy``).

Two config formats: ``version = 3`` for containerd 2.x (CRI split into
``io.containerd.cri.v1.images`` and ``io.containerd.cri.v1.runtime``) and
``version = 2`` for containerd 1.6/1.7 (``io.containerd.grpc.v1.cri``).
:func:`config_version_for` picks one from a containerd version string.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from kbuild.errors import ClusterfileError, UsageError
from kbuild.fsutil import atomic_write
from kbuild.runtime.clusterfile import Cluster

DEFAULT_CERTS_DIR = "/etc/containerd/certs.d"
"""Where the hosts files live on a host."""

MIRRORED_HOSTS = (
    "docker.io",
    "registry.k8s.io",
    "k8s.gcr.io",
    "quay.io",
    "gcr.io",
    "ghcr.io",
)
"""Registries that get a hosts file of their own (besides ``_default``)."""

CGROUP_DRIVERS = ("systemd", "cgroupfs")

DEFAULT_REGISTRY_DOMAIN = "sea.hub"
DEFAULT_REGISTRY_PORT = 5000
_DOMAIN_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def embedded_registry(cluster: Cluster) -> tuple[str, int]:
    """``(domain, port)`` of the embedded registry.

    From ``spec.registry.localRegistry.domain``/``port`` (sealer's fields),
    default ``sea.hub:5000``.
    """
    local = cluster.registry.get("localRegistry") or {}
    if not isinstance(local, Mapping):
        raise ClusterfileError("Clusterfile: spec.registry.localRegistry: expected a mapping")
    domain = str(local.get("domain") or DEFAULT_REGISTRY_DOMAIN).lower()
    port_raw = local.get("port") or DEFAULT_REGISTRY_PORT
    if not _DOMAIN_RE.match(domain) or len(domain) > 253:
        raise ClusterfileError(
            f"Clusterfile: spec.registry.localRegistry.domain: not a DNS name: {domain!r}")
    try:
        port = int(str(port_raw))
    except ValueError:
        port = 0
    if not 0 < port < 65536:
        raise ClusterfileError(
            f"Clusterfile: spec.registry.localRegistry.port: bad port: {port_raw!r}")
    return domain, port


@dataclass(frozen=True)
class ContainerdSettings:
    """What the rendered containerd config says.

    ``registry`` is the embedded registry as ``host:port`` (``sea.hub:5000``);
    ``sandbox_image`` the pause image there (``sea.hub:5000/pause:3.10.2``).
    """

    registry: str
    sandbox_image: str
    version: int = 3
    certs_dir: str = DEFAULT_CERTS_DIR
    cgroup_driver: str = "systemd"
    root: str = "/var/lib/containerd"
    state: str = "/run/containerd"
    address: str = "/run/containerd/containerd.sock"
    runc_binary: str | None = None
    cni_bin_dir: str = "/opt/cni/bin"
    cni_conf_dir: str = "/etc/cni/net.d"
    snapshotter: str = "overlayfs"


def config_version_for(containerd_version: str) -> int:
    """The config ``version`` a containerd release reads natively (2.x → 3, 1.x → 2)."""
    m = re.match(r"^v?(\d+)\.(\d+)", containerd_version.strip())
    if not m:
        raise UsageError(f"not a containerd version: {containerd_version!r}")
    major = int(m.group(1))
    if major >= 2:
        return 3
    if major == 1 and int(m.group(2)) >= 5:
        return 2
    raise UsageError(
        f"containerd {containerd_version} is too old: certs.d hosts need 1.5 or later"
    )


# ---------------------------------------------------------------- TOML writing


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return json.dumps(v)  # a TOML basic string for everything json.dumps emits
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    raise TypeError(f"no TOML form for {type(v).__name__}")


def _key(k: str) -> str:
    return k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else json.dumps(k)


def to_toml(doc: Mapping[str, Any]) -> str:
    """A small TOML writer: scalars and lists first, then nested tables."""
    lines: list[str] = []

    def emit(table: Mapping[str, Any], path: list[str]) -> None:
        scalars = [(k, v) for k, v in table.items() if not isinstance(v, Mapping)]
        tables = [(k, v) for k, v in table.items() if isinstance(v, Mapping)]
        if path and (scalars or not tables):
            if lines:
                lines.append("")
            lines.append("[" + ".".join(_key(p) for p in path) + "]")
        for k, v in scalars:
            lines.append(f"{_key(k)} = {_value(v)}")
        for k, v in tables:
            emit(v, [*path, k])

    emit(doc, [])
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- the daemon config


def _check(settings: ContainerdSettings) -> None:
    if settings.version not in (2, 3):
        raise UsageError(f"containerd config version {settings.version}: kbuild writes 2 or 3")
    if settings.cgroup_driver not in CGROUP_DRIVERS:
        raise UsageError(
            f"cgroup driver {settings.cgroup_driver!r}: one of {', '.join(CGROUP_DRIVERS)}"
        )
    _host_port(settings.registry)


def config_dict(settings: ContainerdSettings) -> dict[str, Any]:
    """The containerd config as a mapping (see :func:`render_config`)."""
    _check(settings)
    runc_options: dict[str, Any] = {"SystemdCgroup": settings.cgroup_driver == "systemd"}
    if settings.runc_binary:
        runc_options["BinaryName"] = settings.runc_binary
    runc = {"runtime_type": "io.containerd.runc.v2", "options": runc_options}
    top: dict[str, Any] = {
        "version": settings.version,
        "root": settings.root,
        "state": settings.state,
        "grpc": {"address": settings.address},
    }
    if settings.version == 3:
        top["plugins"] = {
            "io.containerd.cri.v1.images": {
                "snapshotter": settings.snapshotter,
                "pinned_images": {"sandbox": settings.sandbox_image},
                "registry": {"config_path": settings.certs_dir},
            },
            "io.containerd.cri.v1.runtime": {
                "containerd": {"default_runtime_name": "runc", "runtimes": {"runc": runc}},
                "cni": {"bin_dirs": [settings.cni_bin_dir], "conf_dir": settings.cni_conf_dir},
            },
        }
    else:
        top["plugins"] = {
            "io.containerd.grpc.v1.cri": {
                "sandbox_image": settings.sandbox_image,
                "containerd": {
                    "snapshotter": settings.snapshotter,
                    "default_runtime_name": "runc",
                    "runtimes": {"runc": runc},
                },
                "cni": {"bin_dir": settings.cni_bin_dir, "conf_dir": settings.cni_conf_dir},
                "registry": {"config_path": settings.certs_dir},
            }
        }
    return top


def render_config(settings: ContainerdSettings) -> str:
    """containerd's ``config.toml`` text for these settings."""
    header = (
        "# Written by kbuild: every registry is mirrored to the embedded registry\n"
        f"# ({settings.registry}) through {settings.certs_dir}.\n"
    )
    return header + to_toml(config_dict(settings))


# ---------------------------------------------------------------- certs.d


def _host_port(registry: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9.-]+(:\d{1,5})?|\[[0-9A-Fa-f:]+\](:\d{1,5})?", registry):
        raise UsageError(f"{registry!r} is not a registry host[:port]")
    return registry


def _mirror_url(mirror: str) -> tuple[str, bool]:
    """``(url, override_path)`` for a mirror given as host[:port] or a URL."""
    if "://" not in mirror:
        return f"https://{_host_port(mirror)}", False
    parts = urlsplit(mirror)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise UsageError(f"{mirror!r} is not an http(s) registry URL")
    path = parts.path.rstrip("/")
    return f"{parts.scheme}://{parts.netloc}{path}", bool(path)


def ca_path(certs_dir: str, registry: str) -> str:
    """Where the CA of ``registry`` lives on a host: ``<certs_dir>/<registry>/ca.crt``."""
    return f"{certs_dir.rstrip('/')}/{_host_port(registry)}/ca.crt"


def mirror_hosts_toml(
    mirror: str, *, ca: str | None, skip_verify: bool = False, fallbacks: Iterable[str] = ()
) -> str:
    """A ``hosts.toml`` sending every pull and resolve of a registry to ``mirror``,
    then to each of ``fallbacks`` in order when it fails.

    ``mirror`` and ``fallbacks`` are ``host:port`` (HTTPS) or URLs; ``ca`` the
    CA file path on the host (``None``: system roots).
    """
    url, override = _mirror_url(mirror)
    server: dict[str, Any] = {"server": url, "capabilities": ["pull", "resolve"]}
    hosts: dict[str, Any] = {}
    for name in (mirror, *fallbacks):
        u, over = _mirror_url(name)
        hosts[u] = {"capabilities": ["pull", "resolve"]}
        if over:
            hosts[u]["override_path"] = True
    for entry in (server, *hosts.values()):
        if ca:
            entry["ca"] = ca
        if skip_verify:
            entry["skip_verify"] = True
    if override:
        server["override_path"] = True
    doc: dict[str, Any] = {**server, "host": hosts}
    header = (
        "# Written by kbuild: pulls go to the cluster's embedded registry only;\n"
        "# the server is the mirror too, so a miss never reaches the internet.\n"
    )
    return header + to_toml(doc)


def hosts_files(
    registry: str,
    *,
    certs_dir: str = DEFAULT_CERTS_DIR,
    with_ca: bool = True,
    hosts: Iterable[str] = MIRRORED_HOSTS,
    fallbacks: Iterable[str] = (),
) -> dict[str, str]:
    """Every ``hosts.toml`` of the certs.d directory, by path relative to it.

    ``_default``, each of ``hosts`` and ``registry`` itself all point at
    ``registry`` (HTTPS, CA at :func:`ca_path` when ``with_ca``), then at
    ``fallbacks``.
    """
    ca = ca_path(certs_dir, registry) if with_ca else None
    text = mirror_hosts_toml(registry, ca=ca, fallbacks=fallbacks)
    names = ["_default", *hosts, registry]
    out: dict[str, str] = {}
    for name in names:
        if name != "_default":
            _host_port(name)
        out[f"{name}/hosts.toml"] = text
    return out


def certs_d_files(
    registry: str,
    ca_pem: bytes | None,
    *,
    certs_dir: str = DEFAULT_CERTS_DIR,
    hosts: Iterable[str] = MIRRORED_HOSTS,
    fallbacks: Iterable[str] = (),
) -> dict[str, bytes]:
    """All files of the certs.d directory (hosts files and ``<registry>/ca.crt``)."""
    files = {
        path: text.encode()
        for path, text in hosts_files(
            registry, certs_dir=certs_dir, with_ca=ca_pem is not None, hosts=hosts,
            fallbacks=fallbacks,
        ).items()
    }
    if ca_pem is not None:
        files[f"{registry}/ca.crt"] = ca_pem
    return files


def write_tree(directory: Path, files: Mapping[str, bytes], *, mode: int = 0o644) -> None:
    """Write ``files`` (relative path → bytes) under ``directory``, each atomically."""
    for rel, data in files.items():
        if rel.startswith("/") or ".." in rel.split("/"):
            raise UsageError(f"{rel!r}: not a relative path inside {directory}")
        path = directory / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, data, mode=mode)
