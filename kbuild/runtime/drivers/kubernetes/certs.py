"""``kbuild cert check``: every certificate of the cluster with its expiry.

On every host: kubeadm's PKI (``/etc/kubernetes/pki``, etcd's too), the
client certificates embedded in ``/etc/kubernetes/*.conf`` (only the
``client-certificate-data`` lines are read, never a key), the kubelet's
certificates and the embedded registry's certificate; on this machine,
kbuild's cluster CA and the registry certificates it issued.

Results: ``certificates``, a list of :class:`CertInfo`.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import threading
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from kbuild.runtime.clusterfile import Host
from kbuild.runtime.phases.base import Phase
from kbuild.runtime.phases.context import Context

__all__ = ["CERT_CHECK", "CertCheckPhase", "CertInfo", "parse_listing"]

CERT_CHECK = "cert-check"
LOCAL = "local"
_MARK = "==> "


@dataclass(frozen=True)
class CertInfo:
    """One certificate: where it is, whose it is, when it ends."""

    host: str
    path: str
    subject: str
    issuer: str
    not_after: dt.datetime

    @property
    def days_left(self) -> int:
        """Whole days until it expires (negative once expired)."""
        return (self.not_after - dt.datetime.now(dt.UTC)).days

    def to_json(self) -> dict[str, object]:
        """For ``--format json``."""
        return {"host": self.host, "path": self.path, "subject": self.subject,
                "issuer": self.issuer, "notAfter": self.not_after.isoformat(),
                "daysLeft": self.days_left}  # fmt: skip


def _listing_script(base: str) -> str:
    return f"""for f in $(find /etc/kubernetes/pki -name '*.crt' 2>/dev/null | sort) \\
    /var/lib/kubelet/pki/kubelet-client-current.pem /var/lib/kubelet/pki/kubelet.crt \\
    {base}/pki/registry.crt; do
  [ -f "$f" ] && {{ echo "{_MARK}$f"; cat "$f"; }}
done
for f in /etc/kubernetes/*.conf; do
  [ -f "$f" ] && {{ echo "{_MARK}$f"; grep -h 'client-certificate-data:' "$f"; }}
done
true
"""


def _info(host: str, path: str, pem: bytes) -> CertInfo | None:
    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError:
        return None
    return CertInfo(host, path, cert.subject.rfc4514_string(), cert.issuer.rfc4514_string(),
                    cert.not_valid_after_utc)  # fmt: skip


def parse_listing(host: str, text: str) -> list[CertInfo]:
    """The certificates of a host's listing (``==> path`` then its text)."""
    out: list[CertInfo] = []
    for block in text.split(_MARK)[1:]:
        path, _, body = block.partition("\n")
        if path.endswith(".conf"):
            for line in body.splitlines():
                try:
                    pem = base64.b64decode(line.split(":", 1)[1].strip(), validate=True)
                except (IndexError, binascii.Error):
                    continue
                info = _info(host, path, pem)
                if info is not None:
                    out.append(info)
            continue
        info = _info(host, path, body.encode())
        if info is not None:
            out.append(info)
    return out


def local_certs(state_dir: Path) -> list[CertInfo]:
    """kbuild's cluster CA and registry certificates in the local state."""
    out: list[CertInfo] = []
    for path in sorted((state_dir / "pki").glob("*.crt")):
        info = _info(LOCAL, str(path), path.read_bytes())
        if info is not None:
            out.append(info)
    return out


class CertCheckPhase(Phase):
    """Read every host's certificates (in parallel), and the local ones."""

    title = CERT_CHECK
    recorded = False
    read_only = True
    quiet = True

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def begin(self, ctx: Context, hosts: list[Host]) -> None:
        """The local certificates first."""
        ctx.results["certificates"] = local_certs(ctx.sd.path)

    def run(self, ctx: Context, host: Host) -> None:
        """One listing per host."""
        text = ctx.conn(host).run(_listing_script(ctx.paths.base), timeout=60).stdout
        found = parse_listing(host.ip, text)
        with self._lock:
            certs = ctx.results.setdefault("certificates", [])
            assert isinstance(certs, list)
            certs.extend(found)
