"""kbuild CLI: a running cluster's life (upgrade, status)."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import click

from kbuild.errors import ClusterError, KbuildError
from kbuild.layerstore import Store, carried_images
from kbuild.runtime.driver import CHECK, UPGRADE
from kbuild.runtime.drivers.kubernetes.imagecheck import ImageReport
from kbuild.runtime.state import StateDir

from .cluster import _cluster_name, _with_common, driver_flow
from .common import store_root


@click.command("upgrade")
@click.argument("image")
@click.option("--cluster-name", help="The cluster (default: the only one recorded).")
@click.option("--batch", type=click.IntRange(1), default=1, show_default=True,
              help="Nodes upgraded at a time (masters always go one by one).")
@click.option("--drain-timeout", type=click.IntRange(10), default=300, show_default=True,
              metavar="SECONDS", help="How long a node's drain may take (PodDisruptionBudgets "
              "are respected).")
@click.option("--backup", "backup_file", type=click.Path(dir_okay=False), metavar="FILE",
              help="Where the backup of etcd and the PKI taken before the first change goes "
              "(default: the cluster's state dir).")
@click.option("--no-backup", is_flag=True, help="Take no backup before the upgrade.")
@click.option("--dry-run", is_flag=True, help="Check the cluster and the image, print the plan.")
@_with_common
@click.pass_context
def upgrade_command(
    ctx: click.Context,
    image: str,
    cluster_name: str | None,
    batch: int,
    drain_timeout: int,
    backup_file: str | None,
    no_backup: bool,
    dry_run: bool,
    accept_changed_host_key: bool,
    progress_mode: str,
) -> None:
    """Upgrade a running cluster to a newer base IMAGE (one minor version at a time).

    Checks first (versions, nodes Ready, etcd healthy, the new kubeadm accepts
    the cluster), saves etcd and the PKI (kbuild backup's archive), sends only
    missing layers, then upgrades the control plane,
    the other masters one by one and the nodes in batches (cordon, drain,
    uncordon). Run it again to continue an upgrade that stopped."""
    name = _cluster_name(cluster_name)
    params: dict[str, object] = {"upgrade": True, "batch": batch, "drain_timeout": drain_timeout,
                                 "no_backup": no_backup}  # fmt: skip
    if backup_file:
        params["output"] = str(Path(backup_file).resolve())
    res = driver_flow(ctx, name, UPGRADE, params, accept_changed_host_key, progress_mode,
                      dry_run=dry_run, image=image)  # fmt: skip
    if dry_run:
        click.echo(f"Plan for the upgrade of cluster {name} to {image}:")
        for phase in res.phases:
            click.echo(f"  {phase.title:<16} {', '.join(phase.hosts)}")
    else:
        click.echo(f"Cluster {name} upgraded to {image}.")


def _names(store: Store) -> dict[str, list[str]]:
    """Manifest digest -> the local names it has."""
    out: dict[str, list[str]] = {}
    for ref, desc in store.images():
        out.setdefault(desc.digest, []).append(ref.familiar)
    return out


def cluster_status(store: Store, name: str) -> dict[str, Any]:
    """What the local record says the cluster runs: its image, version and
    status, every image it ran, each host's image and version, and the
    container images the hosts serve: the current image's and those earlier
    images carried (kept for the pods that still run them)."""
    sd = StateDir(name)
    if not sd.exists():
        raise ClusterError(f"no cluster {name} is recorded here")
    state = sd.load_state()
    names = _names(store)
    carried: set[str] = set()
    for image in dict.fromkeys([*state.images, state.manifest or state.image]):
        with contextlib.suppress(KbuildError):  # an image left the store: the record stands
            carried.update(c.name for c in carried_images(store, image))
    return {
        "name": name,
        "status": state.status,
        "driver": state.driver,
        "image": state.image,
        "manifest": state.manifest,
        "version": state.version,
        "images": [{"manifest": m, "names": names.get(m, [])} for m in state.images],
        "hosts": [
            {"ip": ip, "roles": r.roles, "manifest": r.image, "version": r.version}
            for ip, r in state.hosts.items()
        ],
        "carried": sorted(carried),
    }


@click.command("status")
@click.option("--cluster-name", help="The cluster (default: the only one recorded).")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table",
              show_default=True, help="Output format.")
@click.pass_context
def status_command(ctx: click.Context, cluster_name: str | None, fmt: str) -> None:
    """What a cluster runs: its image and version, each host's, the images it ran."""
    info = cluster_status(Store(store_root(ctx)), _cluster_name(cluster_name))
    if fmt == "json":
        click.echo(json.dumps(info, indent=2))
        return
    version = f" (version {info['version']})" if info["version"] else ""
    click.echo(f"Cluster {info['name']}: {info['status']}, image {info['image']}{version}")
    click.echo(f"  manifest {info['manifest']}")
    click.echo("Hosts:")
    for h in info["hosts"]:
        click.echo(f"  {h['ip']:<16} {','.join(h['roles']):<8} {h['version'] or '-':<10} "
                   f"{h['manifest'][:19]}")  # fmt: skip
    click.echo("Images it ran (oldest first):")
    for i in info["images"]:
        click.echo(f"  {i['manifest'][:19]}  {', '.join(i['names']) or '(not in the local store)'}")
    if info["carried"]:
        click.echo(f"Container images its hosts serve: {len(info['carried'])}")
        for c in info["carried"]:
            click.echo(f"  {c}")
@click.command("check")
@click.option("--cluster-name", help="The cluster (default: the only one recorded).")
@click.option("--timeout", type=click.IntRange(0), default=60, show_default=True,
              metavar="SECONDS", help="How long to wait for pods still being created.")
@_with_common
@click.pass_context
def check_command(
    ctx: click.Context,
    cluster_name: str | None,
    timeout: int,
    accept_changed_host_key: bool,
    progress_mode: str,
) -> None:
    """Check that a running cluster needs nothing from outside: every pod's
    image is carried by the cluster image (its embedded registry serves it)
    and no pod is stuck on an image pull. Exit status 1 when one is."""
    name = _cluster_name(cluster_name)
    res = driver_flow(ctx, name, CHECK, {"check_timeout": timeout}, accept_changed_host_key,
                      progress_mode)  # fmt: skip
    report = res.results.get("images")
    assert isinstance(report, ImageReport)
    if report.not_carried:
        raise ClusterError(
            f"{len(report.not_carried)} of {report.checked} containers run an image "
            f"cluster {name} does not carry:\n  " + "\n  ".join(map(str, report.not_carried)),
            hint="a new node could not pull them; carry them in the image (manifests, "
            "imageList, IMAGE) and run it",
        )
    click.echo(f"Cluster {name}: all {report.checked} containers run carried images.")


commands = [upgrade_command, status_command, check_command]
