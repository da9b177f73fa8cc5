"""What the runtime adds for a Kubernetes cluster image.

An image is a Kubernetes image when its config carries the label
``org.kbuild.kubernetes`` (the Kubernetes version, e.g. ``v1.37.2``; the base
image ``images/kubernetes`` sets it, images built ``FROM`` it inherit it).
For such an image the life cycle (:mod:`kbuild.runtime.lifecycle`) also:

- keeps a CA and the embedded registry's certificate in the cluster's local
  state (``~/.kbuild/<cluster>/pki/``, keys 0600), see :func:`cluster_pki`;
- writes generated files into every host's rootfs under ``etc/kbuild/``
  (:func:`host_files`): ``kube.env`` (settings for the image's scripts),
  containerd's ``config.toml`` and ``certs.d`` mirroring every registry to the
  embedded one, the kubeadm init configuration (master0) and a join
  configuration template (the others); and the registry's key and
  configuration on master0 (:func:`master0_secret_files`, 0600, outside the
  rootfs' lower layers);
- adds ``<master0> <registry domain> apiserver.cluster.local`` to every
  host's ``/etc/hosts`` (:func:`host_alias_lines`);
- after ``init-cluster``, copies the admin kubeconfig to
  ``~/.kbuild/<cluster>/kubeconfig`` (0600, server = master0's IP, which is a
  certificate SAN) (:func:`fetch_kubeconfig`), and after joins labels nodes
  (:func:`apply_labels`).

The image's scripts (``scripts/*.sh`` of ``images/kubernetes``) do the rest:
install and start the registry, containerd and the kubelet, ``kubeadm
init``/``join``, the network add-on, ``kubeadm reset`` and cleaning.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import shlex
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from kbuild.errors import ClusterError
from kbuild.fsutil import atomic_write
from kbuild.runtime import clusterfile as cfmod
from kbuild.runtime import containerd as ctrd
from kbuild.runtime import kubeadm, pki
from kbuild.runtime.clusterfile import Cluster, Clusterfile, Host
from kbuild.runtime.executor import Executor
from kbuild.runtime.image import ImageInfo

LABEL = "org.kbuild.kubernetes"
"""Config label marking a Kubernetes image; its value is the Kubernetes version."""
PAUSE_LABEL = "org.kbuild.kubernetes.pause"
"""Config label with the pause image's tag (the sandbox image)."""
DEFAULT_PAUSE = "3.10.2"
GENERATED_DIR = "etc/kbuild"
"""Where the generated files land inside the rootfs."""
ADMIN_CONF = "/etc/kubernetes/admin.conf"
JOIN_TOKEN = "@KBUILD_TOKEN@"
JOIN_CA_HASH = "@KBUILD_CA_HASH@"
JOIN_CERT_KEY = "@KBUILD_CERT_KEY@"
_VERSION_RE = re.compile(r"^v\d+\.\d+\.\d+([-+][0-9A-Za-z.-]+)?$")


def kubernetes_version(image: ImageInfo | None) -> str | None:
    """The image's Kubernetes version, or None when it is not a Kubernetes image."""
    if image is None:
        return None
    version = image.labels.get(LABEL)
    if version is None:
        return None
    if not _VERSION_RE.match(version):
        raise ClusterError(f"image {image.ref}: label {LABEL}={version!r} is not a version vX.Y.Z")
    return version


def effective_cluster(cluster: Cluster, image: ImageInfo) -> Cluster:
    """The cluster with the image's ENV under the Clusterfile's env (PodCIDR etc.)."""
    return dataclasses.replace(cluster, env={**image.env, **cluster.env})


def registry_address(cluster: Cluster) -> tuple[str, int]:
    """``(domain, port)`` of the embedded registry."""
    return ctrd.embedded_registry(cluster)


# ---------------------------------------------------------------- PKI


@dataclasses.dataclass(frozen=True)
class ClusterPki:
    """The cluster's CA and the registry's certificate (both also on disk)."""

    ca: pki.KeyPair
    registry: pki.KeyPair


