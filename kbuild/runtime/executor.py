"""What every host connection offers, and the connection to the local machine.

:class:`Executor` is the one abstract base behind :class:`~kbuild.runtime.ssh.Connection`
(SSH) and :class:`LocalConnection` (subprocess), so the rest of the runtime
does not care which one a host has. Commands are shell strings. ``sudo=True``
(the default) means "as root": root users run the command as is, other users
through ``sudo -S`` with the password sent on stdin (never on a command line,
never in an error message).
"""

from __future__ import annotations

import abc
import collections
import contextlib
import os
import re
import shlex
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import BinaryIO

from kbuild.errors import HostError, UsageError

__all__ = [
    "TAIL_LINES",
    "Credentials",
    "Executor",
    "LocalConnection",
    "OutputCallback",
    "Process",
    "Result",
    "finish",
]

TAIL_LINES = 20
STDERR_KEEP = 5
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
OutputCallback = Callable[[str, str, str], None]
"""``on_output(host, stream, line)``: stream is ``"stdout"`` or ``"stderr"``,
line without its newline."""


@dataclass(frozen=True)
class Credentials:
    """How to log in to a host: the Clusterfile's ``ssh`` section.

    ``password`` is the login password and, for a non-root ``user``, the sudo
    password. ``key_file`` is a private key (OpenSSH or PEM; ``passphrase``
    when it is encrypted). Secrets are left out of ``repr()``.
    """

    user: str = "root"
    password: str | None = field(default=None, repr=False)
    key_file: str | None = None
    passphrase: str | None = field(default=None, repr=False)
    port: int = 22


@dataclass(frozen=True)
class Result:
    """What a finished command gave: exit status and its decoded output."""

    exit_status: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        """True when the exit status is 0."""
        return self.exit_status == 0


def _short(cmd: str, limit: int = 400) -> str:
    return cmd if len(cmd) <= limit else cmd[: limit - 3] + "..."


class OutputCollector:
    """Splits a command's output into lines for ``on_output``, keeps all of it
    and the last :data:`TAIL_LINES` lines of both streams interleaved.

    The two streams arrive over separate channels, so a burst of stdout can
    land after the stderr line that explains a failure. The last
    :data:`STDERR_KEEP` stderr lines therefore always stay in the tail."""

    def __init__(self, host: str, on_output: OutputCallback | None) -> None:
        self.host = host
        self.on_output = on_output
        self._data: dict[str, bytearray] = {"stdout": bytearray(), "stderr": bytearray()}
        self._partial: dict[str, bytes] = {"stdout": b"", "stderr": b""}
        self._seq = 0
        self._tail: collections.deque[tuple[int, str]] = collections.deque(maxlen=TAIL_LINES)
        self._err_tail: collections.deque[tuple[int, str]] = collections.deque(maxlen=STDERR_KEEP)
        self._lock = threading.Lock()

    def feed(self, stream: str, data: bytes) -> None:
        """Take a chunk of ``stream``'s bytes."""
        with self._lock:
            self._data[stream] += data
            buf = self._partial[stream] + data
            *lines, rest = buf.split(b"\n")
            self._partial[stream] = rest
        for raw in lines:
            self._line(stream, raw)

    def _line(self, stream: str, raw: bytes) -> None:
        line = raw.decode(errors="replace").rstrip("\r")
        with self._lock:
            self._seq += 1
            self._tail.append((self._seq, line))
            if stream == "stderr":
                self._err_tail.append((self._seq, line))
        if self.on_output is not None:
            self.on_output(self.host, stream, line)

    def finish(self) -> None:
        """Flush the unterminated last lines."""
        for stream in ("stdout", "stderr"):
            rest, self._partial[stream] = self._partial[stream], b""
            if rest:
                self._line(stream, rest)

    def text(self, stream: str) -> str:
        """All of ``stream`` so far, decoded."""
        return bytes(self._data[stream]).decode(errors="replace")

    def tail_text(self) -> str:
        """The last lines in arrival order, newline-joined; the last stderr
        lines are there even when more stdout came after them."""
        with self._lock:
            kept = dict(self._tail)
            kept.update(self._err_tail)
        return "\n".join(line for _, line in sorted(kept.items()))


