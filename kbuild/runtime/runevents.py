"""Progress events of the cluster life cycle (run, join, delete, apply, exec).

Library code never prints; it calls ``progress(event)`` with one of these and
the CLI renders them (a rich per-host table, or plain lines).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class HostStatus:
    """A host reached a new state (``preflight``, ``sending``, ``mounted``, ``done``…)."""

    host: str
    status: str
    detail: str = ""


@dataclass(frozen=True)
class BytesSent:
    """Bytes of one layer sent to one host so far (``total`` is the blob size sent)."""

    host: str
    layer: str
    done: int
    total: int


@dataclass(frozen=True)
class PhaseStarted:
    """A life-cycle phase starts on some hosts (``quiet``: a phase that reports
    per host, such as preflight and provision, and is not announced)."""

    phase: str
    hosts: tuple[str, ...]
    quiet: bool = False


@dataclass(frozen=True)
class PhaseDone:
    """A phase finished (``skipped`` when it was recorded as done earlier)."""

    phase: str
    host: str
    skipped: bool = False
    seconds: float = 0.0


@dataclass(frozen=True)
class HostOutput:
    """A line a host's command printed (scripts, plugins, exec)."""

    host: str
    stream: str
    line: str


@dataclass(frozen=True)
class Message:
    """A note for the user that belongs to no host."""

    text: str


Event = HostStatus | BytesSent | PhaseStarted | PhaseDone | HostOutput | Message
Progress = Callable[[Event], None]


def emit(progress: Progress | None, event: Event) -> None:
    """Call ``progress`` when there is one."""
    if progress is not None:
        progress(event)
