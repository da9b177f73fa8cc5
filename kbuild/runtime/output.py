"""A command's output as it arrives: lines for the progress display, the whole
text for the result, and a short tail for error messages."""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable

__all__ = ["STDERR_KEEP", "TAIL_LINES", "OutputCallback", "OutputCollector", "short"]

TAIL_LINES = 20
STDERR_KEEP = 5
OutputCallback = Callable[[str, str, str], None]
"""``on_output(host, stream, line)``: stream is ``"stdout"`` or ``"stderr"``,
line without its newline."""


def short(cmd: str, limit: int = 400) -> str:
    """A command line cut to ``limit`` characters for messages."""
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

    def raw(self, stream: str) -> bytes:
        """All of ``stream`` so far, as bytes."""
        return bytes(self._data[stream])
