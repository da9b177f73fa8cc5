"""The cluster life cycle: run, join, delete, apply, exec.

A thin composition: each operation makes a :class:`~kbuild.runtime.phases.context.Context`,
takes its flow's phase list (:mod:`kbuild.runtime.phases.lists`, extended by
the image's cluster driver) and hands it to the
:class:`~kbuild.runtime.phases.manager.Manager`. ``run``, ``join`` and
``apply`` converge on one list: hosts not finished are brought up, a re-run
skips what is recorded as done and continues what failed. Where hosts come
from (a provider) and what a kind of cluster adds (a driver) come in through
:class:`~kbuild.runtime.phases.context.Options`.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from kbuild.errors import ClusterError
from kbuild.runtime import clusterfile as cfmod
from kbuild.runtime import titles
from kbuild.runtime.clusterfile import Clusterfile, Host
from kbuild.runtime.driver import select_driver
from kbuild.runtime.executor import Credentials, Result
from kbuild.runtime.hostkeys import KnownHosts
from kbuild.runtime.image import image_labels, runs_image
from kbuild.runtime.phases.base import PlannedPhase
from kbuild.runtime.phases.context import Context, Options, credentials
from kbuild.runtime.phases.lists import (
    converge_list,
    delete_cluster_list,
    delete_hosts_list,
    start_converge,
)
from kbuild.runtime.phases.manager import Manager
from kbuild.runtime.phases.preflight import HostPlan, PreflightPhase
from kbuild.runtime.pool import ConnectionPool, run_on_hosts
from kbuild.runtime.preflight import gather_facts
from kbuild.runtime.provider import Provider, ProviderEvent
from kbuild.runtime.runevents import HostOutput, HostStatus, Message, emit
from kbuild.runtime.state import StateDir, state_root

__all__ = [
    "FlowResult",
    "HostPlan",
    "Options",
    "Plan",
    "apply_clusterfile",
    "delete_cluster",
    "delete_hosts",
    "exec_on_hosts",
    "join_hosts",
    "load_recorded",
    "provider_clusterfile",
    "run_cluster",
    "run_flow",
]


@dataclass
class Plan:
    """What a run will do (``--dry-run`` prints it)."""

    cluster: str
    image: str
    manifest: str
    hosts: list[HostPlan] = field(default_factory=list)
    phases: list[tuple[str, list[str]]] = field(default_factory=list)


def _converge(
    cf: Clusterfile, opts: Options, *, dry_run: bool, provider: str = "",
    params: Mapping[str, object] | None = None,
) -> Plan:  # fmt: skip
    """Bring every host of the Clusterfile to the finished state (or plan it)."""
    ctx = Context(cf, opts)
    ctx.params = dict(params or {})
    try:
        c = cf.cluster
        m0 = c.master0()
        if not dry_run and ctx.state.hosts.get(m0.ip) is None and ctx.state.cluster_steps:
            raise ClusterError(f"master0 {m0.ip} is not the host the cluster was created on")
        if ctx.state.hosts and ctx.state.data_root != c.data_root:
            raise ClusterError(
                f"cluster {c.name} keeps its data in {ctx.state.data_root}, "
                f"the Clusterfile says {c.data_root}",
                hint="dataRoot cannot change while the cluster exists",
            )
        if provider and not dry_run:
            ctx.state.provider = provider
        # the driver's phases decide what "finished" means; the image tells the driver
        ctx.driver = select_driver(image_labels(opts.store, c.image), opts.drivers)
        mgr = converge_list(ctx.driver)
        unfinished = mgr.incomplete(ctx, c.all_hosts())
        if ctx.state.manifest and not runs_image(opts.store, c.image, ctx.state.manifest):
            # another image: every host moves to it (an update of the apps)
            start_converge(ctx, c.all_hosts(), new_hosts=unfinished)
        else:
            start_converge(ctx, unfinished)
        planned = mgr.converge(ctx, dry_run=dry_run)
        preflight = next(p for p in mgr.phases if isinstance(p, PreflightPhase))
        assert ctx.image is not None
        plan = Plan(c.name, c.image, ctx.image.manifest_digest)
        plan.hosts = [preflight.host_plans[h.ip] for h in preflight.hosts(ctx)]
        plan.phases = [(p.title, p.hosts) for p in planned if p.title not in _NOT_PRINTED]
        if not dry_run:
            for h in ctx.targets:
                emit(opts.progress, HostStatus(h.ip, "done"))
        return plan
    finally:
        ctx.close()


_NOT_PRINTED = frozenset({titles.PREFLIGHT, titles.PROVISION})
"""Phases the plan shows as its host table rather than as a phase line."""


def run_cluster(
    cf: Clusterfile, opts: Options, *, dry_run: bool = False, provider: str = "",
    params: Mapping[str, object] | None = None,
) -> Plan:  # fmt: skip
    """``kbuild run``: bring the Clusterfile's hosts up (or continue a failed run).

    ``provider`` records which provider made the hosts, so ``delete --all``
    removes them through it. ``params`` go to the driver's phases (a
    restore onto fresh hosts: the backup).
    """
    sd = StateDir(cf.cluster.name, opts.state_root)
    if sd.exists():
        recorded = sd.load_clusterfile()
        have = set(cfmod.iter_host_ips(recorded))
        want = set(cfmod.iter_host_ips(cf))
        if have != want:
            raise ClusterError(
                f"cluster {cf.cluster.name} is recorded with hosts {', '.join(sorted(have))}",
                hint="use `kbuild apply -f Clusterfile` to change the hosts, or join/delete",
            )
    return _converge(cf, opts, dry_run=dry_run, provider=provider, params=params)


def load_recorded(name: str, opts: Options) -> Clusterfile:
    """The Clusterfile recorded for cluster ``name``."""
    return StateDir(name, opts.state_root).load_clusterfile()


def join_hosts(
    name: str,
    opts: Options,
    *,
    masters: Sequence[str] = (),
    nodes: Sequence[str] = (),
    dry_run: bool = False,
) -> Plan:
    """``kbuild join``: add hosts to a recorded cluster and bring them up."""
    cf = load_recorded(name, opts)
    existing = set(cfmod.iter_host_ips(cf))
    new_m = [ip for ip in masters if ip not in existing]
    new_n = [ip for ip in nodes if ip not in existing]
    if new_m:
        cf = cfmod.add_hosts(cf, new_m, "master")
    if new_n:
        cf = cfmod.add_hosts(cf, new_n, "node")
    return _converge(cf, opts, dry_run=dry_run)


def _reachable(ctx: Context, hosts: list[Host], force: bool) -> list[Host]:
    """With ``force``, hosts that cannot be reached are reported and skipped."""
    if not force:
        return hosts
    res = run_on_hosts(
        hosts, ctx.conn, max_workers=ctx.opts.max_workers, name=lambda h: h.ip, check=False
    )
    for ip, err in res.errors.items():
        why = err.message.splitlines()[0]
        emit(ctx.progress, Message(f"{ip}: skipped, cannot reach it: {why}"))
    return [h for h in hosts if h.ip in res.results]


def delete_hosts(name: str, ips: Sequence[str], opts: Options, *, force: bool = False) -> None:
    """``kbuild delete --masters/--nodes``: clean hosts and remove them from the cluster."""
    cf = load_recorded(name, opts)
    known = set(cfmod.iter_host_ips(cf))
    unknown = [ip for ip in ips if ip not in known]
    if unknown:
        raise ClusterError(f"cluster {name} has no host {', '.join(unknown)}")
    m0 = cf.cluster.master0()
    if m0.ip in ips:
        raise ClusterError(
            f"{m0.ip} is master0 of cluster {name}",
            hint="master0 goes only with the whole cluster: `kbuild delete --all`",
        )
    ctx = Context(cf, opts)
    try:
        ctx.try_load_image()
        leaving = [cf.cluster.host(ip) for ip in ips]
        ctx.targets = _reachable(ctx, leaving, force)
        delete_hosts_list(ctx.driver, leaving, forget_unreachable=force).run(ctx)
    finally:
        ctx.close()


def delete_cluster(
    cf: Clusterfile | None, opts: Options, *, name: str | None = None, force: bool = False
) -> None:
    """``kbuild delete --all``: leave every host as it was before ``run``."""
    if cf is None:
        if name is None:
            raise ClusterError("which cluster? give -f Clusterfile or --cluster-name")
        cf = load_recorded(name, opts)
    ctx = Context(cf, opts)
    try:
        ctx.try_load_image()
        if ctx.state.provider:
            _delete_provided(ctx)
            return
        ctx.targets = _reachable(ctx, cf.cluster.all_hosts(), force)
        delete_cluster_list(ctx.driver).run(ctx)
    finally:
        ctx.close()


def apply_clusterfile(
    cf: Clusterfile, opts: Options, *, dry_run: bool = False, force: bool = False
) -> Plan:
    """``kbuild apply -f``: make the recorded cluster match the Clusterfile."""
    sd = StateDir(cf.cluster.name, opts.state_root)
    if not sd.exists():
        return run_cluster(cf, opts, dry_run=dry_run)
    recorded = sd.load_clusterfile()
    if recorded.cluster.master0().ip != cf.cluster.master0().ip:
        raise ClusterError(
            f"master0 would change from {recorded.cluster.master0().ip} "
            f"to {cf.cluster.master0().ip}",
            hint="keep the first master first in the Clusterfile",
        )
    want = set(cfmod.iter_host_ips(cf))
    removed = [ip for ip in cfmod.iter_host_ips(recorded) if ip not in want]
    if removed and not dry_run:
        delete_hosts(cf.cluster.name, removed, opts, force=force)
    elif removed:
        emit(opts.progress, Message("would delete: " + ", ".join(removed)))
    return _converge(cf, opts, dry_run=dry_run)


def exec_on_hosts(
    name: str,
    command: str,
    opts: Options,
    *,
    roles: Sequence[str] = (),
    cf: Clusterfile | None = None,
) -> dict[str, Result]:
    """``kbuild exec``: run ``command`` on the cluster's hosts (optionally by role)."""
    cf = cf or load_recorded(name, opts)
    hosts = [h for h in cf.cluster.all_hosts() if not roles or set(roles) & set(h.roles)]
    if not hosts:
        raise ClusterError(
            f"no host of cluster {cf.cluster.name} has the role(s) {', '.join(roles)}"
        )
    ctx = Context(cf, opts)
    try:

        def one(h: Host) -> Result:
            return ctx.conn(h).run(
                command,
                check=False,
                on_output=lambda host, stream, line: emit(
                    opts.progress, HostOutput(host, stream, line)
                ),
            )

        res = run_on_hosts(
            hosts, one, max_workers=opts.max_workers, name=lambda h: h.ip, check=True
        )
        return res.results
    finally:
        ctx.close()


