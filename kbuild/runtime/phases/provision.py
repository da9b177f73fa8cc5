"""provision: every host gets the data root, the image's layers it lacks, the
mounted rootfs and the files rendered for it (idempotent; a re-run sends and
writes nothing).

Rendered files: the image's templates, the Clusterfile's Config documents
and what the cluster driver generates, written into the rootfs through
:meth:`~kbuild.runtime.executor.Executor.put_files` (only those that
changed); the driver's files outside the rootfs; the ``/etc/hosts`` aliases.
"""

from __future__ import annotations

from kbuild.runtime import render, titles
from kbuild.runtime.clusterfile import Host
from kbuild.runtime.distribute import HostLayers, host_layers, record_layers, send_missing
from kbuild.runtime.executor import FileSpec
from kbuild.runtime.image import Layer
from kbuild.runtime.layers import final_templates
from kbuild.runtime.mount import mount_rootfs
from kbuild.runtime.phases.base import Phase
from kbuild.runtime.phases.context import Context, credentials
from kbuild.runtime.phases.preflight import work_hosts
from kbuild.runtime.pool import run_on_hosts
from kbuild.runtime.preflight import HostFacts, gather_facts
from kbuild.runtime.relay import RelayHost, relay_layers
from kbuild.runtime.remote import remote_script
from kbuild.runtime.runevents import HostStatus, emit
from kbuild.runtime.ssh import Connection

__all__ = ["ProvisionPhase", "mount_and_render", "send_layers", "set_host_aliases"]


def set_host_aliases(ctx: Context, host: Host, *, remove: bool = False) -> None:
    """The Clusterfile's hostAliases and the driver's in the host's /etc/hosts
    (marked with the cluster's name; ``remove`` takes them out)."""
    conn = ctx.conn(host)
    lines = [] if remove else [
        f"{a['ip']} {' '.join(a['hostnames'])}" for a in ctx.cf.cluster.host_aliases
    ] + ctx.driver.host_aliases(ctx, host)  # fmt: skip
    text = "".join(line + "\n" for line in lines)
    res = conn.run(remote_script("host-aliases.sh", ctx.cf.cluster.name), stdin=text)
    if "changed" in res.stdout:
        emit(ctx.progress, HostStatus(conn.name, "hosts", "/etc/hosts aliases updated"))


class ProvisionPhase(Phase):
    """Data root, layers, mount and rendered files on every host worked on."""

    title = titles.PROVISION
    recorded = False
    quiet = True

    def hosts(self, ctx: Context) -> list[Host]:
        """master0 and the hosts being brought up."""
        return work_hosts(ctx)

    def begin(self, ctx: Context, hosts: list[Host]) -> None:
        """The converge starts changing hosts: record it, then the driver prepares."""
        assert ctx.image is not None
        c = ctx.cf.cluster
        ctx.state.image = c.image
        ctx.state.manifest = ctx.image.manifest_digest
        if ctx.image.manifest_digest not in ctx.state.images:
            ctx.state.images.append(ctx.image.manifest_digest)
        ctx.state.data_root = c.data_root
        ctx.state.driver = ctx.driver.kind
        ctx.state.version = ctx.driver.version(ctx.image.labels)
        ctx.state.status = "running"
        for h in c.all_hosts():
            ctx.record(h)
        ctx.sd.save_clusterfile(ctx.cf)
        ctx.save()
        ctx.driver.prepare(ctx)
        relay_missing(ctx, hosts)

    def detail(self, ctx: Context, hosts: list[Host]) -> str:
        """Layers to send (by relay when on), mount, render."""
        d = ctx.cf.cluster.distribution
        how = f"relay, fanout {d.fanout}" if d.relays(len(hosts)) else "direct"
        return f"layers ({how}), rootfs mount, rendered files"

    def run(self, ctx: Context, host: Host) -> None:
        """Bring one host's rootfs to the image and its rendered files."""
        send_layers(ctx, host)
        mount_and_render(ctx, host)


def relay_missing(ctx: Context, hosts: list[Host]) -> None:
    """With ``spec.distribution.relay``: every host's missing layers, passed
    on between the hosts (:mod:`kbuild.runtime.relay`; each host's own
    platform's layers: a layer goes to the hosts that lack it). Whatever a host
    still lacks afterwards, :func:`send_layers` sends it from the client."""
    data_root, dist = ctx.cf.cluster.data_root, ctx.cf.cluster.distribution
    if not dist.relays(len(hosts)):
        return
    todo: dict[str, list[Layer]] = {}

    def look(h: Host) -> RelayHost:
        conn = ctx.conn(h)
        facts, hl = _claim_layers(ctx, h)
        todo[h.ip] = hl.missing
        port = credentials(h).port
        lines = conn.known_hosts.lines(conn.host, port) if isinstance(conn, Connection) else []
        return RelayHost(h.ip, conn, port, facts.tools, tuple(lines))

    found = run_on_hosts(hosts, look, max_workers=ctx.opts.max_workers,
                         name=lambda h: h.ip, check=False)  # fmt: skip
    res = relay_layers(
        list(found.results.values()), todo, store=ctx.opts.store, data_root=data_root,
        settings=dist, progress=ctx.progress,
    )  # fmt: skip
    for ip, why in sorted({**res.failed, **res.probe_failed}.items()):
        emit(ctx.progress, HostStatus(ip, "relay", f"gets layers from the client: {why}"))


def _claim_layers(ctx: Context, host: Host) -> tuple[HostFacts, HostLayers]:
    """The host's facts; its rootfs's layers (its platform's) claimed for the
    cluster, then split into present and missing."""
    conn, data_root = ctx.conn(host), ctx.cf.cluster.data_root
    facts = ctx.facts.get(host.ip) or gather_facts(conn, data_root)
    layers = ctx.rootfs_layers(host)
    record_layers(conn, data_root, ctx.cf.cluster.name, layers)
    return facts, host_layers(conn, data_root, ctx.image_for(host), layers)


def send_layers(ctx: Context, host: Host) -> None:
    """The data root and every layer of the host's rootfs (its platform's) it lacks."""
    facts, todo = _claim_layers(ctx, host)
    send_missing(ctx.conn(host), ctx.opts.store, ctx.cf.cluster.data_root, todo,
                 host_tools=facts.tools, progress=ctx.progress)  # fmt: skip


def mount_and_render(ctx: Context, host: Host) -> None:
    """The rootfs mounted with the image (its generation), the rendered files,
    the driver's files, the ``/etc/hosts`` aliases; the host's record says
    which image it runs."""
    conn, paths, image = ctx.conn(host), ctx.paths, ctx.image_for(host)
    if mount_rootfs(conn, paths, ctx.rootfs_layers(host), ctx.generation):
        emit(ctx.progress, HostStatus(host.ip, "mounted", paths.rootfs))
    rec = ctx.record(host)
    if (rec.image, rec.upper) != (image.manifest_digest, ctx.generation):
        rec.image, rec.upper = image.manifest_digest, ctx.generation
        rec.version = rec.version or ctx.driver.version(image.labels)
        ctx.save()
    files: dict[str, bytes | FileSpec] = dict(
        render.render_files(final_templates(ctx.scans_for(host)), ctx.env(host, titles.RENDER))
    )
    files.update(render.config_files(conn, paths.rootfs, ctx.cf.configs))
    files.update(ctx.driver.host_files(ctx, conn, host))
    written = conn.put_files(files, root=paths.rootfs)
    if written:
        emit(ctx.progress, HostStatus(host.ip, "rendered", ", ".join(written)))
    conn.put_files(ctx.driver.private_files(ctx, conn, host))
    set_host_aliases(ctx, host)