def wrap_command(
    cmd: str, *, user: str, sudo: bool, sudo_password: bool, env: Mapping[str, str] | None
) -> str:
    """The shell line that runs ``cmd`` (with ``env``) as root or as ``user``.

    With ``sudo_password`` the caller must send the password and a newline
    first on stdin; ``-k`` makes sudo always read it, so it never reaches the
    command.
    """
    if env:
        for k in env:
            if not _ENV_NAME.match(k):
                raise UsageError(f"environment variable name {k!r} is not valid")
        cmd = "export " + " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items()) + "; " + cmd
    if not sudo or user == "root":
        return cmd
    inner = shlex.quote(cmd)
    if sudo_password:
        return f"sudo -k -S -p '' -- sh -c {inner}"
    return f"sudo -n -- sh -c {inner}"


class Process(abc.ABC):
    """A running command whose stdin the caller writes (``open_exec``)."""

    name: str
    display: str

    @abc.abstractmethod
    def write(self, data: bytes) -> None:
        """Send bytes to the command's stdin (blocks while the host is slower)."""

    @abc.abstractmethod
    def close_stdin(self) -> None:
        """Send end-of-file to the command's stdin."""

    @abc.abstractmethod
    def wait(self, *, timeout: float | None = None, check: bool = True) -> Result:
        """Wait for the end; with ``check`` a non-zero exit raises :class:`HostError`."""

    @abc.abstractmethod
    def kill(self) -> None:
        """Abandon the command (close the channel / kill the process)."""

    def __enter__(self) -> Process:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is not None:
            self.kill()