@dataclass
class FlowResult:
    """What a driver's flow did: the phases it ran (or would run) and what it
    hands back (``ctx.results``: an archive's path, a table of certificates…)."""

    phases: list[PlannedPhase]
    results: dict[str, object]


def run_flow(
    name: str,
    flow: str,
    opts: Options,
    *,
    params: Mapping[str, object] | None = None,
    dry_run: bool = False,
    cf: Clusterfile | None = None,
    image: str | None = None,
) -> FlowResult:
    """A flow of the cluster's driver (backup, restore, certificates, upgrade…)
    on a recorded cluster: the driver fills the phase list of ``flow``
    (:meth:`ClusterDriver.extend`), the manager runs it with ``params`` in
    ``ctx.params``. A cluster whose kind has no such flow is an error.

    ``image``: another image the flow moves the cluster to (upgrade); the list
    starts with the preflight that reads it on every host, and the cluster's
    status says whether the flow finished (a re-run continues)."""
    cf = cf or load_recorded(name, opts)
    if image is not None:
        cf = cfmod.with_image(cf, image)
    new_image = image is not None
    ctx = Context(cf, opts)
    try:
        if new_image:
            ctx.opts.store.resolve(cf.cluster.image)
            ctx.driver = select_driver(image_labels(opts.store, cf.cluster.image), opts.drivers)
            if ctx.state.driver and ctx.state.driver != ctx.driver.kind:
                raise ClusterError(
                    f"cluster {cf.cluster.name} is a {ctx.state.driver} cluster; "
                    f"{cf.cluster.image} is a {ctx.driver.kind} image"
                )
        else:
            ctx.try_load_image()
        mgr = Manager([PreflightPhase()] if new_image else [])
        ctx.driver.extend(flow, mgr)
        if len(mgr.phases) == (1 if new_image else 0):
            kind = ctx.driver.kind if ctx.driver.kind != "none" else "of no known kind"
            raise ClusterError(f"cluster {cf.cluster.name} ({kind}) has no {flow}")
        ctx.params = dict(params or {})
        ctx.targets = cf.cluster.all_hosts()
        planned = (mgr.converge if new_image else mgr.run)(ctx, dry_run=dry_run)
        return FlowResult(planned, ctx.results)
    finally:
        ctx.close()


