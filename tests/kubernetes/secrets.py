"""Watching an end-to-end run for secrets where they must not be: every process
list (on this machine and on the hosts, sampled while kbuild works), every
line kbuild printed, the hosts' journals."""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field


def _ps(container: str | None) -> list[str]:
    cmd = ["ps", "-eo", "args"]
    if container is not None:
        cmd = ["podman", "exec", container, *cmd]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
    return proc.stdout.splitlines()


@dataclass
class Watch:
    """What was seen: process command lines and output texts."""

    containers: Sequence[str]
    command_lines: set[str] = field(default_factory=set)
    texts: list[tuple[str, str]] = field(default_factory=list)
    """(where, text): kbuild's output of a command, a host's journal."""
    samples: int = 0

    @contextmanager
    def processes(self, interval: float = 0.2) -> Iterator[None]:
        """Sample ``ps`` here and on every host until the block ends."""
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                for c in [None, *self.containers]:
                    self.command_lines.update(_ps(c))
                self.samples += 1
                stop.wait(interval)

        t = threading.Thread(target=sample, daemon=True)
        t.start()
        try:
            yield
        finally:
            stop.set()
            t.join(60)

    def journals(self) -> None:
        """Every host's journal, whole."""
        for c in self.containers:
            proc = subprocess.run(
                ["podman", "exec", c, "journalctl", "--no-pager", "-o", "cat"],
                capture_output=True, text=True, timeout=120, check=False,
            )  # fmt: skip
            self.texts.append((f"journal of {c}", proc.stdout))

    def found(self, secrets: dict[str, str]) -> list[str]:
        """Where each secret appeared (empty when nowhere)."""
        hits = []
        for name, value in secrets.items():
            if not value:
                continue
            for line in self.command_lines:
                if value in line:
                    hits.append(f"{name} in a command line: {line.replace(value, '<secret>')}")
            for where, text in self.texts:
                for line in text.splitlines():
                    if value in line:
                        hits.append(f"{name} in {where}: {line.replace(value, '<secret>')}")
        return hits
