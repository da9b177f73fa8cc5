"""Progress of the cluster commands: a live per-host table (rich) or plain lines.

Host output is data, never markup: a line with ``[/]`` or kubeadm's
``[preflight]`` prefixes is printed as it is.
"""

from __future__ import annotations

import sys
import threading

import click
from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from kbuild.runtime.runevents import (
    BytesSent,
    Event,
    HostOutput,
    HostStatus,
    Message,
    PhaseDone,
    PhaseStarted,
)

__all__ = ["PlainRenderer", "RichRenderer", "human", "renderer"]


def human(n: int) -> str:
    """Bytes as B, kB, MB or GB."""
    size = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n} B"


class PlainRenderer:
    """One line per event, prefixed by the host."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def __call__(self, event: Event) -> None:
        line: str | None = None
        if isinstance(event, HostStatus):
            line = f"[{event.host}] {event.status}" + (f": {event.detail}" if event.detail else "")
        elif isinstance(event, HostOutput):
            line = f"[{event.host}] | {event.line}"
        elif isinstance(event, BytesSent):
            if event.total and event.done >= event.total:
                line = f"[{event.host}] sent {event.layer[7:19]} {human(event.done)}"
        elif isinstance(event, PhaseStarted):
            if not event.quiet:
                line = f"==> {event.phase} on {', '.join(event.hosts)}"
        elif isinstance(event, PhaseDone):
            if event.skipped:
                line = f"[{event.host}] {event.phase}: nothing to run"
        elif isinstance(event, Message):
            line = event.text
        if line is not None:
            with self._lock:
                click.echo(line, err=True)

    def close(self) -> None:
        """Nothing to tear down."""


class RichRenderer:
    """A live table of hosts (status, bytes sent); command output above it."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self.rows: dict[str, list[str]] = {}
        self._layer_done: dict[tuple[str, str], int] = {}
        self.sent: dict[str, int] = {}
        self._lock = threading.Lock()
        self.live = Live(self._table(), console=self.console, refresh_per_second=8, transient=False)
        self.live.start()

    def _table(self) -> Table:
        table = Table(show_header=True, header_style="bold", box=None)
        table.add_column("host")
        table.add_column("status")
        table.add_column("sent", justify="right")
        for host, (status, detail) in self.rows.items():
            table.add_row(
                Text(host), Text(f"{status} {detail}".strip()), human(self.sent.get(host, 0))
            )
        return table

    def __call__(self, event: Event) -> None:
        with self._lock:
            if isinstance(event, HostStatus):
                self.rows[event.host] = [event.status, event.detail]
            elif isinstance(event, BytesSent):
                key = (event.host, event.layer)
                before = self._layer_done.get(key, 0)
                self.sent[event.host] = self.sent.get(event.host, 0) + event.done - before
                self._layer_done[key] = event.done
            elif isinstance(event, HostOutput):
                # host output is data, never markup: "[/]" or kubeadm's "[preflight]"
                self.console.print(Text.assemble((event.host, "dim"), " ", event.line))
            elif isinstance(event, PhaseStarted) and not event.quiet:
                self.console.print(
                    Text.assemble((f"==> {event.phase}", "bold"), " on " + ", ".join(event.hosts))
                )
            elif isinstance(event, Message):
                self.console.print(Text(event.text))
            self.live.update(self._table())

    def close(self) -> None:
        """Stop the live display."""
        self.live.stop()


def renderer(mode: str) -> PlainRenderer | RichRenderer:
    """Plain lines for ``--progress plain`` or a non-terminal, else the live table."""
    if mode == "plain" or not sys.stderr.isatty():
        return PlainRenderer()
    return RichRenderer()


