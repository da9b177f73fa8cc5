"""Progress events of the registry client (rendered by the CLI).

A transfer of one blob emits ``BlobStarted``, any number of ``BlobProgress``
and one ``BlobDone``; ``Retrying`` says a request is about to be sent again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class BlobStarted:
    """A blob transfer begins; ``offset`` > 0 when it resumes earlier work."""

    digest: str
    size: int
    direction: str  # "push" or "pull"
    offset: int = 0


@dataclass(frozen=True)
class BlobProgress:
    """``done`` of ``total`` bytes of the blob moved; ``speed`` in bytes/s since start."""

    digest: str
    done: int
    total: int
    speed: float


@dataclass(frozen=True)
class BlobDone:
    """A blob is finished: ``how`` is uploaded, exists, mounted, downloaded or present.

    ``transferred`` counts the bytes that went over the wire for it.
    """

    digest: str
    size: int
    how: str
    transferred: int
    seconds: float


@dataclass(frozen=True)
class ManifestDone:
    """A manifest or index was written (push) or read (pull)."""

    reference: str
    digest: str
    media_type: str


@dataclass(frozen=True)
class Retrying:
    """A request failed with a transient error and will be sent again after ``delay`` s."""

    what: str
    attempt: int
    delay: float
    reason: str


Event = BlobStarted | BlobProgress | BlobDone | ManifestDone | Retrying
Progress = Callable[[Event], None]
