"""``kbuild backup``: one archive on this machine (:mod:`.archive`) with

- ``etcd/snapshot.db``: ``etcdctl snapshot save`` on the lead master (the
  first master that answers), checked there by ``etcdutl snapshot status``;
- ``kubeadm/pki/…``: kubeadm's shared PKI (the cluster CA, the service
  account keys, the front-proxy and etcd CAs), ``kubeadm/ClusterConfiguration.yaml``;
- ``kbuild/Clusterfile`` (without SSH passwords), ``kbuild/state.json`` and
  ``kbuild/pki/ca.{crt,key}`` (kbuild's own CA of the embedded registries).

Params: ``output`` (the archive's path), ``passphrase`` (seals it, optional),
``from_host`` (the newest scheduled snapshot of the lead master instead of a
new one: :mod:`.schedule`).
Results: ``archive`` (its path), ``manifest``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import shlex
import tarfile
import tempfile
from pathlib import Path

from kbuild.errors import BackupError
from kbuild.fsutil import write_private
from kbuild.runtime.clusterfile import Host
from kbuild.runtime.drivers.kubernetes import etcd, kubectl
from kbuild.runtime.drivers.kubernetes.archive import Manifest, write_archive
from kbuild.runtime.drivers.kubernetes.schedule import SNAPSHOTS
from kbuild.runtime.phases.base import Phase
from kbuild.runtime.phases.context import Context
from kbuild.runtime.runevents import HostStatus, emit

__all__ = ["BACKUP", "BackupPhase", "host_members", "passphrase"]

BACKUP = "backup"
SNAPSHOT = "etcd/snapshot.db"
CA_MEMBER = "kubeadm/pki/ca.crt"
HOST_MEMBERS = (
    SNAPSHOT, "etcd/status.json", "kubeadm/ClusterConfiguration.yaml",
    *(f"kubeadm/pki/{f}" for f in etcd.SHARED_PKI),
)  # fmt: skip


def _snapshot_script(rootfs: str, from_host: bool) -> str:
    """Snapshot (or the newest scheduled one), check, collect; a tar of it all
    on stdout; nothing stays."""
    pki = " ".join(etcd.SHARED_PKI)
    config = (
        f"{kubectl.KUBECTL} -n kube-system get configmap kubeadm-config "
        "-o jsonpath='{.data.ClusterConfiguration}'"
    )
    if from_host:
        snapshot = (
            f"S=$(ls -1 {SNAPSHOTS}/snapshot-*.db 2>/dev/null | sort -r | head -n 1)\n"
            f'[ -n "$S" ] || {{ echo "no scheduled snapshot in {SNAPSHOTS}" >&2; exit 1; }}\n'
            'echo "$S" >&2\ncp "$S" "$D/etcd/snapshot.db"'
        )
        config = f"{{ cat {SNAPSHOTS}/ClusterConfiguration.yaml 2>/dev/null || {config}; }}"
    else:
        snapshot = etcd.etcdctl(rootfs, 'snapshot save "$D/etcd/snapshot.db"') + " >&2"
    status = etcd.etcdutl(rootfs, 'snapshot status "$D/etcd/snapshot.db" -w json')
    return f"""set -eu
umask 077
export PATH={shlex.quote(rootfs)}/bin:$PATH
mkdir -p -m 700 {etcd.WORK}
D=$(mktemp -d {etcd.WORK}/backup.XXXXXX)
trap 'rm -rf "$D"' EXIT
mkdir -p "$D/etcd" "$D/kubeadm/pki/etcd"
{snapshot}
{status} >"$D/etcd/status.json"
for f in {pki}; do cp {etcd.PKI}/$f "$D/kubeadm/pki/$f"; done
{config} >"$D/kubeadm/ClusterConfiguration.yaml"
tar -C "$D" -cf - etcd kubeadm
"""


def host_members(data: bytes, dest: Path, where: str) -> dict[str, Path]:
    """The files of a master's tar (exactly :data:`HOST_MEMBERS`) written into ``dest``."""
    out: dict[str, Path] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            for info in tar:
                if info.isdir():
                    continue
                if info.name not in HOST_MEMBERS or not info.isfile() or info.name in out:
                    raise BackupError(f"{where}: unexpected {info.name!r} in the backup's tar")
                src = tar.extractfile(info)
                assert src is not None
                out[info.name] = dest / info.name.replace("/", "__")
                write_private(out[info.name], src.read())
    except tarfile.TarError as exc:
        raise BackupError(f"{where}: the backup's tar is damaged: {exc}") from None
    missing = sorted(set(HOST_MEMBERS) - set(out))
    if missing:
        raise BackupError(f"{where}: the backup lacks {', '.join(missing)}")
    return out


def _client_members(ctx: Context, dest: Path) -> dict[str, Path]:
    """The Clusterfile (no passwords), kbuild's state and kbuild's CA."""
    out = {"kbuild/Clusterfile": dest / "Clusterfile", "kbuild/state.json": dest / "state.json"}
    write_private(out["kbuild/Clusterfile"], kubectl.redacted_clusterfile(ctx.cf).encode())
    state = json.dumps(ctx.state.to_json(), indent=2).encode()
    write_private(out["kbuild/state.json"], state)
    for name in ("ca.crt", "ca.key"):
        path = ctx.sd.path / "pki" / name
        if path.exists():
            out[f"kbuild/pki/{name}"] = path
    return out


def passphrase(ctx: Context) -> str | None:
    """The flow's passphrase (masked in everything shown from now on)."""
    value = str(ctx.params.get("passphrase") or "")
    if value:
        ctx.redactor.add([value])
    return value or None


class BackupPhase(Phase):
    """Snapshot etcd on the lead master, collect the rest, write the archive here."""

    title = BACKUP
    scope = "cluster"
    recorded = False

    def run(self, ctx: Context, host: Host) -> None:
        """One round trip to the master, then the archive (0600, atomic)."""
        output = Path(str(ctx.params["output"]))
        secret = passphrase(ctx)
        script = _snapshot_script(ctx.paths.rootfs, bool(ctx.params.get("from_host")))
        data = ctx.conn(host).run(script, timeout=900).data
        with tempfile.TemporaryDirectory(prefix="kbuild-backup-") as tmp:
            files = host_members(data, Path(tmp), host.ip)
            files.update(_client_members(ctx, Path(tmp)))
            manifest = Manifest(
                cluster=ctx.cf.cluster.name,
                kubernetes=ctx.state.version,
                ca_sha256=hashlib.sha256(files[CA_MEMBER].read_bytes()).hexdigest(),
                created=dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            )
            write_archive(output, manifest, files, passphrase=secret)
        ctx.results["archive"] = str(output)
        ctx.results["manifest"] = manifest
        emit(ctx.progress, HostStatus(host.ip, BACKUP, str(output)))

    def detail(self, ctx: Context, hosts: list[Host]) -> str:
        """Where the archive goes."""
        return f"etcd snapshot and PKI to {ctx.params.get('output')}"
