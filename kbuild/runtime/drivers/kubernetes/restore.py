"""``kbuild restore`` onto the running cluster's hosts (after data loss).

1. restore-check (here): the archive is unpacked into a private directory
   and verified (:mod:`.archive`); it must be of this cluster (the same
   kubeadm CA) and of its Kubernetes version. Every master gets the
   snapshot and ``etcdutl snapshot restore`` makes a new data dir beside
   the old one (revisions bumped, older ones compacted, so every watcher
   lists again). A refusal or a failure here changes nothing that runs.
2. restore-etcd (every master): the control plane's static pods leave,
   the data dirs swap, the pods come back.
3. restore-wait (lead master): the API server answers again.
4. restore-finish (every host): kubelets restart (they list again); the
   old data dir and the snapshot leave the masters.

Params: ``file`` (the archive), ``passphrase``.
"""

from __future__ import annotations

import hashlib
import shlex
import tempfile
import time
from pathlib import Path

from kbuild.errors import BackupError, ClusterError
from kbuild.runtime.clusterfile import Host
from kbuild.runtime.drivers.kubernetes import etcd, kubectl
from kbuild.runtime.drivers.kubernetes.archive import Manifest, read_archive
from kbuild.runtime.drivers.kubernetes.backup import CA_MEMBER, SNAPSHOT, passphrase
from kbuild.runtime.phases.base import ClientPhase, Phase
from kbuild.runtime.phases.context import Context
from kbuild.runtime.pool import run_on_hosts
from kbuild.runtime.runevents import HostStatus, emit

__all__ = ["RESTORE_CHECK", "RESTORE_ETCD", "RESTORE_FINISH", "RESTORE_WAIT", "restore_phases"]

RESTORE_CHECK = "restore-check"
RESTORE_ETCD = "restore-etcd"
RESTORE_WAIT = "restore-wait"
RESTORE_FINISH = "restore-finish"
RECEIVED = f"{etcd.WORK}/restore.db"
API_TIMEOUT = 300.0


def check_backup(ctx: Context, manifest: Manifest, unpacked: Path, running_ca: bytes) -> None:
    """Refuse a backup of another cluster or another Kubernetes version."""
    where = str(ctx.params["file"])
    if hashlib.sha256((unpacked / CA_MEMBER).read_bytes()).hexdigest() != manifest.ca_sha256:
        raise BackupError(f"{where}: its CA does not match its manifest")
    if hashlib.sha256(running_ca).hexdigest() != manifest.ca_sha256:
        raise BackupError(
            f"{where} is a backup of cluster {manifest.cluster} with another CA than "
            f"cluster {ctx.cf.cluster.name}",
            hint="restore a backup of this cluster, or restore onto new hosts after delete --all",
        )
    running = ctx.state.version
    if running and manifest.kubernetes and manifest.kubernetes != running:
        raise BackupError(
            f"{where} is of Kubernetes {manifest.kubernetes}; the cluster runs {running}"
        )


def _masters(ctx: Context) -> list[Host]:
    return ctx.cf.cluster.masters()


def _initial_cluster(ctx: Context) -> dict[str, tuple[str, str]]:
    """Each master's etcd member (name, peer URL), read from its static pod."""
    out: dict[str, tuple[str, str]] = {}
    for m in _masters(ctx):
        text = ctx.conn(m).read_file(etcd.ETCD_MANIFEST)
        if text is None:
            raise ClusterError(f"{m.ip}: no {etcd.ETCD_MANIFEST}; is the cluster up?")
        out[m.ip] = etcd.member_of(text.decode(), m.ip)
    return out


def _discard(ctx: Context) -> None:
    """Remove what restore-check left on the masters (best effort)."""
    run_on_hosts(
        _masters(ctx),
        lambda h: ctx.conn(h).run(f"rm -rf {etcd.NEW_DATA_DIR} {RECEIVED}", check=False),
        name=lambda h: h.ip,
        check=False,
    )


