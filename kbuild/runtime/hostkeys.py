"""Host keys: trust on first use, into an OpenSSH ``known_hosts`` file.

The first key a host shows is recorded in ``~/.kbuild/known_hosts`` (or the
path given). Later connections must see the same key; a different one is a
:class:`~kbuild.errors.HostKeyError` unless the caller explicitly accepts the
change, which then replaces the recorded key. The file is rewritten
atomically under a file lock, so parallel connections and processes do not
lose each other's entries.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import os
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import paramiko

from kbuild.errors import HostKeyError

__all__ = ["KnownHosts", "default_known_hosts_path", "fingerprint", "host_entry_name"]


def default_known_hosts_path() -> Path:
    """``$KBUILD_KNOWN_HOSTS``, else ``~/.kbuild/known_hosts``."""
    env = os.environ.get("KBUILD_KNOWN_HOSTS")
    return Path(env) if env else Path.home() / ".kbuild" / "known_hosts"


def host_entry_name(host: str, port: int) -> str:
    """The known_hosts name of a host: ``host`` on port 22, else ``[host]:port``."""
    return host if port == 22 else f"[{host}]:{port}"


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH style ``SHA256:…`` fingerprint of a public key."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


class KnownHosts:
    """A known_hosts file with trust-on-first-use semantics."""

    def __init__(self, path: Path | str | None = None) -> None:
        self.path = Path(path) if path is not None else default_known_hosts_path()
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        lock_path = self.path.with_name(self.path.name + ".lock")
        with self._lock, open(lock_path, "a+b") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _load(self) -> paramiko.HostKeys:
        keys = paramiko.HostKeys()
        if self.path.exists():
            keys.load(str(self.path))
        return keys

    def _save(self, keys: paramiko.HostKeys) -> None:
        fd, tmp = tempfile.mkstemp(prefix=".known_hosts.", dir=self.path.parent)
        os.close(fd)
        try:
            keys.save(tmp)
            os.chmod(tmp, 0o600)
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    @staticmethod
    def _drop(keys: paramiko.HostKeys, entry_name: str) -> None:
        while entry_name in keys:
            del keys[entry_name]

    def known_types(self, host: str, port: int = 22) -> list[str]:
        """Key types recorded for the host (to ask the server for one of them)."""
        entry = self._load().lookup(host_entry_name(host, port))
        return list(entry.keys()) if entry else []

    def lines(self, host: str, port: int = 22) -> list[str]:
        """The host's recorded keys as OpenSSH known_hosts lines (for another
        host that must check this one's key, e.g. a relay hop)."""
        entry_name = host_entry_name(host, port)
        entry = self._load().lookup(entry_name)
        return [f"{entry_name} {t} {k.get_base64()}" for t, k in (entry or {}).items()]

    def check(
        self,
        host: str,
        port: int,
        key: paramiko.PKey,
        *,
        accept_changed: bool = False,
        name: str | None = None,
    ) -> str:
        """Verify ``key`` for the host; record it when new.

        Returns ``"known"``, ``"added"`` or ``"replaced"``. A different key of
        the same type, or only keys of other types recorded while this type
        is not, raises :class:`HostKeyError` unless ``accept_changed``.
        """
        entry_name = host_entry_name(host, port)
        with self._locked():
            keys = self._load()
            recorded = keys.lookup(entry_name)
            if recorded is not None and key.get_name() in recorded:
                if recorded[key.get_name()] == key:
                    return "known"
                changed = True
            else:
                changed = recorded is not None and len(recorded) > 0
            if changed and not accept_changed:
                raise HostKeyError(
                    name or host,
                    f"the host key changed: {key.get_name()} {fingerprint(key)} does not match "
                    f"the key recorded in {self.path}",
                    hint="if the host was reinstalled, pass --accept-changed-host-key "
                    f"(or remove {entry_name} from {self.path})",
                )
            if changed:
                # Drop every old key of this host, then record the new one.
                self._drop(keys, entry_name)
            keys.add(entry_name, key.get_name(), key)
            self._save(keys)
            return "replaced" if changed else "added"

    def forget(self, host: str, port: int = 22) -> None:
        """Remove the host's recorded keys."""
        entry_name = host_entry_name(host, port)
        with self._locked():
            keys = self._load()
            self._drop(keys, entry_name)
            self._save(keys)
