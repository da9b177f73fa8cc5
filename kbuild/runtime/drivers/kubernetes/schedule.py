"""Scheduled etcd snapshots on every master (Clusterfile env):

- ``EtcdSnapshotSchedule``: a systemd calendar expression (``hourly``,
  ``*-*-* 02:00:00``, ``*:0/15``); when set, the masters a run or join
  brings up get the timer ``kbuild-etcd-snapshot.timer``;
- ``EtcdSnapshotRetention``: how many snapshots each master keeps (default 5).

Each run saves ``/var/lib/kbuild-backup/snapshots/snapshot-<UTC time>.db``
(checked by ``etcdutl snapshot status`` before it gets its name) and kubeadm's
ClusterConfiguration next to them; ``kbuild backup --from-host`` takes the
newest. ``delete`` removes the timer and the snapshots (clean-host.sh).
"""

from __future__ import annotations

import shlex

from kbuild.errors import ClusterfileError
from kbuild.runtime import titles
from kbuild.runtime.clusterfile import Host
from kbuild.runtime.driver import PhaseList
from kbuild.runtime.drivers.kubernetes import etcd, kubectl
from kbuild.runtime.executor import FileSpec
from kbuild.runtime.phases.base import Phase
from kbuild.runtime.phases.context import Context
from kbuild.runtime.runevents import HostStatus, emit

__all__ = ["SCHEDULE_ENV", "SNAPSHOTS", "SnapshotTimerPhase", "extend_converge"]

SCHEDULE_ENV = "EtcdSnapshotSchedule"
RETENTION_ENV = "EtcdSnapshotRetention"
DEFAULT_RETENTION = 5
SNAPSHOTS = f"{etcd.WORK}/snapshots"
SCRIPT = f"{etcd.WORK}/snapshot.sh"
UNIT = "kbuild-etcd-snapshot"
TIMER_TITLE = "etcd-snapshot-timer"


def _script(rootfs: str, keep: int) -> str:
    return f"""#!/bin/sh
# kbuild: one etcd snapshot, the newest {keep} kept (kbuild-etcd-snapshot.timer)
set -eu
umask 077
D={SNAPSHOTS}
mkdir -p "$D"
ts=$(date -u +%Y%m%dT%H%M%SZ)
part="$D/.snapshot-$ts.db.part"
trap 'rm -f "$part"' EXIT
{etcd.etcdctl(rootfs, '--command-timeout=120s snapshot save "$part"')} >/dev/null
{etcd.etcdutl(rootfs, 'snapshot status "$part"')} >/dev/null
mv "$part" "$D/snapshot-$ts.db"
{kubectl.KUBECTL.replace('kubectl', shlex.quote(rootfs) + '/bin/kubectl', 1)} -n kube-system \\
    get configmap kubeadm-config -o jsonpath='{{.data.ClusterConfiguration}}' \\
    >"$D/.cc.part" 2>/dev/null && mv "$D/.cc.part" "$D/ClusterConfiguration.yaml" \\
    || rm -f "$D/.cc.part"
ls -1 "$D"/snapshot-*.db | sort -r | tail -n +{keep + 1} | xargs -r rm -f
"""


def _units(schedule: str) -> dict[str, FileSpec]:
    service = ("[Unit]\nDescription=kbuild: etcd snapshot\n\n"
               f"[Service]\nType=oneshot\nExecStart=/bin/sh {SCRIPT}\n")  # fmt: skip
    timer = ("[Unit]\nDescription=kbuild: etcd snapshots on a schedule\n\n"
             f"[Timer]\nOnCalendar={schedule}\nAccuracySec=1s\n\n"
             "[Install]\nWantedBy=timers.target\n")  # fmt: skip
    return {
        f"/etc/systemd/system/{UNIT}.service": FileSpec(service.encode()),
        f"/etc/systemd/system/{UNIT}.timer": FileSpec(timer.encode()),
    }


def settings(env: dict[str, str], host: str) -> tuple[str, int] | None:
    """The schedule and retention a host's env asks for (None: no timer)."""
    schedule = env.get(SCHEDULE_ENV, "").strip()
    if not schedule:
        return None
    if "\n" in schedule or "'" in schedule:
        raise ClusterfileError(f"{host}: {SCHEDULE_ENV}={schedule!r} is not a calendar expression")
    raw = env.get(RETENTION_ENV, str(DEFAULT_RETENTION)).strip()
    if not raw.isdigit() or int(raw) < 1:
        raise ClusterfileError(f"{host}: {RETENTION_ENV}={raw!r} is not a count of 1 or more")
    return schedule, int(raw)


class SnapshotTimerPhase(Phase):
    """The snapshot timer on the masters brought up (when the env asks for it)."""

    title = TIMER_TITLE
    recorded = False
    quiet = True

    def applies_to(self, ctx: Context, host: Host) -> bool:
        """Masters whose env names a schedule."""
        return host.is_master and settings(ctx.env(host, self.title), host.ip) is not None

    def run(self, ctx: Context, host: Host) -> None:
        """Script and units written, the schedule checked by systemd, the timer on."""
        found = settings(ctx.env(host, self.title), host.ip)
        assert found is not None
        schedule, keep = found
        conn = ctx.conn(host)
        conn.run(f"systemd-analyze calendar {shlex.quote(schedule)} >/dev/null")
        files = _units(schedule)
        files[SCRIPT] = FileSpec(_script(ctx.paths.rootfs, keep).encode(), 0o700)
        conn.run(f"mkdir -p -m 700 {etcd.WORK}")
        conn.put_files(files)
        conn.run(f"systemctl daemon-reload && systemctl enable --now {UNIT}.timer >/dev/null 2>&1"
                 f" && systemctl restart {UNIT}.timer")  # fmt: skip
        emit(ctx.progress, HostStatus(host.ip, self.title, f"{schedule}, keeping {keep}"))


def extend_converge(phases: PhaseList) -> None:
    """The timer once the masters joined (before the apps launch)."""
    phases.insert_before(titles.LAUNCH, SnapshotTimerPhase())
