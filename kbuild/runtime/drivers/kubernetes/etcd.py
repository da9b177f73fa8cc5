"""etcd on a master, as the backup and restore phases use it: shell lines for
``etcdctl``/``etcdutl`` (in the image's ``bin/``), what a backup carries of
kubeadm's PKI, and a member's name and peer URL read from its static pod."""

from __future__ import annotations

import re
import shlex

from kbuild.errors import ClusterError

PKI = "/etc/kubernetes/pki"
SHARED_PKI = (
    "ca.crt", "ca.key", "sa.key", "sa.pub", "front-proxy-ca.crt", "front-proxy-ca.key",
    "etcd/ca.crt", "etcd/ca.key",
)  # fmt: skip
"""kubeadm's shared PKI (what every master has alike; the rest is issued from it)."""
ETCD_MANIFEST = "/etc/kubernetes/manifests/etcd.yaml"
DATA_DIR = "/var/lib/etcd"
NEW_DATA_DIR = "/var/lib/etcd.kbuild-restore"
OLD_DATA_DIR = "/var/lib/etcd.kbuild-before-restore"
WORK = "/var/lib/kbuild-backup"
"""Where snapshots are made and received on a master (0700)."""
BUMP_REVISION = 1_000_000_000
"""A restored etcd's revisions jump this far ahead, and older ones read as
compacted: every watcher (kubelets, controllers) lists again."""


def etcdctl(rootfs: str, args: str) -> str:
    """``etcdctl`` against the master's own member, with its healthcheck client cert."""
    return (
        f"ETCDCTL_API=3 {shlex.quote(rootfs)}/bin/etcdctl --endpoints=https://127.0.0.1:2379 "
        f"--cacert={PKI}/etcd/ca.crt --cert={PKI}/etcd/healthcheck-client.crt "
        f"--key={PKI}/etcd/healthcheck-client.key {args}"
    )


def etcdutl(rootfs: str, args: str) -> str:
    """``etcdutl`` (offline work on snapshots and data dirs)."""
    return f"{shlex.quote(rootfs)}/bin/etcdutl {args}"


def member_of(manifest: str, where: str) -> tuple[str, str]:
    """The etcd member name and peer URL of a master, from its static pod manifest."""
    name = re.search(r"--name=(\S+)", manifest)
    peer = re.search(r"--initial-advertise-peer-urls=(\S+)", manifest)
    if name is None or peer is None:
        raise ClusterError(f"{where}:{ETCD_MANIFEST} names no etcd member and peer URL")
    return name.group(1), peer.group(1)


def restore_command(rootfs: str, snapshot: str, name: str, peer: str, cluster: str) -> str:
    """Restore ``snapshot`` into :data:`NEW_DATA_DIR` as member ``name``."""
    return etcdutl(
        rootfs,
        f"snapshot restore {shlex.quote(snapshot)} --data-dir {NEW_DATA_DIR} "
        f"--name {shlex.quote(name)} --initial-advertise-peer-urls {shlex.quote(peer)} "
        f"--initial-cluster {shlex.quote(cluster)} --bump-revision {BUMP_REVISION} "
        "--mark-compacted",
    )
