"""Kubernetes on master0 and on this machine: the admin kubeconfig, node labels,
the Clusterfile kept in the cluster (a Secret, passwords redacted), and what
``delete --all`` forgets locally."""

from __future__ import annotations

import contextlib
import shlex
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from kbuild.errors import ClusterError
from kbuild.fsutil import atomic_write
from kbuild.runtime import clusterfile as cfmod
from kbuild.runtime.clusterfile import Clusterfile, Host
from kbuild.runtime.drivers.kubernetes import kubeadm
from kbuild.runtime.drivers.kubernetes.files import ADMIN_CONF
from kbuild.runtime.executor import Executor


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


KUBECTL = f"kubectl --kubeconfig {ADMIN_CONF}"
"""kubectl as root on a master, with the admin kubeconfig."""
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
    conn.run(
        f"{KUBECTL} -n kube-system create secret generic {CLUSTERFILE_SECRET} "
        f"--from-file=Clusterfile=/dev/stdin --dry-run=client -o yaml | {KUBECTL} apply -f -",
        stdin=redacted_clusterfile(cf).encode(),
    )


_NODES_BY_IP = (
    KUBECTL + " get nodes -o "
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
            f"{KUBECTL} label node {shlex.quote(node)} {pairs} --overwrite"
        )
        done.append(node)
    return done
