"""Hosts as data: a real :class:`Executor` that answers commands from facts and
records what it was asked (pyinfra's "facts in, commands out").

:class:`RecordingExecutor` goes through the whole of ``Executor`` — ``run``,
``run_with_input``, ``put_files``, ``read_file`` — only ``open_exec`` is
answered from :class:`Facts` instead of a shell. Commands are recorded in a
reviewable form: the runtime's own scripts by name (``[files.sh] put …``),
long inline scripts by their first line, a line count and a digest, stdin by
its size (or its file names for ``files.sh put``), the environment by its
``KBUILD_PHASE`` and the names of the other variables.
"""

from __future__ import annotations

import hashlib
import io
import re
import tarfile
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field

from kbuild.runtime.executor import Credentials, Executor, Process, Result, command_failed
from kbuild.runtime.output import OutputCallback
from kbuild.runtime.remote import display


def describe(cmd: str) -> str:
    """A command as the recorded cases show it."""
    if display(cmd) != cmd:
        return display(cmd)
    lines = cmd.strip().splitlines()
    if len(lines) > 1 or len(cmd) > 240:
        digest = hashlib.sha256(cmd.encode()).hexdigest()[:8]
        return f"{lines[0].strip()[:120]} …[{len(lines)} lines {digest}]"
    return cmd


@dataclass(frozen=True)
class Rule:
    """An answer to commands whose description matches ``match`` (a regex)."""

    match: str
    stdout: str = ""
    exit: int = 0
    tar: dict[str, str] | None = None
    """Instead of ``stdout``: a tar of these files (name → text) as the output."""

    def data(self) -> bytes:
        """The output as bytes."""
        if self.tar is None:
            return self.stdout.encode()
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for name, text in self.tar.items():
                info = tarfile.TarInfo(name)
                info.size = len(text.encode())
                tar.addfile(info, io.BytesIO(text.encode()))
        return buf.getvalue()


@dataclass
class Facts:
    """What the hosts answer: rules per host (``*`` for every host), first match wins;
    a command no rule matches succeeds with no output."""

    rules: dict[str, list[Rule]] = field(default_factory=dict)

    @classmethod
    def from_data(cls, data: Mapping[str, list[dict[str, object]]]) -> Facts:
        """``{host or "*": [{match, stdout, exit}, …]}`` as in the case files."""
        return cls({h: [Rule(**r) for r in rules] for h, rules in data.items()})  # type: ignore[arg-type]

    def answer(self, host: str, text: str) -> Rule:
        """The rule for this host and command."""
        for rule in [*self.rules.get(host, []), *self.rules.get("*", [])]:
            if re.search(rule.match, text):
                return rule
        return Rule(".*")


@dataclass
class Log:
    """Every command, per host, in the order each host received them."""

    commands: dict[str, list[str]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, host: str, line: str) -> None:
        """Record one command line of ``host``."""
        with self.lock:
            self.commands.setdefault(host, []).append(line)


def _stdin_note(text: str, data: bytes) -> str:
    if not data:
        return ""
    if text.startswith("[files.sh] put"):
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            return f" <tar of {len(tar.getmembers())} files>"
    return f" <stdin {len(data)}B>"


def _env_note(env: Mapping[str, str] | None) -> str:
    if not env:
        return ""
    phase = env.get("KBUILD_PHASE", "")
    others = sorted(k for k in env if not k.startswith("KBUILD_"))
    extra = sorted(k for k in env if k.startswith("KBUILD_") and k not in _CONTRACT)
    return f" {{phase={phase} env={','.join(others)}{' ' + ','.join(extra) if extra else ''}}}"


_CONTRACT = frozenset({
    "KBUILD_CLUSTER", "KBUILD_IMAGE", "KBUILD_DATA_ROOT", "KBUILD_ROOTFS", "KBUILD_HOST",
    "KBUILD_ROLES", "KBUILD_MASTER0", "KBUILD_MASTERS", "KBUILD_NODES", "KBUILD_PHASE",
})  # fmt: skip


class _Answered(Process):
    def __init__(
        self, executor: RecordingExecutor, cmd: str, env: Mapping[str, str] | None,
        on_output: OutputCallback | None,
    ) -> None:  # fmt: skip
        self.name = executor.name
        self.display = cmd
        self.executor = executor
        self.cmd = cmd
        self.env = dict(env or {})
        self.on_output = on_output
        self.stdin = bytearray()

    def write(self, data: bytes) -> None:
        self.stdin += data

    def close_stdin(self) -> None:
        pass

    def wait(self, *, timeout: float | None = None, check: bool = True) -> Result:
        text = describe(self.cmd)
        line = text + _env_note(self.env) + _stdin_note(text, bytes(self.stdin))
        self.executor.log.add(self.name, line)
        rule = self.executor.facts.answer(self.name, line)
        if self.on_output is not None:
            for out in rule.stdout.splitlines():
                self.on_output(self.name, "stdout", out)
        if check and rule.exit != 0:
            raise command_failed(self.name, display(self.cmd), rule.exit, rule.stdout)
        return Result(rule.exit, rule.stdout, "", rule.data())

    def kill(self) -> None:
        pass


class RecordingExecutor(Executor):
    """A host made of facts; every command it gets is recorded in ``log``."""

    def __init__(self, name: str, facts: Facts, log: Log) -> None:
        self.name = name
        self.credentials = Credentials()
        self.facts = facts
        self.log = log

    def _sudo_needs_password(self) -> bool:
        return False

    def open_exec(
        self,
        cmd: str,
        *,
        sudo: bool = True,
        env: Mapping[str, str] | None = None,
        on_output: OutputCallback | None = None,
    ) -> Process:
        return _Answered(self, cmd, env, on_output)


class RecordingPool:
    """Stands in for a ConnectionPool: one recording executor per host."""

    def __init__(self, facts: Facts, log: Log | None = None) -> None:
        self.facts = facts
        self.log = log or Log()
        self.hosts: dict[str, RecordingExecutor] = {}
        self.unreachable: set[str] = set()

    def get(self, host: str, credentials: Credentials | None = None, *,
            name: str | None = None) -> Executor:  # fmt: skip
        if host in self.unreachable:
            from kbuild.errors import HostError

            raise HostError(host, f"cannot connect to {host}:22: timed out")
        if host not in self.hosts:
            self.hosts[host] = RecordingExecutor(name or host, self.facts, self.log)
        return self.hosts[host]

    def close(self) -> None:
        pass