def cluster_pki(state_dir: Path, cluster: Cluster) -> ClusterPki:
    """Load or create ``<state_dir>/pki/{ca,registry}.{crt,key}``.

    The CA is made once per cluster. The registry certificate is issued again
    when its names (registry domain, master0's IP) changed.
    """
    directory = state_dir / "pki"
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    directory.chmod(0o700)
    ca_crt, ca_key = directory / "ca.crt", directory / "ca.key"
    if ca_crt.exists() and ca_key.exists():
        ca = pki.load_pair(ca_crt, ca_key)
    else:
        ca = pki.generate_ca(f"kbuild {cluster.name} CA")
        ca.write(directory, "ca")
    domain, _ = registry_address(cluster)
    m0 = cluster.master0().ip
    reg_crt, reg_key = directory / "registry.crt", directory / "registry.key"
    reg: pki.KeyPair | None = None
    if reg_crt.exists() and reg_key.exists():
        reg = pki.load_pair(reg_crt, reg_key)
        names, ips = pki.san_names(reg)
        if domain not in names or m0 not in ips:
            reg = None
    if reg is None:
        reg = pki.registry_cert(ca, domain, [m0])
        reg.write(directory, "registry")
    return ClusterPki(ca, reg)


# ---------------------------------------------------------------- host files


def _settings(cluster: Cluster, version: str) -> kubeadm.Settings:
    domain, port = registry_address(cluster)
    env = cluster.env
    ignore = tuple(
        x for x in (env.get("KubeadmIgnorePreflightErrors") or "SystemVerification").split(",")
        if x
    )
    return kubeadm.Settings(
        kubernetes_version=version,
        registry=f"{domain}:{port}",
        proxy_mode=env.get("KubeProxyMode") or "iptables",
        cgroup_driver=env.get("CgroupDriver") or "systemd",
        ignore_preflight_errors=ignore,
    )


def kubeadm_config(
    cf: Clusterfile, image: ImageInfo, image_kubeadm_yaml: str | None
) -> kubeadm.KubeadmConfig:
    """The merged kubeadm documents (Clusterfile > image etc/kubeadm.yml > defaults)."""
    version = kubernetes_version(image)
    if version is None:
        raise ClusterError(f"image {image.ref} is not a Kubernetes image (no label {LABEL})")
    cluster = effective_cluster(cf.cluster, image)
    return kubeadm.build_config(
        cluster,
        _settings(cluster, version),
        image_kubeadm_yaml=image_kubeadm_yaml,
        user_documents=cf.others,
    )


def _env_file(values: Mapping[str, str]) -> bytes:
    return "".join(f"{k}={shlex.quote(v)}\n" for k, v in values.items()).encode()


def host_files(
    cf: Clusterfile,
    host: Host,
    image: ImageInfo,
    ca_pem: bytes,
    *,
    rootfs: str,
    containerd_root: str,
    config: kubeadm.KubeadmConfig,
) -> dict[str, bytes]:
    """Generated files for one host, by path relative to the rootfs."""
    cluster = effective_cluster(cf.cluster, image)
    domain, port = registry_address(cluster)
    registry = f"{domain}:{port}"
    pause = image.labels.get(PAUSE_LABEL) or DEFAULT_PAUSE
    settings = ctrd.ContainerdSettings(
        registry=registry,
        sandbox_image=f"{registry}/pause:{pause}",
        cgroup_driver=cluster.env.get("CgroupDriver") or "systemd",
        root=containerd_root,
        runc_binary=f"{rootfs}/bin/runc",
        cni_bin_dir=f"{rootfs}/bin/cni",
    )
    gen = GENERATED_DIR
    m0 = cluster.master0()
    files: dict[str, bytes] = {
        f"{gen}/kube.env": _env_file({
            "REGISTRY": registry,
            "REGISTRY_DOMAIN": domain,
            "REGISTRY_PORT": str(port),
            "CONTAINERD_ROOT": containerd_root,
            "API_SERVER": f"{kubeadm.API_SERVER_DOMAIN}:{kubeadm.API_SERVER_PORT}",
            "POD_CIDR": config.cluster.get("networking", {}).get("podSubnet", ""),
            "KUBERNETES_VERSION": str(config.cluster.get("kubernetesVersion", "")),
            "SANDBOX_IMAGE": settings.sandbox_image,
        }),
        f"{gen}/containerd/config.toml": containerd_config(settings).encode(),
    }
    for rel, data in ctrd.certs_d_files(registry, ca_pem).items():
        files[f"{gen}/containerd/certs.d/{rel}"] = data
    if host.ip == m0.ip:
        files[f"{gen}/kubeadm-init.yaml"] = config.init_yaml().encode()
    else:
        files[f"{gen}/kubeadm-join.yaml"] = kubeadm.join_yaml(
            config,
            host,
            token=JOIN_TOKEN,
            ca_cert_hashes=[JOIN_CA_HASH],
            certificate_key=JOIN_CERT_KEY if host.is_master else None,
        ).encode()
    return files