# ---------------------------------------------------------------- providers


def _provider(opts: Options, name: str) -> Provider:
    provider = opts.providers.get(name)
    if provider is None:
        have = ", ".join(sorted(opts.providers)) or "none"
        raise ClusterError(f"no host provider {name!r} (providers: {have})")
    return provider


def provider_clusterfile(
    provider_name: str,
    image: str,
    opts: Options,
    *,
    name: str,
    masters: int,
    nodes: int,
    env: Sequence[str] = (),
    cmds: Sequence[str] = (),
    apps: Sequence[str] = (),
    data_root: str | None = None,
) -> Clusterfile:
    """Make hosts for a new cluster with a provider and return its Clusterfile.

    An existing record of the cluster is returned as it is (a re-run does not
    make new hosts). The image's driver says whether the hosts' network must
    have no route out (a Kubernetes image: nothing may be pulled from outside).
    """
    sd = StateDir(name, opts.state_root)
    if sd.exists():
        return sd.load_clusterfile()
    if masters < 1:
        raise ClusterError(f"the {provider_name} provider needs at least one master")
    provider = _provider(opts, provider_name)
    driver = select_driver(image_labels(opts.store, image), opts.drivers)

    def on_event(ev: ProviderEvent) -> None:
        emit(opts.progress, Message(f"{provider.name}: {ev.what} {ev.name} {ev.detail}".rstrip()))

    hosts = provider.create(
        name, masters=masters, nodes=nodes, isolated=driver.isolated_network, progress=on_event
    )
    password = hosts[0].credentials.password or secrets.token_urlsafe(18)
    chosen = data_root or _data_root_for(provider, hosts[0].ip, hosts[0].credentials, opts)
    return cfmod.from_flags(
        image,
        masters=[h.ip for h in hosts if h.role == "master"],
        nodes=[h.ip for h in hosts if h.role == "node"],
        passwd=password,
        env=env,
        cmds=cmds,
        apps=apps,
        cluster_name=name,
        data_root=chosen,
    )


def _data_root_for(provider: Provider, ip: str, creds: Credentials, opts: Options) -> str:
    """The first of the provider's dataRoot candidates not on overlayfs."""
    pool = ConnectionPool(known_hosts=(opts.state_root or state_root()) / "known_hosts")
    try:
        conn = pool.get(ip, creds, name=ip)
        for candidate in provider.data_roots:
            if gather_facts(conn, candidate).fstype not in ("overlayfs", "aufs"):
                return candidate
        return provider.data_roots[-1]
    finally:
        pool.close()


def _delete_provided(ctx: Context) -> None:
    """``delete --all`` of a cluster a provider made: its hosts go entirely."""
    provider = _provider(ctx.opts, ctx.state.provider)
    removed = provider.delete(ctx.cf.cluster.name)
    emit(ctx.progress, Message(f"{provider.name}: removed {', '.join(removed) or 'nothing'}"))
    known = KnownHosts((ctx.opts.state_root or state_root()) / "known_hosts")
    for h in ctx.cf.cluster.all_hosts():
        known.forget(h.ip, credentials(h).port)
    ctx.driver.forget(ctx)
    ctx.sd.remove()
