"""Progress events of the layer store (rendered by the CLI)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class BytesDone:
    """``done`` of ``total`` bytes of ``what`` are processed (total may be unknown)."""

    what: str
    done: int
    total: int | None


Progress = Callable[[BytesDone], None]
