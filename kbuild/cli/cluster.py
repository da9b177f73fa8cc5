"""kbuild CLI: cluster commands (run, join, delete, apply, exec)."""

from __future__ import annotations

import os
import shlex
import threading
from collections.abc import Sequence
from typing import Any

import click

from kbuild.errors import ClusterError, UsageError
from kbuild.layerstore import Store
from kbuild.runtime import clusterfile as cfmod
from kbuild.runtime import lifecycle
from kbuild.runtime.drivers import DRIVERS
from kbuild.runtime.providers import PROVIDERS
from kbuild.runtime.runevents import (
    Event,
    HostOutput,
)
from kbuild.runtime.state import StateDir, list_clusters

from .common import read_secret, store_root
from .progress import PlainRenderer, RichRenderer, human, renderer


def _options(
    ctx: click.Context, shown: PlainRenderer | RichRenderer, accept_changed: bool
) -> lifecycle.Options:
    return lifecycle.Options(
        store=Store(store_root(ctx)),
        progress=shown,
        accept_changed_host_key=accept_changed,
        drivers=DRIVERS,
        providers=PROVIDERS,
    )


def driver_flow(
    ctx: click.Context, name: str | None, flow: str, params: dict[str, object],
    accept_changed: bool, progress_mode: str, *, dry_run: bool = False,
    image: str | None = None,
) -> lifecycle.FlowResult:  # fmt: skip
    """A flow of the cluster driver (upgrade, check, backup…) with progress shown."""
    display = renderer(progress_mode)
    try:
        return lifecycle.run_flow(
            _cluster_name(name), flow, _options(ctx, display, accept_changed),
            params=params, dry_run=dry_run, image=image,
        )  # fmt: skip
    finally:
        display.close()


def _cluster_name(name: str | None) -> str:
    if name:
        return name
    names = list_clusters()
    if len(names) == 1:
        return names[0]
    if not names:
        raise ClusterError("no cluster is recorded here", hint="run one with `kbuild run`")
    raise UsageError(
        "several clusters are recorded: " + ", ".join(names), hint="pick one with --cluster-name"
    )


def shell_command(words: Sequence[str]) -> str:
    """``kbuild exec`` words as one shell line: a single word is a command line
    of its own (``kbuild exec -- 'a && b'``), several are an argv, each word
    quoted (``kbuild exec -- ls "/a b"`` lists ``/a b``)."""
    return words[0] if len(words) == 1 else shlex.join(words)


def ssh_password(passwd: str | None, passwd_stdin: bool, passwd_file: str | None) -> str | None:
    """The SSH password from ``--passwd``, ``--passwd-stdin``, ``--passwd-file``
    or ``$KBUILD_SSH_PASSWORD`` (one of them; the last three keep it out of
    the process list and the shell history)."""
    given = [x for x in (passwd is not None, passwd_stdin, passwd_file is not None) if x]
    if len(given) > 1:
        raise UsageError("give the SSH password one way: --passwd, --passwd-stdin or --passwd-file")
    if passwd_stdin or passwd_file is not None:
        return read_secret(passwd_stdin, passwd_file, "--passwd-file")
    return passwd if passwd is not None else os.environ.get("KBUILD_SSH_PASSWORD")


def _ips(values: Sequence[str], what: str) -> list[str]:
    out: list[str] = []
    for v in values:
        out.extend(cfmod.split_ip_list(v, what=what))
    return out


def _count(values: Sequence[str], flag: str, default: int) -> int:
    if not values:
        return default
    if len(values) > 1 or not values[0].isdigit():
        raise UsageError(f"with --provider podman, {flag} is a number of hosts, not {values[0]!r}")
    return int(values[0])


