"""The connection to the local machine: the same API as SSH, over subprocesses.

Used for a host whose address is this machine's. Whether commands run as root
comes from the real effective uid of this process, never from the
Clusterfile's user name.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
from collections.abc import Mapping
from typing import BinaryIO

from kbuild.errors import HostError
from kbuild.runtime.executor import (
    Credentials,
    Executor,
    Process,
    Result,
    command_failed,
    command_timed_out,
)
from kbuild.runtime.output import OutputCallback, OutputCollector, short
from kbuild.runtime.remote import display

__all__ = ["LocalConnection"]


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
                command=short(self.display),
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
        return Result(
            status, self.out.text("stdout"), self.out.text("stderr"), self.out.raw("stdout")
        )

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

    @property
    def is_root(self) -> bool:
        """True only when this process really runs as root (the euid), whatever
        user name the Clusterfile gives."""
        return os.geteuid() == 0

    def open_exec(
        self,
        cmd: str,
        *,
        sudo: bool = True,
        env: Mapping[str, str] | None = None,
        on_output: OutputCallback | None = None,
    ) -> Process:
        line, prefix = self._command_line(cmd, sudo=sudo, env=env)
        return _LocalProcess(self.name, display(cmd), ["sh", "-c", line], prefix, on_output)

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
