"""What every host connection offers.

:class:`Executor` is the one abstract base behind
:class:`~kbuild.runtime.ssh.Connection` (SSH) and
:class:`~kbuild.runtime.local.LocalConnection` (subprocess), so the rest of
the runtime does not care which one a host has (pyinfra's connector shape):

- ``run``/``open_exec``/``run_with_input``: shell commands, byte streams to
  their stdin. ``sudo=True`` (the default) means "as root": root users run
  the command as is, other users through ``sudo -S`` with the password sent
  on stdin (never on a command line, never in an error message); the
  command's environment travels on stdin too (:mod:`kbuild.runtime.cmdline`).
- ``put_files``/``put_file``/``read_file``: the one way kbuild writes files
  on hosts. Files are compared by sha256 and mode first, so unchanged files
  are not sent; the changed ones travel as one tar stream and each lands by
  rename (never half-written). Under a ``root`` (a cluster rootfs), no path
  may pass through a symlink of the host (an image cannot redirect a write
  out of its root filesystem).
"""

from __future__ import annotations

import abc
import hashlib
import io
import posixpath
import tarfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import BinaryIO

from kbuild.errors import HostError, UsageError
from kbuild.runtime.cmdline import wrap_command
from kbuild.runtime.output import OutputCallback, short
from kbuild.runtime.remote import remote_script

__all__ = [
    "Credentials",
    "Executor",
    "FileSpec",
    "Process",
    "Result",
    "command_failed",
    "command_timed_out",
    "finish",
]


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
    """What a finished command gave: exit status and its decoded output
    (``data``: stdout as bytes)."""

    exit_status: int
    stdout: str
    stderr: str
    data: bytes = field(default=b"", repr=False, compare=False)

    @property
    def ok(self) -> bool:
        """True when the exit status is 0."""
        return self.exit_status == 0


@dataclass(frozen=True)
class FileSpec:
    """A file to write on a host: its bytes and mode."""

    data: bytes = field(repr=False)
    mode: int = 0o644


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
    """A host's connection: run commands, stream bytes to them, put and read files."""

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
        bytes to send before the command's own stdin (sudo password, env)."""
        need_pw = sudo and not self.is_root and self._sudo_needs_password()
        line, prefix = wrap_command(
            cmd, is_root=self.is_root, sudo=sudo, sudo_password=need_pw, env=env
        )
        if need_pw:
            prefix = (self.credentials.password or "").encode() + b"\n" + prefix
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

    # ------------------------------------------------------------ files

    def read_file(self, path: str, *, root: str | None = None) -> bytes | None:
        """A file of the host (as root), or None when it is not a regular file.

        ``path`` is absolute, or relative to ``root`` (then it may not go
        through a symlink on the host).
        """
        _check_path(path, root)
        res = self.run(remote_script("files.sh", "read", root or "", path), check=False)
        if res.exit_status == 3 and not res.stderr.strip():
            return None
        if res.exit_status != 0:
            raise command_failed(self.name, f"read {path}", res.exit_status, res.stderr.strip())
        return res.data

    def put_file(self, path: str, data: bytes, mode: int = 0o644) -> bool:
        """Write one file (absolute path) unless it already has these bytes and
        mode; True when it was written."""
        return bool(self.put_files({path: FileSpec(data, mode)}))

    def put_files(
        self, files: Mapping[str, FileSpec | bytes], *, root: str | None = None
    ) -> list[str]:
        """Write the files that differ (content or mode) from what the host has.

        Paths are absolute, or relative to ``root`` when it is given (then no
        path may go through a symlink on the host). Returns the paths written.
        """
        specs = {p: f if isinstance(f, FileSpec) else FileSpec(f) for p, f in files.items()}
        for path in specs:
            _check_path(path, root)
        have = self._file_sums(list(specs), root)
        changed = {p: s for p, s in sorted(specs.items()) if have.get(p) != _sum(s)}
        if not changed:
            return []
        args: list[str] = ["put", root or ""]
        for path, spec in changed.items():
            args += [f"{spec.mode:o}", path]
        self.run(remote_script("files.sh", *args), stdin=_tar_of(list(changed.values())))
        return list(changed)

    def _file_sums(self, paths: list[str], root: str | None) -> dict[str, str]:
        if not paths:
            return {}
        res = self.run(remote_script("files.sh", "sums", root or "", *paths))
        out: dict[str, str] = {}
        for line in res.stdout.splitlines():
            mode, _, rest = line.partition(" ")
            digest, _, path = rest.partition(" ")
            if path:
                out[path] = f"{mode} {digest}"
        return out

    def close(self) -> None:  # noqa: B027 - nothing to release by default
        """Release the connection (again is fine)."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.close()


def _sum(spec: FileSpec) -> str:
    return f"{spec.mode:o} {hashlib.sha256(spec.data).hexdigest()}"


def _check_path(path: str, root: str | None) -> None:
    bad = (
        not path
        or "\n" in path
        or "\0" in path
        or posixpath.normpath(path) != path
        or path.startswith("..")
        or (root is None) != path.startswith("/")
    )
    if bad:
        where = f"under {root}" if root else "absolute"
        raise UsageError(f"file path {path!r} is not a clean {where} path")


def _tar_of(specs: list[FileSpec]) -> bytes:
    """The files as tar members ``0``, ``1``, … in order (``files.sh put`` reads them)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for i, spec in enumerate(specs):
            info = tarfile.TarInfo(str(i))
            info.size = len(spec.data)
            info.mode = 0o600
            tar.addfile(info, io.BytesIO(spec.data))
    return buf.getvalue()


def command_failed(host: str, cmd: str, status: int, tail: str) -> HostError:
    """The error of a command that exited non-zero."""
    return HostError(
        host, "command failed", command=short(cmd), exit_status=status, output_tail=tail
    )


def command_timed_out(host: str, cmd: str, timeout: float, tail: str) -> HostError:
    """The error of a command that ran longer than allowed."""
    return HostError(
        host,
        f"command did not finish within {timeout:.3g} s",
        command=short(cmd),
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
            raise command_timed_out(proc.name, proc.display, timeout or 0, "")
        # A command that exits without reading all of its input is judged by
        # its exit status alone (as in a shell pipeline).
        left = None if timeout is None else max(0.0, timeout - (time.monotonic() - start))
        return proc.wait(timeout=left, check=check)