def _print_plan(plan: lifecycle.Plan) -> None:
    click.echo(f"Plan for cluster {plan.cluster}: image {plan.image} ({plan.manifest[:19]})")
    click.echo("Hosts:")
    for h in plan.hosts:
        layers = (
            ", ".join(f"{layer.hex[:12]} ({human(layer.size)})" for layer in h.missing) or "none"
        )
        click.echo(
            f"  {h.ip:<16} {','.join(h.roles):<12} {h.arch:<6} send {len(h.missing)} layers, "
            f"{human(h.bytes_to_send)} ({h.present} present): {layers}"
        )
    click.echo("Phases:")
    if not plan.phases:
        click.echo("  none (everything is done)")
    for phase, hosts in plan.phases:
        click.echo(f"  {phase:<15} {', '.join(hosts)}")


_common = [
    click.option(
        "--accept-changed-host-key",
        is_flag=True,
        help="Trust a host key that differs from the recorded one (after a reinstall).",
    ),
    click.option(
        "--progress",
        "progress_mode",
        type=click.Choice(["auto", "plain"]),
        default="auto",
        show_default=True,
        help="Progress output style.",
    ),
]


def _with_common(fn):  # type: ignore[no-untyped-def]
    for opt in reversed(_common):
        fn = opt(fn)
    return fn


@click.command("run")
@click.argument("image", required=False)
@click.option(
    "-f", "--clusterfile", type=click.Path(exists=True, dir_okay=False), help="Clusterfile to run."
)
@click.option(
    "-m", "--masters", multiple=True, metavar="IPS", help="Master IPs: a,b or a-b ranges."
)
@click.option("-n", "--nodes", multiple=True, metavar="IPS", help="Node IPs: a,b or a-b ranges.")
@click.option("-u", "--user", help="SSH user (default root; others use sudo).")
@click.option("-p", "--passwd", help="SSH password (also the sudo password); visible to `ps`, "
              "prefer --passwd-stdin, --passwd-file or $KBUILD_SSH_PASSWORD.")
@click.option("--passwd-stdin", is_flag=True, help="Read the SSH password from stdin.")
@click.option("--passwd-file", type=click.Path(dir_okay=False),
              help="Read the SSH password from the first line of a file.")
@click.option("--port", type=click.IntRange(1, 65535), help="SSH port (default 22).")
@click.option("--pk", type=click.Path(dir_okay=False), help="SSH private key file.")
@click.option("--pk-passwd", help="Passphrase of the private key.")
@click.option("-e", "--env", "env", multiple=True, metavar="K=V", help="Cluster env (repeatable).")
@click.option(
    "--cmds", multiple=True, help="Commands to launch instead of the image's (repeatable)."
)
@click.option("--apps", multiple=True, help="Apps to launch instead of the image's (repeatable).")
@click.option("--cluster-name", help=f"Cluster name (default {cfmod.DEFAULT_CLUSTER_NAME}).")
@click.option(
    "--data-root", help=f"Where hosts keep layers and rootfs (default {cfmod.DEFAULT_DATA_ROOT})."
)
@click.option("--provider", type=click.Choice(sorted(PROVIDERS)),
              help="Make local hosts (podman containers); --masters/--nodes are then counts. "
              "The default when no host is given.")
