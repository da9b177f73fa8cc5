"""The relay's credentials: one ed25519 key per sending host, made in memory
for one run, and the authorized_keys line a receiver gives it.

The private half is written only to its own host (``RUNDIR/key``, 0600,
through :meth:`~kbuild.runtime.executor.Executor.put_files`: it travels on
the stdin of the SSH channel, never on a command line). The line a receiver
adds for it allows nothing but the run's gate script, only from the
sender's address, only until the run's expiry time::

    restrict,from="10.0.0.2",command="/run/kbuild-relay/RUN/gate",
    expiry-time="20261204170000Z" ssh-ed25519 AAAA… kbuild-relay-RUN   (one line)
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

__all__ = ["RUN_BASE", "RelayKey", "authorized_line", "new_run_id", "run_dir"]

RUN_BASE = "/run/kbuild-relay"


def new_run_id() -> str:
    """A fresh run id (hex: it names files, units and key comments)."""
    return secrets.token_hex(8)


def run_dir(run_id: str) -> str:
    """The run's directory on each host (tmpfs: gone at the next boot)."""
    return f"{RUN_BASE}/{run_id}"


@dataclass(frozen=True)
class RelayKey:
    """One sending host's key pair for one run."""

    private: bytes = field(repr=False)
    public: str

    @classmethod
    def generate(cls) -> RelayKey:
        """A new key, in memory only."""
        key = Ed25519PrivateKey.generate()
        private = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
        public = key.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        )
        return cls(private, public.decode())


def authorized_line(key: RelayKey, sender_ip: str, run_id: str, expires: float) -> str:
    """The authorized_keys line letting ``sender_ip`` run the gate with ``key``."""
    when = time.strftime("%Y%m%d%H%M%SZ", time.gmtime(expires))
    opts = f'restrict,from="{sender_ip}",command="{run_dir(run_id)}/gate",expiry-time="{when}"'
    return f"{opts} {key.public} kbuild-relay-{run_id}\n"
