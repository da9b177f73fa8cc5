"""The Kubernetes driver's day-2 flows (``kbuild backup``, ``restore``,
``cert``): each a phase list of its own, run by
:func:`kbuild.runtime.lifecycle.run_flow`."""

from __future__ import annotations

from kbuild.runtime.driver import CONVERGE, PhaseList
from kbuild.runtime.drivers.kubernetes import fresh, schedule
from kbuild.runtime.drivers.kubernetes.backup import BackupPhase
from kbuild.runtime.drivers.kubernetes.certs import CertCheckPhase
from kbuild.runtime.drivers.kubernetes.phases import KubeconfigPhase
from kbuild.runtime.drivers.kubernetes.renew import AltNamesPhase, RenewPhase
from kbuild.runtime.drivers.kubernetes.restore import restore_phases

__all__ = ["ALT_NAMES", "BACKUP", "CERT_CHECK", "CERT_RENEW", "RESTORE", "extend"]

BACKUP = "backup"
RESTORE = "restore"
CERT_CHECK = "cert-check"
CERT_RENEW = "cert-renew"
ALT_NAMES = "cert-alt-names"


def extend(flow: str, phases: PhaseList) -> None:
    """Fill the list of one of the flows above; a converge gets the phases of a
    restore onto fresh hosts (they run only when it is one: :mod:`.fresh`) and
    the snapshot timer (when the env asks for one: :mod:`.schedule`)."""
    if flow == CONVERGE:
        fresh.extend_converge(phases)
        schedule.extend_converge(phases)
    elif flow == fresh.RESTORE_VERIFY:
        phases.add(fresh.VerifyBackupPhase())
    elif flow == BACKUP:
        phases.add(BackupPhase())
    elif flow == RESTORE:
        phases.add(*restore_phases())
    elif flow == CERT_CHECK:
        phases.add(CertCheckPhase())
    elif flow == CERT_RENEW:
        phases.add(RenewPhase(), KubeconfigPhase())
    elif flow == ALT_NAMES:
        phases.add(AltNamesPhase())
