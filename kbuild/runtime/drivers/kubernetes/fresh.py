"""``kbuild restore -f Clusterfile BACKUP``: the cluster back on fresh hosts
at the same addresses (after ``delete --all``), through the normal converge
with the backup in ``ctx.params`` (``file``, ``passphrase``, ``fresh``):

- when the converge starts (:func:`prepare_fresh`, the driver's prepare):
  the archive is verified, must be of this cluster, and kbuild's CA comes
  back into the local state (the registries' certificates are issued from
  it again); kubeadm's shared PKI is kept in memory;
- restore-pki (before init-cluster, master0): kubeadm's CA, service
  account keys, front-proxy and etcd CAs are put in place, so ``kubeadm
  init`` uses them and old kubeconfigs and tokens stay valid;
- after the hosts joined, the restore phases of :mod:`.restore` put the
  snapshot's data into etcd on every master.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path

from kbuild.errors import BackupError
from kbuild.fsutil import write_private
from kbuild.runtime import titles
from kbuild.runtime.clusterfile import Host
from kbuild.runtime.driver import DriverContext, PhaseList
from kbuild.runtime.drivers.kubernetes import etcd
from kbuild.runtime.drivers.kubernetes.archive import read_archive
from kbuild.runtime.drivers.kubernetes.backup import passphrase
from kbuild.runtime.drivers.kubernetes.restore import restore_phases
from kbuild.runtime.executor import FileSpec
from kbuild.runtime.phases.base import ClientPhase, Phase
from kbuild.runtime.phases.context import Context

__all__ = ["RESTORE_PKI", "RESTORE_VERIFY", "VerifyBackupPhase", "extend_converge",
           "is_fresh_restore", "prepare_fresh"]

RESTORE_PKI = "restore-pki"
RESTORE_VERIFY = "restore-verify"
_PKI_KEY = "kubeadm_pki"


def is_fresh_restore(ctx: Context) -> bool:
    """This converge brings a backup back onto fresh hosts."""
    return bool(ctx.params.get("fresh") and ctx.params.get("file"))


@contextlib.contextmanager
def _unpacked(ctx: Context) -> Iterator[Path]:
    """The backup verified in a private temp directory, and of this cluster."""
    where = str(ctx.params["file"])
    with tempfile.TemporaryDirectory(prefix="kbuild-restore-") as tmp:
        unpacked = Path(tmp) / "backup"
        manifest = read_archive(Path(where), unpacked, passphrase=passphrase(ctx))
        if manifest.cluster != ctx.cf.cluster.name:
            raise BackupError(
                f"{where} is a backup of cluster {manifest.cluster}, "
                f"not of {ctx.cf.cluster.name}",
                hint="restore it with a Clusterfile of that cluster",
            )
        yield unpacked


def prepare_fresh(ctx: DriverContext) -> None:
    """Verify the backup; kbuild's CA into the local state; kubeadm's PKI kept."""
    if not isinstance(ctx, Context) or not is_fresh_restore(ctx) or _PKI_KEY in ctx.params:
        return
    with _unpacked(ctx) as unpacked:
        ctx.params[_PKI_KEY] = {
            f: (unpacked / "kubeadm/pki" / f).read_bytes() for f in etcd.SHARED_PKI
        }
        _restore_kbuild_ca(ctx, unpacked, str(ctx.params["file"]))


class VerifyBackupPhase(ClientPhase):
    """Before a restore onto fresh hosts changes anything (even the local
    record): the backup is readable with its passphrase and of this cluster."""

    title = RESTORE_VERIFY

    def run_client(self, ctx: Context) -> None:
        """Unpack and check; nothing is kept."""
        with _unpacked(ctx):
            pass


def _restore_kbuild_ca(ctx: Context, unpacked: Path, where: str) -> None:
    pki = ctx.sd.path / "pki"
    for name in ("ca.crt", "ca.key"):
        src = unpacked / "kbuild/pki" / name
        if not src.exists():
            continue
        have = pki / name
        if have.exists() and have.read_bytes() != src.read_bytes():
            raise BackupError(
                f"{where}: cluster {ctx.cf.cluster.name} has another kbuild CA in {pki}",
                hint="restore onto fresh hosts after `kbuild delete --all`",
            )
        write_private(have, src.read_bytes())


def _before_init(ctx: Context) -> bool:
    return is_fresh_restore(ctx) and titles.INIT_CLUSTER not in ctx.state.cluster_steps


class RestorePkiPhase(Phase):
    """kubeadm's shared PKI on master0 before ``kubeadm init``."""

    title = RESTORE_PKI
    scope = "cluster"
    recorded = False

    def __init__(self) -> None:
        self.when = _before_init

    def run(self, ctx: Context, host: Host) -> None:
        """Keys 0600, certificates 0644."""
        prepare_fresh(ctx)  # done already when the converge began (the driver's prepare)
        files = ctx.params[_PKI_KEY]
        assert isinstance(files, dict)
        ctx.conn(host).put_files({
            f"{etcd.PKI}/{name}": FileSpec(data, 0o600 if name.endswith(".key") else 0o644)
            for name, data in files.items()
        })  # fmt: skip


def extend_converge(phases: PhaseList) -> None:
    """restore-pki before init-cluster; etcd's data back before the apps launch."""
    phases.insert_before(titles.INIT_CLUSTER, RestorePkiPhase())
    restore = restore_phases()
    for phase in restore:
        phase.when = is_fresh_restore
    phases.insert_before(titles.LAUNCH, *restore)
