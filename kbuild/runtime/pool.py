"""Connections to many hosts: a pool that opens each once, and parallel calls.

    pool = ConnectionPool(known_hosts=path)
    conn = pool.get("10.0.0.2", Credentials(user="root", password="..."))
    results = run_on_hosts(hosts, lambda h: pool.get(h.ip, creds).run("uname -m"))
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, TypeVar

from kbuild.errors import HostsError, KbuildError
from kbuild.runtime.executor import Credentials, Executor
from kbuild.runtime.hostkeys import KnownHosts
from kbuild.runtime.local import LocalConnection
from kbuild.runtime.ssh import Connection

__all__ = ["ConnectionPool", "HostResults", "connect", "is_local_address", "run_on_hosts"]

T = TypeVar("T")
R = TypeVar("R")


def is_local_address(host: str) -> bool:
    """True when ``host`` is this machine: ``localhost``, loopback, or an
    address one of its interfaces holds (checked by binding, no traffic)."""
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    if ip.is_loopback:
        return True
    family = socket.AF_INET if ip.version == 4 else socket.AF_INET6
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        try:
            s.bind((str(ip), 0))
        except OSError:
            return False
    return True


def connect(
    host: str,
    credentials: Credentials | None = None,
    *,
    name: str | None = None,
    local: str = "auto",
    **options: object,
) -> Executor:
    """A connected :class:`Connection`, or a :class:`LocalConnection` when
    ``host`` is this machine and ``local`` is ``"auto"`` (``"never"`` forces
    SSH). ``options`` go to :class:`Connection`."""
    if local == "auto" and is_local_address(host):
        return LocalConnection(name or host, credentials)
    conn = Connection(host, credentials, name=name, **options)  # type: ignore[arg-type]
    return conn.connect()


class ConnectionPool:
    """Connections by (host, port, user), opened once and reused; closes them all."""

    def __init__(
        self,
        *,
        known_hosts: KnownHosts | Path | str | None = None,
        accept_changed_host_key: bool = False,
        connect_timeout: float = 10.0,
        retries: int = 3,
        local: str = "auto",
    ) -> None:
        self.known_hosts = (
            known_hosts if isinstance(known_hosts, KnownHosts) else KnownHosts(known_hosts)
        )
        self.accept_changed_host_key = accept_changed_host_key
        self.connect_timeout = connect_timeout
        self.retries = retries
        self.local = local
        self._conns: dict[tuple[str, int, str], Executor] = {}
        self._lock = threading.Lock()

    def get(
        self, host: str, credentials: Credentials | None = None, *, name: str | None = None
    ) -> Executor:
        """The host's connection (connected; made on first use)."""
        creds = credentials or Credentials()
        key = (host, creds.port, creds.user)
        with self._lock:
            conn = self._conns.get(key)
            if conn is None:
                if self.local == "auto" and is_local_address(host):
                    conn = LocalConnection(name or host, creds)
                else:
                    conn = Connection(
                        host,
                        creds,
                        name=name,
                        known_hosts=self.known_hosts,
                        accept_changed_host_key=self.accept_changed_host_key,
                        connect_timeout=self.connect_timeout,
                        retries=self.retries,
                    )
                self._conns[key] = conn
        if isinstance(conn, Connection):
            conn.connect()
        return conn

    def close(self) -> None:
        """Close every connection."""
        with self._lock:
            conns, self._conns = list(self._conns.values()), {}
        for c in conns:
            c.close()

    def __enter__(self) -> ConnectionPool:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.close()


@dataclass
class HostResults(Generic[R]):
    """Per-host outcomes of :func:`run_on_hosts` (keys are host names)."""

    results: dict[str, R] = field(default_factory=dict)
    errors: dict[str, KbuildError] = field(default_factory=dict)

    def raise_for_errors(self) -> None:
        """Raise the one error, or :class:`HostsError` for several."""
        if len(self.errors) == 1:
            raise next(iter(self.errors.values()))
        if self.errors:
            raise HostsError(dict(self.errors))


def _host_name(item: object) -> str:
    name = getattr(item, "name", None)
    return name if isinstance(name, str) else str(item)


def run_on_hosts(
    items: Sequence[T],
    fn: Callable[[T], R],
    *,
    max_workers: int = 16,
    name: Callable[[T], str] = _host_name,
    check: bool = True,
) -> HostResults[R]:
    """Call ``fn(item)`` for every host in parallel (at most ``max_workers``).

    Every host runs to its end even when others fail. kbuild errors are
    collected per host; with ``check`` they are raised afterwards (one host:
    its error; several: :class:`HostsError`). Any other exception is a bug
    and is re-raised as is.
    """
    out: HostResults[R] = HostResults()
    if not items:
        return out
    bugs: list[BaseException] = []
    with ThreadPoolExecutor(max_workers=max(1, min(max_workers, len(items)))) as pool:
        futures = {pool.submit(fn, item): name(item) for item in items}
        for fut, host in futures.items():
            try:
                out.results[host] = fut.result()
            except KbuildError as exc:
                out.errors[host] = exc
            except Exception as exc:
                bugs.append(exc)
    if bugs:
        raise bugs[0]
    if check:
        out.raise_for_errors()
    return out
