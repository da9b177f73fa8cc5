"""kbuild CLI: day-2 commands of a cluster's driver (backup, restore, cert)."""

from __future__ import annotations

import json
import os
from typing import Any

import click

from kbuild.errors import UsageError
from kbuild.runtime import clusterfile as cfmod
from kbuild.runtime import lifecycle
from kbuild.runtime.state import StateDir

from .cluster import _cluster_name, _options, _with_common, driver_flow
from .common import read_secret
from .progress import renderer

PASSPHRASE_ENV = "KBUILD_BACKUP_PASSPHRASE"

_passphrase_options = [
    click.option("--passphrase-stdin", is_flag=True,
                 help="Read the backup's passphrase from stdin."),
    click.option("--passphrase-file", type=click.Path(dir_okay=False),
                 help=f"Read the passphrase from a file's first line (or ${PASSPHRASE_ENV})."),
]  # fmt: skip


def _with_passphrase(fn):  # type: ignore[no-untyped-def]
    for opt in reversed(_passphrase_options):
        fn = opt(fn)
    return fn


def backup_passphrase(stdin: bool, file: str | None) -> str | None:
    """The passphrase from ``--passphrase-stdin``, ``--passphrase-file`` or
    ``$KBUILD_BACKUP_PASSPHRASE`` (never from argv: ``ps`` would show it)."""
    if stdin and file is not None:
        raise UsageError("give the passphrase one way: --passphrase-stdin or --passphrase-file")
    value = read_secret(stdin, file, "--passphrase-file")
    if value is None:
        return os.environ.get(PASSPHRASE_ENV) or None
    if not value:
        raise UsageError("the passphrase is empty")
    return value


@click.command("backup")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="The archive to write (mode 0600).")
@click.option("--from-host", is_flag=True,
              help="Take the newest scheduled snapshot of the lead master (EtcdSnapshotSchedule) "
              "instead of a new one.")
@click.option("--cluster-name", help="The cluster (default: the only one recorded).")
@_with_passphrase
@_with_common
@click.pass_context
def backup_command(
    ctx: click.Context, output: str, from_host: bool, cluster_name: str | None,
    passphrase_stdin: bool, passphrase_file: str | None, accept_changed_host_key: bool,
    progress_mode: str,
) -> None:  # fmt: skip
    """Back up the cluster: etcd snapshot, PKI, kubeadm configuration, Clusterfile
    and kbuild's state, in one archive here (sealed when a passphrase is given)."""
    params: dict[str, object] = {
        "output": os.path.abspath(output),
        "passphrase": backup_passphrase(passphrase_stdin, passphrase_file) or "",
        "from_host": from_host,
    }
    res = driver_flow(ctx, cluster_name, "backup", params, accept_changed_host_key, progress_mode)
    sealed = " (sealed)" if params["passphrase"] else ""
    click.echo(f"Backup written to {res.results['archive']}{sealed}.")


@click.command("restore")
@click.argument("backup", type=click.Path(exists=True, dir_okay=False))
@click.option("-f", "--clusterfile", type=click.Path(exists=True, dir_okay=False),
              help="Bring the cluster back on fresh hosts (after delete --all) from this "
              "Clusterfile: its PKI, kbuild's CA and etcd's data from BACKUP.")
