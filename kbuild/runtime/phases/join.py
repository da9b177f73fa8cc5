"""join-cluster and join-host: hosts other than master0 join the cluster.

join-cluster runs on master0 whenever hosts still have to join (it is not
recorded: a new join token each time); the ``kbuild-export: K=V`` lines it
prints become the environment of join-host, with ``KBUILD_JOIN_MASTERS`` and
``KBUILD_JOIN_NODES``. join-host runs on each joiner: masters one at a time
(each one extends etcd), then every node at once.
"""

from __future__ import annotations

from kbuild.runtime import titles
from kbuild.runtime.clusterfile import Host
from kbuild.runtime.contract import exports, run_script
from kbuild.runtime.phases.base import Phase
from kbuild.runtime.phases.context import Context

__all__ = ["JoinClusterPhase", "JoinHostPhase", "joiners"]


def joiners(ctx: Context) -> list[Host]:
    """Hosts worked on, other than master0, that have not joined yet."""
    m0 = ctx.master0.ip
    return [
        h for h in ctx.targets
        if h.ip != m0 and h.ip not in ctx.failed and not ctx.record(h).done(titles.JOIN_HOST)
    ]  # fmt: skip


class JoinClusterPhase(Phase):
    """master0 prepares the joins (fresh tokens) for the hosts still to join."""

    title = titles.JOIN_CLUSTER
    scope = "cluster"
    recorded = False

    def should_run(self, ctx: Context, hosts: list[Host]) -> bool:
        """Only when some host still has to join."""
        return bool(hosts) and bool(joiners(ctx))

    def run(self, ctx: Context, host: Host) -> None:
        """join-cluster.sh; its exports are kept for join-host."""
        todo = joiners(ctx)
        extra = {
            "KBUILD_JOIN_MASTERS": ",".join(h.ip for h in todo if h.is_master),
            "KBUILD_JOIN_NODES": ",".join(h.ip for h in todo if not h.is_master),
        }
        env = {**ctx.env(host, self.title), **extra}
        _, out = run_script(ctx.conn(host), ctx.paths, self.title, env, progress=ctx.progress)
        ctx.join_env = {**extra, **exports(out)}


class JoinHostPhase(Phase):
    """Each joiner joins with what join-cluster handed over."""

    title = titles.JOIN_HOST

    def applies_to(self, ctx: Context, host: Host) -> bool:
        """Every host but master0."""
        return host.ip != ctx.master0.ip

    def batches(self, ctx: Context, hosts: list[Host]) -> list[list[Host]]:
        """Masters one at a time, then the nodes together."""
        masters = [[h] for h in hosts if h.is_master]
        nodes = [h for h in hosts if not h.is_master]
        return masters + ([nodes] if nodes else [])

    def run(self, ctx: Context, host: Host) -> None:
        """join-host.sh with join-cluster's exports."""
        env = {**ctx.env(host, self.title), **ctx.join_env}
        run_script(ctx.conn(host), ctx.paths, self.title, env, progress=ctx.progress)