def containerd_config(settings: ctrd.ContainerdSettings) -> str:
    """containerd's config for a Kubernetes host: :func:`containerd.render_config`
    plus ``restrict_oom_score_adj`` (containers never get an oom_score_adj below
    containerd's own: a host without CAP_SYS_RESOURCE, e.g. a container, refuses
    to lower it, and every sandbox would fail)."""
    doc = ctrd.config_dict(settings)
    key = "io.containerd.cri.v1.runtime" if settings.version == 3 else "io.containerd.grpc.v1.cri"
    doc["plugins"][key]["restrict_oom_score_adj"] = True
    header = f"# Written by kbuild: every registry is mirrored to {settings.registry}.\n"
    return header + ctrd.to_toml(doc)


def master0_secret_files(base: str, pair: pki.KeyPair, rootfs: str) -> dict[str, tuple[bytes, int]]:
    """Files outside the rootfs on master0: the registry's certificate, key and config."""
    config = (
        "version: 0.1\n"
        "log: {level: warn}\n"
        f"storage:\n  filesystem: {{rootdirectory: {rootfs}/registry}}\n"
        "  delete: {enabled: false}\n"
        "  maintenance: {uploadpurging: {enabled: false}, readonly: {enabled: true}}\n"
        "http:\n  addr: 0.0.0.0:5000\n"
        f"  tls: {{certificate: {base}/pki/registry.crt, key: {base}/pki/registry.key}}\n"
    )
    return {
        f"{base}/pki/registry.crt": (pair.cert_pem, 0o644),
        f"{base}/pki/registry.key": (pair.key_pem, 0o600),
        f"{base}/pki/registry.yml": (config.encode(), 0o600),
    }


def write_secret_files(conn: Executor, files: Mapping[str, tuple[bytes, int]]) -> None:
    """Write ``files`` on a host atomically with their modes (only when changed)."""
    for path, (data, mode) in files.items():
        q = shlex.quote(path)
        have = conn.run(f"cat {q} 2>/dev/null || true").stdout
        if have.encode() == data:
            continue
        conn.run(
            f"umask 077; mkdir -p $(dirname {q}) && cat > {q}.tmp && "
            f"chmod {mode:o} {q}.tmp && mv -f {q}.tmp {q}",
            stdin=data,
        )


def containerd_root(conn: Executor, base: str) -> str:
    """``/var/lib/containerd``, or ``<base>/containerd`` when /var/lib is on
    overlayfs (a container host): containerd's overlay snapshots need a real upper fs."""
    fs = conn.run("stat -f -c %T /var/lib 2>/dev/null || true").stdout.strip()
    if fs == "overlayfs":
        return f"{base}/containerd"
    return "/var/lib/containerd"


def host_alias_lines(cluster: Cluster) -> str:
    """``/etc/hosts`` lines for the registry domain and the API server name."""
    domain, _ = registry_address(cluster)
    return f"{cluster.master0().ip} {domain} {kubeadm.API_SERVER_DOMAIN}\n"


# ---------------------------------------------------------------- client side


def forget(state_dir: Path) -> None:
    """Remove the kubeconfig and the cluster's PKI from the local state (delete --all)."""
    for path in (kubeconfig_path(state_dir), *sorted((state_dir / "pki").glob("*"))):
        path.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        (state_dir / "pki").rmdir()