class RestoreCheckPhase(ClientPhase):
    """Verify the archive, refuse a foreign one, prepare each master's data dir."""

    title = RESTORE_CHECK

    def should_run(self, ctx: Context, hosts: list[Host]) -> bool:
        """Unless ``when`` says otherwise (a converge without a backup)."""
        return self.when is None or self.when(ctx)

    def run_client(self, ctx: Context) -> None:
        """Nothing that runs changes here; on failure the prepared files go."""
        file = Path(str(ctx.params["file"]))
        with tempfile.TemporaryDirectory(prefix="kbuild-restore-") as tmp:
            unpacked = Path(tmp) / "backup"
            manifest = read_archive(file, unpacked, passphrase=passphrase(ctx))
            ca = ctx.conn(ctx.lead).read_file(f"{etcd.PKI}/ca.crt")
            if ca is None:
                raise ClusterError(f"{ctx.lead.ip}: no {etcd.PKI}/ca.crt; is the cluster up?")
            check_backup(ctx, manifest, unpacked, ca)
            members = _initial_cluster(ctx)
            cluster = ",".join(f"{n}={p}" for n, p in members.values())
            try:
                run_on_hosts(
                    _masters(ctx),
                    lambda h: self._prepare(ctx, h, unpacked / SNAPSHOT, members[h.ip], cluster),
                    name=lambda h: h.ip,
                    check=True,
                )
            except BaseException:
                _discard(ctx)
                raise
        ctx.results["manifest"] = manifest

    def _prepare(
        self, ctx: Context, host: Host, snapshot: Path, member: tuple[str, str], cluster: str
    ) -> None:
        conn = ctx.conn(host)
        with snapshot.open("rb") as fh:
            conn.run_with_input(
                f"umask 077 && mkdir -p {etcd.WORK} && cat >{RECEIVED}.tmp && "
                f"mv -f {RECEIVED}.tmp {RECEIVED}",
                fh,
            )
        restore = etcd.restore_command(ctx.paths.rootfs, RECEIVED, member[0], member[1], cluster)
        conn.run(f"rm -rf {etcd.NEW_DATA_DIR}")
        conn.run(restore, timeout=600)
        emit(ctx.progress, HostStatus(host.ip, RESTORE_CHECK, "etcd data prepared"))


_SWAP = f"""set -eu
export PATH="$ROOTFS/bin:$PATH"
M=/etc/kubernetes/manifests H=/etc/kubernetes/manifests.kbuild-restore
[ -d {etcd.NEW_DATA_DIR} ] || {{ echo "no prepared {etcd.NEW_DATA_DIR}" >&2; exit 1; }}
mkdir -p "$H"
mv "$M"/*.yaml "$H"/
back() {{ mv "$H"/*.yaml "$M"/ && rmdir "$H"; }}
running() {{ crictl ps -q --name '^(etcd|kube-apiserver)$' 2>/dev/null | grep -q .; }}
i=0
while running && [ $i -lt 120 ]; do sleep 1; i=$((i+1)); done
if running; then back; echo "etcd and the API server did not stop within 120s" >&2; exit 1; fi
rm -rf {etcd.OLD_DATA_DIR}
mv {etcd.DATA_DIR} {etcd.OLD_DATA_DIR}
mv {etcd.NEW_DATA_DIR} {etcd.DATA_DIR}
back
"""


class RestoreEtcdPhase(Phase):
    """Swap the data dir with the control plane stopped (every master)."""

    title = RESTORE_ETCD
    recorded = False

    def applies_to(self, ctx: Context, host: Host) -> bool:
        """Masters only."""
        return host.is_master

    def run(self, ctx: Context, host: Host) -> None:
        """Static pods out, data dirs swapped, static pods back."""
        ctx.conn(host).run(
            _SWAP, env={"ROOTFS": ctx.paths.rootfs}, timeout=300
        )


class RestoreWaitPhase(Phase):
    """The API server answers again (bounded)."""

    title = RESTORE_WAIT
    scope = "cluster"
    recorded = False
    quiet = True

    def run(self, ctx: Context, host: Host) -> None:
        """Poll ``/readyz`` on the lead master."""
        wait_for_api(ctx, host)


def wait_for_api(ctx: Context, host: Host, timeout: float = API_TIMEOUT) -> None:
    """Wait until the API server of ``host`` answers ``/readyz`` (bounded)."""
    conn = ctx.conn(host)
    deadline = time.monotonic() + timeout
    while True:
        res = conn.run(f"{kubectl.KUBECTL} get --raw /readyz", check=False, timeout=30)
        if res.ok:
            return
        if time.monotonic() > deadline:
            tail = (res.stderr or res.stdout).strip().splitlines()[-1:] or ["no answer"]
            raise ClusterError(
                f"{host.ip}: the API server did not answer within {timeout:.0f}s: {tail[0]}"
            )
        time.sleep(3)


class RestoreFinishPhase(Phase):
    """Kubelets list again; the old data dir and the snapshot leave the masters."""

    title = RESTORE_FINISH
    recorded = False

    def run(self, ctx: Context, host: Host) -> None:
        """Restart the kubelet; clean up on masters."""
        ctx.conn(host).run("systemctl restart kubelet", timeout=120)
        if host.is_master:
            ctx.conn(host).run(f"rm -rf {etcd.OLD_DATA_DIR} {shlex.quote(RECEIVED)}")


def restore_phases() -> list[Phase]:
    """The restore flow, in order."""
    return [RestoreCheckPhase(), RestoreEtcdPhase(), RestoreWaitPhase(), RestoreFinishPhase()]