@click.option("--dry-run", is_flag=True, help="Check the hosts (read-only) and print the plan.")
@_with_common
@click.pass_context
def run_command(
    ctx: click.Context,
    image: str | None,
    clusterfile: str | None,
    masters: tuple[str, ...],
    nodes: tuple[str, ...],
    user: str | None,
    passwd: str | None,
    passwd_stdin: bool,
    passwd_file: str | None,
    port: int | None,
    pk: str | None,
    pk_passwd: str | None,
    env: tuple[str, ...],
    cmds: tuple[str, ...],
    apps: tuple[str, ...],
    cluster_name: str | None,
    data_root: str | None,
    provider: str | None,
    dry_run: bool,
    accept_changed_host_key: bool,
    progress_mode: str,
) -> None:
    """Run a cluster image on hosts: IMAGE --masters … [--nodes …], or -f Clusterfile.

    With no hosts (or --provider podman, where --masters/--nodes are counts)
    the hosts are local podman containers on a network of their own.
    """
    if clusterfile and (image or masters or nodes or provider):
        raise UsageError("give either -f Clusterfile or IMAGE with its hosts, not both")
    if not clusterfile and not image:
        raise UsageError("give an IMAGE (with --masters) or -f Clusterfile")
    if image and (provider or not masters):
        provider = provider or "podman"
        counts = (_count(masters, "--masters", 1), _count(nodes, "--nodes", 0))
        if dry_run and not StateDir(cluster_name or cfmod.DEFAULT_CLUSTER_NAME).exists():
            raise UsageError("--dry-run needs hosts; podman hosts are made by a real run")
    display = renderer(progress_mode)
    opts = _options(ctx, display, accept_changed_host_key)
    shared: dict[str, Any] = {"env": env, "cmds": cmds, "apps": apps, "data_root": data_root}
    try:
        if clusterfile:
            cf = cfmod.load(clusterfile)
        elif provider:
            cf = lifecycle.provider_clusterfile(
                provider, image or "", opts, name=cluster_name or cfmod.DEFAULT_CLUSTER_NAME,
                masters=counts[0], nodes=counts[1], **shared)  # fmt: skip
        else:
            cf = cfmod.from_flags(
                image or "", masters=_ips(masters, "masters"), nodes=_ips(nodes, "nodes"),
                user=user, passwd=ssh_password(passwd, passwd_stdin, passwd_file), port=port,
                pk=pk, pk_passwd=pk_passwd, cluster_name=cluster_name, **shared)  # fmt: skip
        plan = lifecycle.run_cluster(cf, opts, dry_run=dry_run, provider=provider or "")
    finally:
        display.close()
    if dry_run:
        _print_plan(plan)
    else:
        click.echo(f"Cluster {cf.cluster.name} is up on {len(cf.cluster.all_hosts())} hosts.")


@click.command("join")
@click.option("-m", "--masters", multiple=True, metavar="IPS", help="Masters to add.")
@click.option("-n", "--nodes", multiple=True, metavar="IPS", help="Nodes to add.")
@click.option("--cluster-name", help="The cluster (default: the only one recorded).")
@click.option("--dry-run", is_flag=True, help="Check the new hosts and print the plan.")
@_with_common
@click.pass_context
def join_command(
    ctx: click.Context,
    masters: tuple[str, ...],
    nodes: tuple[str, ...],
    cluster_name: str | None,
    dry_run: bool,
    accept_changed_host_key: bool,
    progress_mode: str,
) -> None:
    """Add hosts to a running cluster."""
    if not masters and not nodes:
        raise UsageError("give hosts to join with --masters and/or --nodes")
    name = _cluster_name(cluster_name)
    display = renderer(progress_mode)
    try:
        plan = lifecycle.join_hosts(
            name,
            _options(ctx, display, accept_changed_host_key),
            masters=_ips(masters, "masters"),
            nodes=_ips(nodes, "nodes"),
            dry_run=dry_run,
        )
    finally:
        display.close()
    if dry_run:
        _print_plan(plan)
    else:
        click.echo(f"Joined cluster {name}.")


