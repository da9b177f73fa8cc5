"""What the relay's modules share: a host taking part, a layer's stream, a
run's result, and what repairing a run needs of its session."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from kbuild.runtime.clusterfile import Distribution
from kbuild.runtime.executor import Executor
from kbuild.runtime.image import Layer
from kbuild.runtime.relay.plan import RelayPlan

__all__ = ["RelayHost", "RelayResult", "RelaySession", "Stream"]


@dataclass(frozen=True)
class RelayHost:
    """What the relay needs of one host."""

    ip: str
    conn: Executor
    port: int
    tools: frozenset[str]
    key_lines: tuple[str, ...]
    """Its SSH host keys as the client knows them (known_hosts lines)."""


@dataclass
class RelayResult:
    """What a relay run did."""

    run_id: str = ""
    plan: RelayPlan = field(default_factory=RelayPlan)
    sent: dict[str, int] = field(default_factory=dict)
    """layer hex → bytes the client sent for it."""
    failed: dict[str, str] = field(default_factory=dict)
    """host → why it left the relay (it gets its layers directly)."""
    repair: RelayPlan = field(default_factory=RelayPlan)
    """Trees from a root's kept copy to the hosts below a host that failed."""
    probe_failed: dict[str, str] = field(default_factory=dict)
    """receiver → the failed probe (it gets its layers directly)."""


@dataclass(frozen=True)
class Stream:
    """How one layer travels from host to host: its bytes' format, sha256 and size."""

    layer: Layer
    mode: str
    """``zstd``/``gzip``: the blob as stored; ``none``: the tar."""
    sha256: str
    size: int


class RelaySession(Protocol):
    """The parts of a :class:`~kbuild.runtime.relay.session.Session` a repair uses."""

    run_id: str
    hosts: dict[str, RelayHost]
    streams: dict[str, Stream]
    data_root: str
    settings: Distribution
    dir: str