@click.option("--cluster-name", help="The cluster (default: the only one recorded).")
@_with_passphrase
@_with_common
@click.pass_context
def restore_command(
    ctx: click.Context, backup: str, clusterfile: str | None, cluster_name: str | None,
    passphrase_stdin: bool, passphrase_file: str | None, accept_changed_host_key: bool,
    progress_mode: str,
) -> None:  # fmt: skip
    """Restore the cluster's etcd from BACKUP on its running hosts (every master;
    the control plane restarts), or with -f onto fresh hosts at the same
    addresses. A backup of another cluster is refused before any change."""
    params: dict[str, object] = {
        "file": os.path.abspath(backup),
        "passphrase": backup_passphrase(passphrase_stdin, passphrase_file) or "",
    }
    if clusterfile is None:
        driver_flow(ctx, cluster_name, "restore", params, accept_changed_host_key, progress_mode)
        click.echo(f"Restored cluster {_cluster_name(cluster_name)} from {backup}.")
        return
    cf = cfmod.load(clusterfile)
    if cluster_name and cluster_name != cf.cluster.name:
        raise UsageError(f"{clusterfile} is cluster {cf.cluster.name}, not {cluster_name}")
    if StateDir(cf.cluster.name).exists():
        raise UsageError(
            f"cluster {cf.cluster.name} is recorded here",
            hint="restore onto its running hosts without -f, or `kbuild delete --all` first",
        )
    display = renderer(progress_mode)
    try:
        opts = _options(ctx, display, accept_changed_host_key)
        # a backup that cannot be read, or of another cluster, changes nothing
        lifecycle.run_flow(cf.cluster.name, "restore-verify", opts, params=params, cf=cf)
        lifecycle.run_cluster(cf, opts, params={**params, "fresh": True})
    finally:
        display.close()
    click.echo(f"Cluster {cf.cluster.name} restored from {backup} on "
               f"{len(cf.cluster.all_hosts())} hosts.")  # fmt: skip


@click.group("cert", invoke_without_command=True)
@click.option("--alt-names", metavar="A,B",
              help="Add names/IPs to the API server certificate on every master.")
@click.option("--cluster-name", help="The cluster (default: the only one recorded).")
@_with_common
@click.pass_context
def cert_group(
    ctx: click.Context, alt_names: str | None, cluster_name: str | None,
    accept_changed_host_key: bool, progress_mode: str,
) -> None:  # fmt: skip
    """The cluster's certificates: check, renew, or --alt-names a,b."""
    if ctx.invoked_subcommand is not None:
        if alt_names:
            raise UsageError("--alt-names goes without a subcommand")
        return
    if not alt_names:
        click.echo(ctx.get_help())
        return
    names = [n.strip() for n in alt_names.split(",") if n.strip()]
    if not names:
        raise UsageError("--alt-names: give names or IPs, a,b")
    params: dict[str, object] = {"alt_names": names}
    res = driver_flow(ctx, cluster_name, "cert-alt-names", params, accept_changed_host_key,
                progress_mode)  # fmt: skip
    added: Any = res.results.get("added") or []
    click.echo(f"API server certificates now name {', '.join(names)} "
               f"({', '.join(added) or 'none'} new).")  # fmt: skip


@cert_group.command("check")
@click.option("--cluster-name", help="The cluster (default: the only one recorded).")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table",
              show_default=True)  # fmt: skip
@_with_common
@click.pass_context
def cert_check_command(
    ctx: click.Context, cluster_name: str | None, fmt: str, accept_changed_host_key: bool,
    progress_mode: str,
) -> None:  # fmt: skip
    """Every certificate on every host (and kbuild's CA here) with its expiry."""
    res = driver_flow(ctx, cluster_name, "cert-check", {}, accept_changed_host_key, progress_mode)
    found: Any = res.results.get("certificates") or []
    certs: list[Any] = sorted(found, key=lambda c: (c.host, c.path, c.subject))
    if fmt == "json":
        click.echo(json.dumps([c.to_json() for c in certs], indent=2))
        return
    click.echo(f"{'HOST':<16} {'EXPIRES':<20} {'DAYS':>5}  {'PATH':<50} SUBJECT")
    for c in certs:
        when = c.not_after.strftime("%Y-%m-%d %H:%M")
        click.echo(f"{c.host:<16} {when:<20} {c.days_left:>5}  {c.path:<50} {c.subject}")


@cert_group.command("renew")
@click.option("--cluster-name", help="The cluster (default: the only one recorded).")
@_with_common
@click.pass_context
def cert_renew_command(
    ctx: click.Context, cluster_name: str | None, accept_changed_host_key: bool,
    progress_mode: str,
) -> None:  # fmt: skip
    """Renew kubeadm's certificates master by master (control plane restarted,
    API server waited for) and fetch a fresh admin kubeconfig."""
    driver_flow(ctx, cluster_name, "cert-renew", {}, accept_changed_host_key, progress_mode)
    click.echo(f"Certificates of cluster {_cluster_name(cluster_name)} renewed.")


commands: list[click.Command] = [backup_command, restore_command, cert_group]

__all__ = ["backup_passphrase", "commands"]
