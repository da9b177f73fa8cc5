"""Helper threads of the packing pipeline: hash + compress the tar, write the blob.

hashlib and the zstd compressor release the GIL on large buffers, so a
thread per stage lets reading, the diffID hash, compression and the blob
write (with its own hash) overlap on several cores. Queues are bounded:
memory stays flat whatever the layer size.
"""

from __future__ import annotations

import abc
import contextlib
import hashlib
import queue
import threading
from types import TracebackType
from typing import Any, Protocol, Self

_DEPTH = 4


class _Sink(Protocol):
    def write(self, data: bytes | bytearray | memoryview) -> object: ...


class _Worker(abc.ABC):
    """A thread applying ``handle`` to queued items, in order."""

    def __init__(self, name: str) -> None:
        self._q: queue.Queue[Any] = queue.Queue(maxsize=_DEPTH)
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()
        self._closed = False

    @abc.abstractmethod
    def handle(self, item: Any) -> None:
        """Process one queued item (runs in the worker thread)."""

    def _run(self) -> None:
        while True:
            item = self._q.get()
            if item is None:
                return
            if self.error is None:
                try:
                    self.handle(item)
                except BaseException as exc:  # re-raised in the producer
                    self.error = exc
            self.after(item)

    def after(self, item: Any) -> None:  # noqa: B027 - a hook; most workers need none
        """Called for every item, also after an error (to return buffers)."""

    def put(self, item: Any) -> None:
        if self.error is not None:
            raise self.error
        self._q.put(item)

    def close(self) -> None:
        """Wait for the queued work; re-raise an error of the thread."""
        if not self._closed:
            self._closed = True
            self._q.put(None)
            self._thread.join()
        if self.error is not None:
            raise self.error

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            with contextlib.suppress(BaseException):  # the first error wins
                self.close()


class TarConsumer(_Worker):
    """Hashes the tar stream (the diffID) and feeds it to the compressor.

    Runs beside the thread that produces the tar, like ``tar | zstd``: the
    producer walks and reads files while this thread (mostly outside the GIL)
    hashes and hands data to the zstd workers. Pool buffers go back to their
    pool once both are done with them.
    """

    def __init__(self, comp: _Sink) -> None:
        self.hash = hashlib.sha256()
        self._comp = comp
        super().__init__("kbuild-tar")

    def handle(self, item: tuple[memoryview | bytes | bytearray, Any]) -> None:
        self.hash.update(item[0])
        self._comp.write(item[0])

    def after(self, item: tuple[memoryview | bytes | bytearray, Any]) -> None:
        pool = item[1]
        if pool is not None:
            view = item[0]
            pool.put(view.obj if isinstance(view, memoryview) else view)


class WriterThread(_Worker):
    """Writes the compressed stream into the blob writer (which hashes it)."""

    def __init__(self, out: _Sink) -> None:
        self._out = out
        super().__init__("kbuild-blob")

    def handle(self, item: bytes) -> None:
        self._out.write(item)

    def write(self, data: bytes | bytearray | memoryview) -> int:
        """Queue ``data`` (copied when it is not immutable bytes)."""
        self.put(data if isinstance(data, bytes) else bytes(data))
        return len(data)