class Executor(abc.ABC):
    """A host's connection: run commands, stream bytes to them."""

    name: str
    credentials: Credentials

    @property
    def is_root(self) -> bool:
        """True when commands run as root without sudo."""
        return self.credentials.user == "root"

    def run(
        self,
        cmd: str,
        *,
        sudo: bool = True,
        check: bool = True,
        stdin: bytes | str | None = None,
        timeout: float | None = None,
        env: Mapping[str, str] | None = None,
        on_output: OutputCallback | None = None,
    ) -> Result:
        """Run a shell command and wait for it.

        A non-zero exit with ``check`` raises :class:`HostError` naming the
        host, the command, the exit status and the last lines of output;
        ``timeout`` (seconds) bounds the whole command.
        """
        proc = self.open_exec(cmd, sudo=sudo, env=env, on_output=on_output)
        return finish(proc, stdin, timeout=timeout, check=check)

    def _command_line(
        self, cmd: str, *, sudo: bool, env: Mapping[str, str] | None
    ) -> tuple[str, bytes]:
        """The shell line that runs ``cmd`` (through sudo when it must) and the
        bytes to send before the command's own stdin (the sudo password)."""
        need_pw = sudo and not self.is_root and self._sudo_needs_password()
        line = wrap_command(
            cmd, user=self.credentials.user, sudo=sudo, sudo_password=need_pw, env=env
        )
        prefix = (self.credentials.password or "").encode() + b"\n" if need_pw else b""
        return line, prefix

    @abc.abstractmethod
    def _sudo_needs_password(self) -> bool:
        """Whether sudo will read a password (never send one it would not read)."""

    @abc.abstractmethod
    def open_exec(
        self,
        cmd: str,
        *,
        sudo: bool = True,
        env: Mapping[str, str] | None = None,
        on_output: OutputCallback | None = None,
    ) -> Process:
        """Start a command and return it for writing a byte stream to its stdin."""

    def run_with_input(
        self,
        cmd: str,
        reader: BinaryIO,
        *,
        sudo: bool = True,
        check: bool = True,
        timeout: float | None = None,
        env: Mapping[str, str] | None = None,
        chunk_size: int = 1 << 20,
        progress: Callable[[int], None] | None = None,
        on_output: OutputCallback | None = None,
    ) -> Result:
        """Run ``cmd`` with everything ``reader`` yields as its stdin.

        ``progress(n)`` is called with the bytes sent by each chunk.
        """
        proc = self.open_exec(cmd, sudo=sudo, env=env, on_output=on_output)
        with proc:
            while True:
                chunk = reader.read(chunk_size)
                if not chunk:
                    break
                proc.write(chunk)
                if progress is not None:
                    progress(len(chunk))
            proc.close_stdin()
            return proc.wait(timeout=timeout, check=check)

    def close(self) -> None:  # noqa: B027 - nothing to release by default
        """Release the connection (again is fine)."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.close()


def command_failed(host: str, cmd: str, status: int, tail: str) -> HostError:
    """The error of a command that exited non-zero."""
    return HostError(
        host, "command failed", command=_short(cmd), exit_status=status, output_tail=tail
    )


def command_timed_out(host: str, cmd: str, timeout: float, tail: str) -> HostError:
    """The error of a command that ran longer than allowed."""
    return HostError(
        host,
        f"command did not finish within {timeout:.3g} s",
        command=_short(cmd),
        output_tail=tail,
    )


def finish(
    proc: Process, stdin: bytes | str | None, *, timeout: float | None, check: bool
) -> Result:
    """Feed ``stdin`` (from a thread, while the output is drained) then wait.

    End-of-file reaches the command only after the last byte of ``stdin``;
    ``timeout`` bounds feeding and waiting together.
    """
    with proc:
        if stdin is None:
            proc.close_stdin()
            return proc.wait(timeout=timeout, check=check)
        data = stdin.encode() if isinstance(stdin, str) else stdin

        def feed() -> None:
            try:
                proc.write(data)
            except HostError:
                return
            proc.close_stdin()

        start = time.monotonic()
        writer = threading.Thread(target=feed, daemon=True)
        writer.start()
        writer.join(timeout)
        if writer.is_alive():
            proc.kill()
            writer.join(5)
            raise command_timed_out(
                proc.name, proc.display, timeout or 0, ""
            )
        # A command that exits without reading all of its input is judged by
        # its exit status alone (as in a shell pipeline).
        left = None if timeout is None else max(0.0, timeout - (time.monotonic() - start))
        return proc.wait(timeout=left, check=check)


# ---------------------------------------------------------------- local


class _LocalProcess(Process):
    def __init__(
        self,
        name: str,
        display: str,
        argv: list[str],
        prefix: bytes,
        on_output: OutputCallback | None,
    ) -> None:
        self.name = name
        self.display = display
        self.out = OutputCollector(name, on_output)
        self.popen = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        self._threads = [
            threading.Thread(target=self._pump, args=(self.popen.stdout, "stdout"), daemon=True),
            threading.Thread(target=self._pump, args=(self.popen.stderr, "stderr"), daemon=True),
        ]
        for t in self._threads:
            t.start()
        if prefix:
            self.write(prefix)

    def _pump(self, fh: BinaryIO | None, stream: str) -> None:
        assert fh is not None
        while True:
            data = fh.read1(65536) if hasattr(fh, "read1") else fh.read(65536)
            if not data:
                return
            self.out.feed(stream, data)

    def write(self, data: bytes) -> None:
        assert self.popen.stdin is not None
        try:
            self.popen.stdin.write(data)
        except BrokenPipeError as exc:
            self.popen.wait()
            self.out.finish()
            raise HostError(
                self.name,
                "command stopped reading its input",
                command=_short(self.display),
                exit_status=self.popen.returncode,
                output_tail=self.out.tail_text(),
            ) from exc

    def close_stdin(self) -> None:
        assert self.popen.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            self.popen.stdin.close()

    def wait(self, *, timeout: float | None = None, check: bool = True) -> Result:
        self.close_stdin()
        try:
            status = self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            self.kill()
            raise command_timed_out(
                self.name, self.display, timeout or 0, self.out.tail_text()
            ) from exc
        for t in self._threads:
            t.join()
        self.out.finish()
        if check and status != 0:
            raise command_failed(self.name, self.display, status, self.out.tail_text())
        return Result(status, self.out.text("stdout"), self.out.text("stderr"))

    def kill(self) -> None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait()


class LocalConnection(Executor):
    """Runs commands on this machine with ``sh -c``, same API as SSH.

    Used for a host whose address is this machine's. As root (or with
    ``sudo=False``) commands run directly; otherwise through ``sudo -S`` with
    ``credentials.password`` on stdin, or ``sudo -n`` without one.
    """

    def __init__(self, name: str = "localhost", credentials: Credentials | None = None) -> None:
        self.name = name
        user = "root" if os.geteuid() == 0 else (os.environ.get("USER") or "user")
        self.credentials = credentials or Credentials(user=user)
        if os.geteuid() == 0 and self.credentials.user != "root":
            self.credentials = Credentials(user="root")
        self._sudo_nopasswd: bool | None = None

    def open_exec(
        self,
        cmd: str,
        *,
        sudo: bool = True,
        env: Mapping[str, str] | None = None,
        on_output: OutputCallback | None = None,
    ) -> Process:
        line, prefix = self._command_line(cmd, sudo=sudo, env=env)
        return _LocalProcess(self.name, cmd, ["sh", "-c", line], prefix, on_output)

    def _sudo_needs_password(self) -> bool:
        # A NOPASSWD rule: sudo would not read the password, so never send it.
        if self.credentials.password is None:
            return False
        if self._sudo_nopasswd is None:
            probe = subprocess.run(
                ["sudo", "-k", "-n", "--", "true"], capture_output=True, timeout=30, check=False
            )
            self._sudo_nopasswd = probe.returncode == 0
        return not self._sudo_nopasswd
