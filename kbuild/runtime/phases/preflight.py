"""preflight: read-only checks of every host before anything changes.

Facts of every host first (architecture, root, systemd, tools, space), then
the image of each of the hosts' platforms (hosts may differ: each gets its
own platform's layers; a host whose platform a multi-platform image lacks is
refused), then per host the layers it lacks and what keeps it from running
the image. Every host is checked; the manager
reports all problems together. Runs in ``--dry-run`` too.
"""

from __future__ import annotations

from dataclasses import dataclass

from kbuild.errors import ClusterError, HostError, KbuildError
from kbuild.runtime import titles
from kbuild.runtime.clusterfile import Host
from kbuild.runtime.distribute import host_layers
from kbuild.runtime.image import Layer, image_platforms
from kbuild.runtime.layers import scan_layer
from kbuild.runtime.phases.base import Phase
from kbuild.runtime.phases.context import Context
from kbuild.runtime.pool import run_on_hosts
from kbuild.runtime.preflight import HostFacts, gather_facts, problems
from kbuild.runtime.runevents import HostStatus, emit

__all__ = ["HostPlan", "PreflightPhase", "work_hosts"]


@dataclass
class HostPlan:
    """One host in a plan: what it has and what it will receive."""

    ip: str
    roles: tuple[str, ...]
    arch: str
    missing: list[Layer]
    present: int

    @property
    def bytes_to_send(self) -> int:
        """Blob bytes this host will receive."""
        return sum(layer.size for layer in self.missing)


def work_hosts(ctx: Context) -> list[Host]:
    """The lead master (cluster phases run there) and the hosts being brought up."""
    lead = ctx.lead
    return [lead] + [h for h in ctx.targets if h.ip != lead.ip]


class PreflightPhase(Phase):
    """Read-only checks; fills ``ctx.facts``, loads the image, plans each host."""

    title = titles.PREFLIGHT
    recorded = False
    read_only = True
    quiet = True

    def __init__(self) -> None:
        self.errors: dict[str, KbuildError] = {}
        self.host_plans: dict[str, HostPlan] = {}

    def hosts(self, ctx: Context) -> list[Host]:
        """The lead master and the hosts being brought up."""
        return work_hosts(ctx)

    def begin(self, ctx: Context, hosts: list[Host]) -> None:
        """Facts of every host, then the image of their architecture."""
        ctx.opts.store.resolve(ctx.cf.cluster.image)  # a missing image fails before any host
        data_root = ctx.cf.cluster.data_root

        def facts_of(h: Host) -> None:
            emit(ctx.progress, HostStatus(h.ip, "preflight"))
            ctx.facts[h.ip] = gather_facts(ctx.conn(h), data_root)

        res = run_on_hosts(
            hosts, facts_of, max_workers=ctx.opts.max_workers, name=lambda h: h.ip, check=False
        )
        self.errors = dict(res.errors)
        found = {h.ip: ctx.facts[h.ip] for h in hosts if h.ip in ctx.facts}
        arches = self._usable_arches(ctx, found)
        lead = found.get(ctx.lead.ip)
        first = lead.arch if lead is not None and lead.arch in arches else None
        ctx.load_image(first or (arches[0] if arches else None))
        ctx.load_platforms(arches)

    def _usable_arches(self, ctx: Context, found: dict[str, HostFacts]) -> list[str]:
        """The hosts' architectures the image has; a host of another one gets an
        error naming the platforms the image has (a single-platform image is
        checked per host in :meth:`run`)."""
        ref = ctx.cf.cluster.image
        have = image_platforms(ctx.opts.store, ref)
        arches = sorted({f.arch for f in found.values()})
        if have is None:
            return arches
        have_arches = {p.split("/")[1] for p in have}
        for ip, f in found.items():
            if f.arch not in have_arches:
                self.errors[ip] = HostError(
                    ip, f"image {ref} has no platform for this host's architecture {f.arch} "
                    f"(it has: {', '.join(have) or 'none'})")
        usable = [a for a in arches if a in have_arches]
        if arches and not usable:
            raise ClusterError(
                f"image {ref} has no platform for the hosts: "
                + ", ".join(f"{ip} {f.arch}" for ip, f in sorted(found.items())),
                hint=f"the image has: {', '.join(have) or 'none'}; build it with "
                "--platform listing the hosts' platforms")
        return usable

    def run(self, ctx: Context, host: Host) -> None:
        """The host's layers and problems (a HostError listing them)."""
        if host.ip in self.errors:
            raise self.errors[host.ip]
        image, facts = ctx.image_for(host), ctx.facts[host.ip]
        data_root = ctx.cf.cluster.data_root
        hl = host_layers(ctx.conn(host), data_root, image, ctx.rootfs_layers(host))
        need = sum(scan_layer(ctx.opts.store, layer).size for layer in hl.missing)
        relayed = ctx.cf.cluster.distribution.relays(len(ctx.targets))
        blobs = sum(layer.size for layer in hl.missing) if relayed else 0
        found = problems(facts, image_arch=image.arch, need_bytes=need, data_root=data_root,
                         relay_bytes=blobs)  # fmt: skip
        if found:
            raise HostError(host.ip, "preflight failed: " + "; ".join(found))
        self.host_plans[host.ip] = HostPlan(
            host.ip, host.roles, facts.arch, hl.missing, len(hl.present)
        )
        emit(ctx.progress, HostStatus(host.ip, "checked", f"{len(hl.missing)} layers to send"))
