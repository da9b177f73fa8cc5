"""The phase manager with fake phases: order, composition, what is skipped,
what a failure stops, what a re-run continues, and that ``--dry-run`` plans
the very list that runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from kbuild.errors import ClusterError, HostError, HostsError
from kbuild.runtime.clusterfile import Host
from kbuild.runtime.driver import NullDriver
from kbuild.runtime.phases.base import Phase, Scope
from kbuild.runtime.phases.context import Context
from kbuild.runtime.phases.lists import converge_list, start_converge
from kbuild.runtime.phases.manager import Manager
from kbuild.runtime.runevents import PhaseStarted
from tests.runtime.phases.harness import DEMO_CF as CF
from tests.runtime.phases.harness import scenario
from tests.runtime.recording import Facts

PREFLIGHT = {
    "*": [{"match": r"^\[preflight.sh\]", "stdout": "arch=x86_64\nuid=0\nsystemd=yes\n"
           "tools=sh\nmissing=\nfree_kb=99999999\nfstype=ext4\noverlay=yes\n"}]
}  # fmt: skip


class Fake(Phase):
    """Records (title, host) in ``log``; fails on the hosts in ``fail_on``."""

    def __init__(
        self, title: str, log: list[tuple[str, str]], *, scope: Scope = "host",
        recorded: bool = True, fail_on: frozenset[str] = frozenset(), read_only: bool = False,
    ) -> None:  # fmt: skip
        self.title = title
        self.scope = scope
        self.recorded = recorded
        self.read_only = read_only
        self.log = log
        self.fail_on = fail_on

    def run(self, ctx: Context, host: Host) -> None:
        self.log.append((self.title, host.ip))
        if host.ip in self.fail_on:
            raise HostError(host.ip, f"{self.title} failed")


@pytest.fixture
def ctx(tmp_path: Path) -> Context:
    sc = scenario(tmp_path, CF, Facts())
    sc.ctx.targets = sc.ctx.cf.cluster.all_hosts()
    return sc.ctx


def _titles(log: list[tuple[str, str]]) -> list[str]:
    out: list[str] = []
    for title, _ in log:
        if not out or out[-1] != title:
            out.append(title)
    return out


def test_order_and_composition(ctx: Context) -> None:
    log: list[tuple[str, str]] = []
    mgr = Manager([Fake("a", log), Fake("c", log, scope="cluster")])
    mgr.insert_after("a", Fake("b", log))
    mgr.insert_before("a", Fake("first", log))
    mgr.add(Fake("last", log))
    assert mgr.titles == ["first", "a", "b", "c", "last"]
    mgr.run(ctx)
    assert _titles(log) == mgr.titles
    assert [ip for t, ip in log if t == "c"] == ["10.0.0.2"]  # cluster phases: master0
    with pytest.raises(ClusterError, match="no phase 'nope'"):
        mgr.insert_after("nope", Fake("x", log))


def test_recorded_phases_are_skipped_and_a_failure_is_continued(ctx: Context) -> None:
    log: list[tuple[str, str]] = []
    failing = Fake("b", log, fail_on=frozenset({"10.0.0.4"}))
    mgr = Manager([Fake("a", log), failing, Fake("c", log), Fake("always", log, recorded=False)])
    with pytest.raises(HostError, match="b failed"):
        mgr.run(ctx)
    # every host of the failed batch ran to its end; the list stopped there
    assert sorted(ip for t, ip in log if t == "b") == ["10.0.0.2", "10.0.0.3", "10.0.0.4"]
    assert "c" not in _titles(log)
    assert ctx.state.hosts["10.0.0.4"].steps == ["a"]
    assert ctx.state.hosts["10.0.0.3"].steps == ["a", "b"]
    # the state is on disk after each batch: a new run of the list continues
    log.clear()
    failing.fail_on = frozenset()
    ctx.state = ctx.sd.load_state()
    mgr.run(ctx)
    assert [(t, ip) for t, ip in log if t in ("a", "b")] == [("b", "10.0.0.4")]
    assert sorted(ip for t, ip in log if t == "c") == ["10.0.0.2", "10.0.0.3", "10.0.0.4"]
    # a finished list runs only its unrecorded phases again
    log.clear()
    mgr.run(ctx)
    assert _titles(log) == ["always"]


def test_keep_going_drops_failed_hosts_and_raises_at_the_end(ctx: Context) -> None:
    log: list[tuple[str, str]] = []
    mgr = Manager(
        [Fake("clean", log, recorded=False, fail_on=frozenset({"10.0.0.3", "10.0.0.4"})),
         Fake("after", log, recorded=False)],
        keep_going=True,
    )  # fmt: skip
    with pytest.raises(HostsError) as info:
        mgr.run(ctx)
    assert set(info.value.errors) == {"10.0.0.3", "10.0.0.4"}
    assert [ip for t, ip in log if t == "after"] == ["10.0.0.2"]


def test_a_failed_cluster_phase_stops_even_a_keep_going_list(ctx: Context) -> None:
    log: list[tuple[str, str]] = []
    mgr = Manager(
        [Fake("uninstall", log, scope="cluster", recorded=False, fail_on=frozenset({"10.0.0.2"})),
         Fake("clean", log, recorded=False)],
        keep_going=True,
    )  # fmt: skip
    with pytest.raises(HostError, match="uninstall failed"):
        mgr.run(ctx)
    assert _titles(log) == ["uninstall"]


def test_dry_run_plans_the_list_and_runs_only_read_only_phases(ctx: Context) -> None:
    log: list[tuple[str, str]] = []
    phases = [Fake("check", log, recorded=False, read_only=True), Fake("change", log),
              Fake("once", log, scope="cluster")]  # fmt: skip
    planned = Manager(phases).plan(ctx)
    assert [p.title for p in planned] == ["check", "change", "once"]
    assert _titles(log) == ["check"]
    assert planned[2].hosts == ["10.0.0.2"]
    assert not any(rec.steps for rec in ctx.state.hosts.values())


def test_status_of_a_converge(ctx: Context) -> None:
    log: list[tuple[str, str]] = []

    class Starts(Fake):
        def begin(self, ctx: Context, hosts: list[Host]) -> None:
            ctx.state.status = "running"

    mgr = Manager([Starts("start", log, recorded=False),
                   Fake("b", log, fail_on=frozenset({"10.0.0.3"}))])
    with pytest.raises(HostError):
        mgr.converge(ctx)
    assert ctx.sd.load_state().status == "failed"
    mgr.phases[1] = Fake("b", log)
    mgr.converge(ctx)
    assert ctx.sd.load_state().status == "done"


def test_dry_run_output_and_the_real_run_come_from_one_list(tmp_path: Path) -> None:
    """The phases ``--dry-run`` prints are exactly those a real run starts, on the
    same hosts: both walk the converge list of the same driver."""
    dry = scenario(tmp_path / "dry", CF, Facts.from_data(PREFLIGHT))  # type: ignore[arg-type]
    start_converge(dry.ctx, dry.ctx.cf.cluster.all_hosts())
    planned = converge_list(NullDriver()).run(dry.ctx, dry_run=True)
    real = scenario(tmp_path / "real", CF, Facts.from_data(PREFLIGHT))  # type: ignore[arg-type]
    start_converge(real.ctx, real.ctx.cf.cluster.all_hosts())
    converge_list(NullDriver()).run(real.ctx)
    started = [(e.phase, list(e.hosts)) for e in real.events if isinstance(e, PhaseStarted)]
    assert [(p.title, p.hosts) for p in planned] == started
    assert [t for t, _ in started][:4] == ["preflight", "provision", "pre-install", "pre-init-host"]
    # nothing ran on hosts in the dry run but the read-only preflight
    assert all(not c.startswith("[receive-layer.sh]") for cs in dry.commands.values() for c in cs)
