"""SSH to hosts (paramiko): one connection per host, a channel per command.

    pool = ConnectionPool(known_hosts=path)
    conn = pool.get("10.0.0.2", Credentials(user="root", password="..."))
    conn.run("systemctl is-active containerd")           # -> Result
    conn.run_with_input("sh -c 'cat > /tmp/x'", fileobj) # byte stream to stdin
    results = run_on_hosts(conns, lambda c: c.run("uname -m"))   # kbuild.runtime.pool

A :class:`Connection` keeps one transport open and opens a channel for each
command, so commands on one host may run concurrently. Connecting is bounded
(``connect_timeout`` per attempt, ``retries`` attempts); authentication
tries the key (with its passphrase) and then the password. Host keys are
checked by :class:`~kbuild.runtime.hostkeys.KnownHosts` (trust on first use).
An address of this machine gets a :class:`~kbuild.runtime.local.LocalConnection`
instead (:mod:`kbuild.runtime.pool`).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import paramiko

from kbuild.errors import HostError
from kbuild.runtime.executor import (
    Credentials,
    Executor,
    Process,
    Result,
    command_failed,
    command_timed_out,
)
from kbuild.runtime.hostkeys import KnownHosts
from kbuild.runtime.output import OutputCallback, OutputCollector, short
from kbuild.runtime.remote import display

__all__ = ["Connection"]

# paramiko's transport threads log their own errors (a port that answers
# without an SSH banner, a reset): kbuild reports those itself, so the
# library's records must never reach the user's terminal through logging's
# last-resort handler.
logging.getLogger("paramiko").addHandler(logging.NullHandler())
logging.getLogger("paramiko").propagate = False

WINDOW_SIZE = 64 * 1024 * 1024
MAX_PACKET_SIZE = 256 * 1024
# Fast first: AES-GCM needs no separate MAC pass; CTR with a SHA-2 MAC next.
_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "aes128-ctr", "aes256-ctr")
_KEY_TYPE_ALIASES = {"ssh-rsa": ("rsa-sha2-512", "rsa-sha2-256", "ssh-rsa")}



class _RemoteProcess(Process):
    """One exec channel; two threads drain stdout and stderr so a chatty
    command never stalls the stream written to its stdin."""

    def __init__(
        self,
        name: str,
        display: str,
        chan: paramiko.Channel,
        prefix: bytes,
        on_output: OutputCallback | None,
    ) -> None:
        self.name = name
        self.display = display
        self.chan = chan
        self.out = OutputCollector(name, on_output)
        self._threads = [
            threading.Thread(target=self._pump, args=(chan.recv, "stdout"), daemon=True),
            threading.Thread(target=self._pump, args=(chan.recv_stderr, "stderr"), daemon=True),
        ]
        for t in self._threads:
            t.start()
        self._stdin_closed = False
        if prefix:
            self.write(prefix)

    def _pump(self, recv: Callable[[int], bytes], stream: str) -> None:
        while True:
            try:
                data = recv(65536)
            except (OSError, EOFError, paramiko.SSHException):
                return
            if not data:
                return
            self.out.feed(stream, data)

    def _died(self, exc: BaseException) -> HostError:
        self.chan.status_event.wait(5.0)
        for t in self._threads:
            t.join(2.0)
        self.out.finish()
        status = self.chan.exit_status if self.chan.exit_status_ready() else None
        return HostError(
            self.name,
            f"command stopped reading its input ({exc.__class__.__name__})",
            command=short(self.display),
            exit_status=status,
            output_tail=self.out.tail_text(),
        )

    def write(self, data: bytes) -> None:
        try:
            self.chan.sendall(data)
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise self._died(exc) from exc

    def close_stdin(self) -> None:
        if not self._stdin_closed:
            self._stdin_closed = True
            with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
                self.chan.shutdown_write()

    def wait(self, *, timeout: float | None = None, check: bool = True) -> Result:
        self.close_stdin()
        deadline = None if timeout is None else time.monotonic() + timeout
        for t in self._threads:
            t.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        if not self.chan.status_event.wait(left) or any(t.is_alive() for t in self._threads):
            self.kill()
            raise command_timed_out(self.name, self.display, timeout or 0, self.out.tail_text())
        self.out.finish()
        status = self.chan.recv_exit_status()
        transport = self.chan.get_transport()
        self.chan.close()
        if status == -1:
            if transport is None or not transport.is_active():
                raise HostError(
                    self.name,
                    "the connection was lost while the command ran",
                    command=short(self.display),
                    output_tail=self.out.tail_text(),
                )
            # sshd sends exit-signal instead of exit-status for a killed command.
            status = 255
        if check and status != 0:
            raise command_failed(self.name, self.display, status, self.out.tail_text())
        return Result(
            status, self.out.text("stdout"), self.out.text("stderr"), self.out.raw("stdout")
        )

    def kill(self) -> None:
        with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
            self.chan.close()


class Connection(Executor):
    """An SSH connection to one host (one transport, a channel per command)."""

    def __init__(
        self,
        host: str,
        credentials: Credentials | None = None,
        *,
        name: str | None = None,
        known_hosts: KnownHosts | Path | str | None = None,
        accept_changed_host_key: bool = False,
        connect_timeout: float = 10.0,
        retries: int = 3,
        retry_delay: float = 1.0,
    ) -> None:
        self.host = host
        self.credentials = credentials or Credentials()
        self.name = name or host
        self.known_hosts = (
            known_hosts if isinstance(known_hosts, KnownHosts) else KnownHosts(known_hosts)
        )
        self.accept_changed_host_key = accept_changed_host_key
        self.connect_timeout = connect_timeout
        self.retries = max(1, retries)
        self.retry_delay = retry_delay
        self._transport: paramiko.Transport | None = None
        self._lock = threading.Lock()
        self._sudo_mode: str | None = None

    # -- connecting

    def connect(self) -> Connection:
        """Open the transport now (otherwise the first command does)."""
        self._get_transport()
        return self

    @property
    def connected(self) -> bool:
        """True while the transport is open."""
        return self._transport is not None and self._transport.is_active()

    def _get_transport(self) -> paramiko.Transport:
        with self._lock:
            if self._transport is not None and self._transport.is_active():
                return self._transport
            self._transport = self._connect_with_retries()
            self._sudo_mode = None
            return self._transport

    def _connect_with_retries(self) -> paramiko.Transport:
        port = self.credentials.port
        start = time.monotonic()
        last = ""
        for attempt in range(1, self.retries + 1):
            try:
                return self._connect_once()
            except HostError:
                raise
            except (OSError, EOFError, paramiko.SSHException) as exc:
                last = _describe(exc)
            if attempt < self.retries:
                time.sleep(self.retry_delay)
        raise HostError(
            self.name,
            f"cannot connect to {self.host}:{port}: {last} "
            f"({self.retries} attempts in {time.monotonic() - start:.1f} s)",
            hint="check that the host is up and its SSH port is reachable",
        )

    def _connect_once(self) -> paramiko.Transport:
        creds = self.credentials
        sock = socket.create_connection((self.host, creds.port), timeout=self.connect_timeout)
        _tcp_keepalive(sock)
        transport = paramiko.Transport(
            sock, default_window_size=WINDOW_SIZE, default_max_packet_size=MAX_PACKET_SIZE
        )
        try:
            opts = transport.get_security_options()
            opts.ciphers = tuple(c for c in _CIPHERS if c in opts.ciphers) or opts.ciphers
            known = self.known_hosts.known_types(self.host, creds.port)
            if known and not self.accept_changed_host_key:
                wanted = [t for k in known for t in _KEY_TYPE_ALIASES.get(k, (k,))]
                usable = tuple(t for t in opts.key_types if t in wanted)
                if usable:
                    opts.key_types = usable
            transport.banner_timeout = self.connect_timeout
            transport.auth_timeout = self.connect_timeout
            transport.start_client(timeout=self.connect_timeout)
            key = transport.get_remote_server_key()
            self.known_hosts.check(
                self.host,
                creds.port,
                key,
                accept_changed=self.accept_changed_host_key,
                name=self.name,
            )
            self._authenticate(transport)
            transport.set_keepalive(30)
            return transport
        except BaseException:
            transport.close()
            raise

    def _load_key(self) -> paramiko.PKey:
        path = Path(self.credentials.key_file or "").expanduser()
        try:
            # Positional: paramiko 5 renamed the argument (passphrase -> password).
            # (the key loader wants the passphrase as bytes).
            pp = self.credentials.passphrase
            secret: Any = pp.encode() if pp is not None else None
            return paramiko.PKey.from_path(path, secret)
        except FileNotFoundError as exc:
            raise HostError(self.name, f"private key {path} does not exist") from exc
        except (paramiko.PasswordRequiredException, TypeError) as exc:
            if not isinstance(exc, paramiko.PasswordRequiredException) and (
                self.credentials.passphrase is not None or "password" not in str(exc)
            ):
                raise HostError(self.name, f"cannot load private key {path}") from exc
            raise HostError(
                self.name,
                f"private key {path} is encrypted",
                hint="give its passphrase (ssh.pkPasswd in the Clusterfile)",
            ) from exc
        except (paramiko.SSHException, ValueError, OSError) as exc:
            raise HostError(
                self.name,
                f"cannot load private key {path}: wrong passphrase or unsupported format",
            ) from exc

    def _authenticate(self, transport: paramiko.Transport) -> None:
        creds = self.credentials
        tried: list[str] = []
        if creds.key_file:
            pkey = self._load_key()
            tried.append(f"key {creds.key_file}")
            with contextlib.suppress(paramiko.AuthenticationException):
                transport.auth_publickey(creds.user, pkey)
        if not transport.is_authenticated() and creds.password is not None:
            tried.append("password")
            password = creds.password
            try:
                transport.auth_password(creds.user, password)
            except paramiko.BadAuthenticationType as exc:
                if "keyboard-interactive" in exc.allowed_types:
                    with contextlib.suppress(paramiko.AuthenticationException):
                        transport.auth_interactive(
                            creds.user, lambda _t, _i, prompts: [password for _ in prompts]
                        )
            except paramiko.AuthenticationException:
                pass
        if not tried:
            raise HostError(
                self.name,
                f"no password or private key given for user {creds.user}",
                hint="set ssh.passwd or ssh.pk in the Clusterfile",
            )
        if not transport.is_authenticated():
            raise HostError(
                self.name,
                f"authentication failed for user {creds.user} on {self.host}:{creds.port} "
                f"(tried {' and '.join(tried)})",
                hint="check the ssh user, password and key for this host",
            )

    def close(self) -> None:
        """Close the transport; the next command reconnects."""
        with self._lock:
            if self._transport is not None:
                self._transport.close()
                self._transport = None

    # -- commands

    def _channel(self) -> paramiko.Channel:
        transport = self._get_transport()
        try:
            return transport.open_session(timeout=self.connect_timeout)
        except (OSError, EOFError, paramiko.SSHException):
            self.close()
            return self._get_transport().open_session(timeout=self.connect_timeout)

    def _probe(self, cmd: str, feed: bytes) -> Result:
        chan = self._channel()
        chan.exec_command(cmd)
        proc = _RemoteProcess(self.name, cmd, chan, feed, None)
        return proc.wait(timeout=self.connect_timeout + 20, check=False)

    def _sudo_needs_password(self) -> bool:
        """Before the first sudo command of a non-root user: find out whether
        sudo asks for a password (``NOPASSWD`` rules do not) and make sure the
        password opens it, so a wrong one fails clearly and the password is
        never sent where sudo would not read it (the command's stdin)."""
        if self._sudo_mode is not None:
            return self._sudo_mode == "password"
        pw = self.credentials.password
        res = self._probe("sudo -k -n -- true", b"")
        if res.exit_status == 0:
            self._sudo_mode = "nopasswd"
            return False
        if pw is not None:
            res = self._probe("sudo -k -S -p '' -- true", pw.encode() + b"\n")
        if res.exit_status != 0:
            why = "the sudo password was not accepted" if pw else "sudo needs a password"
            raise HostError(
                self.name,
                f"user {self.credentials.user} cannot become root with sudo: {why}",
                exit_status=res.exit_status,
                output_tail=res.stderr.strip(),
                hint="check the password, and that the user may use sudo on the host",
            )
        self._sudo_mode = "password"
        return True

    def open_exec(
        self,
        cmd: str,
        *,
        sudo: bool = True,
        env: Mapping[str, str] | None = None,
        on_output: OutputCallback | None = None,
    ) -> Process:
        line, prefix = self._command_line(cmd, sudo=sudo, env=env)
        chan = self._channel()
        try:
            chan.exec_command(line)
        except (OSError, EOFError, paramiko.SSHException) as exc:
            chan.close()
            raise HostError(self.name, f"cannot start the command: {_describe(exc)}",
                            command=short(cmd)) from exc  # fmt: skip
        return _RemoteProcess(self.name, display(cmd), chan, prefix, on_output)


def _tcp_keepalive(sock: socket.socket) -> None:
    """A host that vanishes is noticed within about a minute, idle or not."""
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 30)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 10)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 3)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, 60_000)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, socket.timeout | TimeoutError):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = str(exc) or exc.__class__.__name__
    return text.splitlines()[0]
