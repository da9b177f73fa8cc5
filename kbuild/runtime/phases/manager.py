"""The phase manager: runs a list of phases, and plans the same list.

One list per flow, so what ``--dry-run`` prints and what runs cannot drift.
The re-run semantics live here:

- a ``recorded`` phase that finished on a host (or for the cluster) is
  recorded in the cluster state as soon as its batch ends and is skipped by
  every later run; a phase that failed on a host is retried by the next run;
- without ``keep_going`` the first failed batch stops the list (every host
  of the batch runs to its end first, and its error is raised, all hosts'
  errors together); with ``keep_going`` (delete) a host that fails a host
  phase is dropped from the rest of the list, the others go on, and the
  errors are raised at the end; a failed cluster phase always stops the list;
- a converge records ``status`` ``running``, then ``failed`` or ``done``
  (:meth:`Manager.converge`).

Drivers compose lists with :meth:`Manager.insert_after` /
:meth:`Manager.insert_before` (k0sctl's InsertAfter).
"""

from __future__ import annotations

from collections.abc import Iterable

from kbuild.errors import ClusterError, HostsError, KbuildError
from kbuild.runtime.clusterfile import Host
from kbuild.runtime.phases.base import ClientPhase, Phase, PlannedPhase
from kbuild.runtime.phases.context import Context
from kbuild.runtime.pool import run_on_hosts
from kbuild.runtime.runevents import HostStatus, PhaseStarted, emit

__all__ = ["Manager"]


class Manager:
    """An ordered list of phases and the rules to run it."""

    def __init__(self, phases: Iterable[Phase] = (), *, keep_going: bool = False) -> None:
        self.phases: list[Phase] = list(phases)
        self.keep_going = keep_going

    # ------------------------------------------------------------ composing

    @property
    def titles(self) -> list[str]:
        """The titles of the list, in order."""
        return [p.title for p in self.phases]

    def _index(self, title: str) -> int:
        for i, phase in enumerate(self.phases):
            if phase.title == title:
                return i
        raise ClusterError(f"no phase {title!r} in this list ({', '.join(self.titles)})")

    def add(self, *phases: Phase) -> None:
        """Append phases."""
        self.phases.extend(phases)

    def insert_after(self, title: str, *phases: Phase) -> None:
        """Insert phases right after the phase ``title``."""
        i = self._index(title) + 1
        self.phases[i:i] = phases

    def insert_before(self, title: str, *phases: Phase) -> None:
        """Insert phases right before the phase ``title``."""
        i = self._index(title)
        self.phases[i:i] = phases

    # ------------------------------------------------------------ state

    def pending(self, ctx: Context, phase: Phase) -> list[Host]:
        """The phase's hosts that still need it (recorded ones dropped)."""
        hosts = [h for h in phase.hosts(ctx) if h.ip not in ctx.failed]
        if not phase.recorded:
            return hosts
        key = phase.record_key(ctx)
        if phase.scope == "cluster":
            return [] if key in ctx.state.cluster_steps else hosts
        return [h for h in hosts if not ctx.record(h).done(key)]

    def incomplete(self, ctx: Context, hosts: Iterable[Host]) -> list[Host]:
        """Hosts on which some recorded host phase of this list is not done."""
        steps = [p for p in self.phases if p.recorded and p.scope == "host"]
        out = []
        for h in hosts:
            rec = ctx.state.hosts.get(h.ip)
            if rec is None or any(
                p.applies_to(ctx, h) and not rec.done(p.record_key(ctx)) for p in steps
            ):
                out.append(h)
        return out

    def _mark_done(self, ctx: Context, phase: Phase, ips: Iterable[str]) -> None:
        if not phase.recorded:
            return
        key = phase.record_key(ctx)
        if phase.scope == "cluster":
            if key not in ctx.state.cluster_steps:
                ctx.state.cluster_steps.append(key)
        else:
            for ip in ips:
                steps = ctx.state.hosts[ip].steps
                if key not in steps:
                    steps.append(key)
        ctx.save()

    # ------------------------------------------------------------ running

    def plan(self, ctx: Context) -> list[PlannedPhase]:
        """``--dry-run``: read-only phases run, the others are planned."""
        return self.run(ctx, dry_run=True)

    def run(self, ctx: Context, *, dry_run: bool = False) -> list[PlannedPhase]:
        """Run the list (or plan it); returns the phases that ran or would run."""
        planned: list[PlannedPhase] = []
        for phase in self.phases:
            hosts = self.pending(ctx, phase)
            if not phase.should_run(ctx, hosts):
                continue
            planned.append(phase.plan(ctx, hosts))
            if dry_run and not phase.read_only:
                continue
            try:
                self._run_phase(ctx, phase, hosts)
            except KbuildError as exc:
                raise ctx.redactor.error(exc) from None
        if ctx.failed:
            _raise({h: ctx.redactor.error(e) for h, e in ctx.failed.items()})
        return planned

    def converge(self, ctx: Context, *, dry_run: bool = False) -> list[PlannedPhase]:
        """:meth:`run` recording the cluster's status: ``running`` once a phase
        changed hosts (set by the phase that starts it), ``failed`` when the
        list stopped, ``done`` when it finished."""
        try:
            planned = self.run(ctx, dry_run=dry_run)
        except BaseException:
            if ctx.state.status == "running":
                ctx.state.status = "failed"
                ctx.save()
            raise
        if ctx.state.status == "running":
            ctx.state.status = "done"
            ctx.save()
        return planned

    def _run_phase(self, ctx: Context, phase: Phase, hosts: list[Host]) -> None:
        emit(ctx.progress, PhaseStarted(phase.title, tuple(h.ip for h in hosts), phase.quiet))
        phase.begin(ctx, hosts)
        if isinstance(phase, ClientPhase):
            phase.run_client(ctx)
            return

        def one(host: Host) -> None:
            emit(ctx.progress, HostStatus(host.ip, phase.title))
            phase.run(ctx, host)

        for batch in phase.batches(ctx, hosts):
            res = run_on_hosts(
                batch, one, max_workers=ctx.opts.max_workers, name=lambda h: h.ip, check=False
            )
            if phase.recorded:
                self._mark_done(ctx, phase, list(res.results))
            if not res.errors:
                continue
            if not self.keep_going or phase.scope == "cluster":
                res.raise_for_errors()
            ctx.failed.update(res.errors)


def _raise(errors: dict[str, KbuildError]) -> None:
    if len(errors) == 1:
        raise next(iter(errors.values()))
    raise HostsError(dict(errors))