def kubeconfig_path(state_dir: Path) -> Path:
    """``~/.kbuild/<cluster>/kubeconfig``."""
    return state_dir / "kubeconfig"


def fetch_kubeconfig(conn: Executor, state_dir: Path, master0_ip: str) -> Path:
    """Copy master0's admin kubeconfig to the client (0600), server = master0's IP."""
    text = conn.run(f"cat {ADMIN_CONF}").stdout
    endpoint = f"https://{kubeadm.API_SERVER_DOMAIN}:{kubeadm.API_SERVER_PORT}"
    host = f"[{master0_ip}]" if ":" in master0_ip else master0_ip
    if endpoint not in text:
        raise ClusterError(f"{master0_ip}:{ADMIN_CONF} does not name the server {endpoint}")
    text = text.replace(endpoint, f"https://{host}:{kubeadm.API_SERVER_PORT}")
    path = kubeconfig_path(state_dir)
    atomic_write(path, text.encode(), mode=0o600)
    return path


SECRET_KEYS = frozenset({"passwd", "pkPasswd", "password"})
CLUSTERFILE_SECRET = "kbuild-clusterfile"


def _redact(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: ("<redacted>" if k in SECRET_KEYS else _redact(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact(v) for v in value]
    return value


def redacted_clusterfile(cf: Clusterfile) -> str:
    """The Clusterfile without SSH passwords and key passphrases."""
    docs = [_redact(d) for d in cfmod.to_documents(cf)]
    return yaml.safe_dump_all(docs, sort_keys=False, default_flow_style=False)


def store_clusterfile(conn: Executor, cf: Clusterfile) -> None:
    """The Clusterfile (redacted) as the Secret kube-system/kbuild-clusterfile (on master0)."""
    kubectl = f"kubectl --kubeconfig {ADMIN_CONF}"
    conn.run(
        f"{kubectl} -n kube-system create secret generic {CLUSTERFILE_SECRET} "
        f"--from-file=Clusterfile=/dev/stdin --dry-run=client -o yaml | {kubectl} apply -f -",
        stdin=redacted_clusterfile(cf).encode(),
    )


_NODES_BY_IP = (
    "kubectl --kubeconfig " + ADMIN_CONF + " get nodes -o "
    "jsonpath='{range .items[*]}{.metadata.name} "
    '{.status.addresses[?(@.type=="InternalIP")].address}{"\\n"}{end}\''
)


def node_names(conn: Executor) -> dict[str, str]:
    """Node name by InternalIP, read on master0."""
    out: dict[str, str] = {}
    for line in conn.run(_NODES_BY_IP).stdout.splitlines():
        parts = line.split()
        if len(parts) == 2:
            out[parts[1]] = parts[0]
    return out


def _wait_for_nodes(conn: Executor, ips: Sequence[str], timeout: float) -> dict[str, str]:
    """Node names by InternalIP once every one of ``ips`` has registered.

    ``kubeadm join`` returns when the kubelet has its certificate; the Node
    object and its addresses follow a moment later.
    """
    deadline = time.monotonic() + timeout
    names = node_names(conn)
    while any(ip not in names for ip in ips) and time.monotonic() < deadline:
        time.sleep(2)
        names = node_names(conn)
    return names


def apply_labels(
    conn: Executor, hosts: Sequence[Host], *, timeout: float = 120.0
) -> list[str]:
    """Label the nodes of ``hosts`` from the Clusterfile (on master0); returns the nodes."""
    todo = [h for h in hosts if h.labels]
    if not todo:
        return []
    names = _wait_for_nodes(conn, [h.ip for h in todo], timeout)
    done: list[str] = []
    for h in todo:
        node = names.get(h.ip)
        if node is None:
            raise ClusterError(f"{h.ip}: no Kubernetes node with this InternalIP to label")
        pairs = " ".join(shlex.quote(f"{k}={v}") for k, v in sorted(h.labels.items()))
        conn.run(
            f"kubectl --kubeconfig {ADMIN_CONF} label node {shlex.quote(node)} {pairs} --overwrite"
        )
        done.append(node)
    return done
