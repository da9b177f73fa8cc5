"""A phase of the life cycle: one small class, one title.

A phase runs per host (``scope = "host"``, in parallel over its hosts, in
batches when it says so), once on the lead master (``scope = "cluster"``:
master0, or the first live master of an initialized cluster), or once on
this machine (``scope = "client"``, :class:`ClientPhase`). Its
``title`` is the one name used for its state record, its progress events
and the plugins of that name. The
:class:`~kbuild.runtime.phases.manager.Manager` decides what runs: it drops
hosts whose record says the phase is done (``recorded`` phases), asks
:meth:`Phase.should_run`, and in ``--dry-run`` collects :meth:`Phase.plan`
of the very same list instead of running it (``read_only`` phases run in
both).
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from kbuild.runtime.clusterfile import Host
from kbuild.runtime.phases.context import Context

__all__ = ["ClientPhase", "Phase", "PlannedPhase", "Scope"]

Scope = Literal["host", "cluster", "client"]


@dataclass(frozen=True)
class PlannedPhase:
    """A phase as ``--dry-run`` prints it: title, hosts, a short detail."""

    title: str
    hosts: list[str] = field(default_factory=list)
    detail: str = ""


class Phase(abc.ABC):
    """One step of a life-cycle flow."""

    title: str
    scope: Scope = "host"
    recorded: bool = True
    """A finished run is recorded per host (or for the cluster) and not repeated."""
    read_only: bool = False
    """Changes nothing on hosts: runs in ``--dry-run`` too (preflight)."""
    quiet: bool = False
    """Reports per host (HostStatus) rather than being announced as a phase."""
    when: Callable[[Context], bool] | None = None
    """A condition on the operation (e.g. a scale-up) besides having hosts."""

    def record_key(self, ctx: Context) -> str:
        """The name the state records this phase under (its title by default)."""
        return self.title

    def applies_to(self, ctx: Context, host: Host) -> bool:
        """Whether the phase concerns ``host`` at all (e.g. join-host: not master0)."""
        return True

    def hosts(self, ctx: Context) -> list[Host]:
        """The hosts to run on before the recorded ones are dropped."""
        if self.scope == "cluster":
            return [ctx.lead]
        return [h for h in ctx.targets if self.applies_to(ctx, h)]

    def should_run(self, ctx: Context, hosts: list[Host]) -> bool:
        """Whether the phase runs at all: hosts are left to do and ``when`` holds."""
        return bool(hosts) and (self.when is None or self.when(ctx))

    def batches(self, ctx: Context, hosts: list[Host]) -> list[list[Host]]:
        """Groups run one after the other (each group in parallel)."""
        return [hosts]

    def begin(self, ctx: Context, hosts: list[Host]) -> None:  # noqa: B027 - optional hook
        """Client-side work once, before the hosts' work (not in --dry-run)."""

    @abc.abstractmethod
    def run(self, ctx: Context, host: Host) -> None:
        """The phase's work on one host (master0 for a cluster phase)."""

    def detail(self, ctx: Context, hosts: list[Host]) -> str:
        """A short note for the plan."""
        return ""

    def plan(self, ctx: Context, hosts: list[Host]) -> PlannedPhase:
        """What ``--dry-run`` prints for this phase."""
        return PlannedPhase(self.title, [h.ip for h in hosts], self.detail(ctx, hosts))


class ClientPhase(Phase):
    """A phase that works on this machine only (the local state), once."""

    scope: Scope = "client"
    recorded = False

    def hosts(self, ctx: Context) -> list[Host]:
        """No host: the phase runs here."""
        return []

    def should_run(self, ctx: Context, hosts: list[Host]) -> bool:
        """Always, unless a subclass says otherwise."""
        return True

    def run(self, ctx: Context, host: Host) -> None:
        """Client phases have no per-host work."""
        self.run_client(ctx)

    @abc.abstractmethod
    def run_client(self, ctx: Context) -> None:
        """The phase's work on this machine."""
