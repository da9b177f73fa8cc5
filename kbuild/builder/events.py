"""Progress events of a build, rendered by the CLI (library code never prints)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class StepStarted:
    """A step began (``step_id`` like ``"builder 2/5"``)."""

    step_id: str
    text: str


@dataclass(frozen=True)
class StepDone:
    """A step finished; ``cached`` when its layer came from the build cache."""

    step_id: str
    cached: bool
    seconds: float
    layer_digest: str | None = None
    layer_size: int = 0


@dataclass(frozen=True)
class StepLog:
    """One line of output of a RUN step."""

    step_id: str
    line: str


@dataclass(frozen=True)
class BytesDone:
    """Bytes of a layer packed so far (``total`` is 0 when unknown)."""

    what: str
    done: int
    total: int


@dataclass(frozen=True)
class BuildFinished:
    """The image was written and tagged."""

    manifest_digest: str
    config_digest: str
    size: int
    layers: int
    seconds: float
    tags: tuple[str, ...]


Event = StepStarted | StepDone | StepLog | BytesDone | BuildFinished
Progress = Callable[[Event], None]