@click.command("delete")
@click.option("-m", "--masters", multiple=True, metavar="IPS", help="Masters to remove.")
@click.option("-n", "--nodes", multiple=True, metavar="IPS", help="Nodes to remove.")
@click.option("-a", "--all", "all_", is_flag=True, help="Remove the whole cluster from every host.")
@click.option(
    "-f",
    "--clusterfile",
    type=click.Path(exists=True, dir_okay=False),
    help="With --all: the Clusterfile to clean up (also when nothing is recorded).",
)
@click.option("--cluster-name", help="The cluster (default: the only one recorded).")
@click.option("--force", is_flag=True, help="Skip hosts that cannot be reached and forget them.")
@_with_common
@click.pass_context
def delete_command(
    ctx: click.Context,
    masters: tuple[str, ...],
    nodes: tuple[str, ...],
    all_: bool,
    clusterfile: str | None,
    cluster_name: str | None,
    force: bool,
    accept_changed_host_key: bool,
    progress_mode: str,
) -> None:
    """Remove hosts from a cluster, or the whole cluster with --all."""
    if all_ == bool(masters or nodes):
        raise UsageError("give either --all or the hosts to remove (--masters/--nodes)")
    if clusterfile and not all_:
        raise UsageError("-f goes with --all")
    display = renderer(progress_mode)
    opts = _options(ctx, display, accept_changed_host_key)
    try:
        if all_:
            cf = cfmod.load(clusterfile) if clusterfile else None
            name = cf.cluster.name if cf else _cluster_name(cluster_name)
            lifecycle.delete_cluster(cf, opts, name=name, force=force)
        else:
            name = _cluster_name(cluster_name)
            lifecycle.delete_hosts(
                name, _ips(masters, "masters") + _ips(nodes, "nodes"), opts, force=force
            )
    finally:
        display.close()
    click.echo(f"Deleted {'cluster ' + name if all_ else 'hosts from cluster ' + name}.")


@click.command("apply")
@click.option(
    "-f",
    "--clusterfile",
    required=True,
    type=click.Path(exists=True, dir_okay=False),
    help="The desired Clusterfile.",
)
@click.option("--dry-run", is_flag=True, help="Check the hosts and print the plan.")
@click.option("--force", is_flag=True, help="Forget removed hosts that cannot be reached.")
@_with_common
@click.pass_context
def apply_command(
    ctx: click.Context,
    clusterfile: str,
    dry_run: bool,
    force: bool,
    accept_changed_host_key: bool,
    progress_mode: str,
) -> None:
    """Make the cluster match a Clusterfile: join added hosts, delete removed ones."""
    cf = cfmod.load(clusterfile)
    display = renderer(progress_mode)
    try:
        plan = lifecycle.apply_clusterfile(
            cf, _options(ctx, display, accept_changed_host_key), dry_run=dry_run, force=force
        )
    finally:
        display.close()
    if dry_run:
        _print_plan(plan)
    else:
        click.echo(f"Cluster {cf.cluster.name} matches {clusterfile}.")


@click.command("exec", context_settings={"ignore_unknown_options": True})
@click.option(
    "--roles",
    "-r",
    multiple=True,
    type=click.Choice(list(cfmod.ROLES)),
    help="Only hosts with this role (repeatable).",
)
@click.option("--cluster-name", help="The cluster (default: the only one recorded).")
@click.option("--accept-changed-host-key", is_flag=True, help="Trust a changed host key.")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.pass_context
def exec_command(
    ctx: click.Context,
    roles: tuple[str, ...],
    cluster_name: str | None,
    accept_changed_host_key: bool,
    command: tuple[str, ...],
) -> None:
    """Run a shell command on the cluster's hosts (as root): kbuild exec -- CMD."""
    name = _cluster_name(cluster_name)
    lock = threading.Lock()

    def on_event(event: Event) -> None:
        if isinstance(event, HostOutput):
            with lock:
                click.echo(f"[{event.host}] {event.line}", err=event.stream == "stderr")

    opts = lifecycle.Options(
        store=Store(store_root(ctx)),
        progress=on_event,
        accept_changed_host_key=accept_changed_host_key,
        drivers=DRIVERS,
        providers=PROVIDERS,
    )
    results = lifecycle.exec_on_hosts(name, shell_command(command), opts, roles=roles)
    failed = {ip: r.exit_status for ip, r in results.items() if r.exit_status != 0}
    for ip, status in sorted(failed.items()):
        click.echo(f"[{ip}] exit status {status}", err=True)
    if failed:
        raise ClusterError(f"the command failed on {len(failed)} of {len(results)} hosts")


commands: list[click.Command] = [
    run_command,
    join_command,
    delete_command,
    apply_command,
    exec_command,
]

__all__ = ["commands"]
