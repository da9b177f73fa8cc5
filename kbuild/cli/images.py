"""kbuild CLI: ``images``, ``tag``, ``rmi``, ``save``, ``load``, ``prune``, ``fsck``."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import click

from kbuild.errors import ImageNotFound, StoreError, UsageError
from kbuild.layerstore import (
    Descriptor,
    Reference,
    Store,
    load_archive,
    save_archive,
)

from .common import store_root

commands: list[click.Command] = []


def _store(ctx: click.Context) -> Store:
    return Store(store_root(ctx))


def human_size(n: float) -> str:
    """Docker-style decimal size (``12.3MB``)."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.3g}{unit}"
        n /= 1000
    return f"{n:.3g}TB"


def human_ago(created: str | None, now: dt.datetime | None = None) -> str:
    """``3 minutes ago`` for an RFC 3339 time (``N/A`` when unknown)."""
    if not created:
        return "N/A"
    try:
        when = dt.datetime.fromisoformat(created.replace("Z", "+00:00"))
    except ValueError:
        return "N/A"
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    seconds = ((now or dt.datetime.now(dt.UTC)) - when).total_seconds()
    if seconds < 2:
        return "Less than a second ago" if seconds >= 0 else "In the future"
    for size, unit in ((365 * 86400, "year"), (30 * 86400, "month"), (7 * 86400, "week"),
                       (86400, "day"), (3600, "hour"), (60, "minute"), (1, "second")):
        if seconds >= size:
            n = int(seconds // size)
            return f"{n} {unit}{'s' if n != 1 else ''} ago"
    return "N/A"


def _image_row(store: Store, ref: Reference | None, desc: Descriptor) -> dict[str, Any]:
    try:
        manifest = store.read_manifest(desc)
    except StoreError:
        manifest = {}  # shown with what is known; `kbuild fsck` names the problem
    created: str | None = None
    size = desc.size
    if "layers" in manifest:
        size += sum(int(layer.get("size", 0)) for layer in manifest["layers"])
        size += int(manifest.get("config", {}).get("size", 0))
        try:
            created = store.read_config(manifest).get("created")
        except StoreError:  # a missing config shows as N/A; fsck reports it
            created = None
    return {
        "repository": ref.familiar_name if ref else "<none>",
        "tag": (ref.tag or "<none>") if ref else "<none>",
        "name": str(ref) if ref else None,
        "id": desc.digest[7:19],
        "digest": desc.digest,
        "media_type": desc.media_type,
        "created": created,
        "size": size,
    }


@click.command("images")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table",
              show_default=True, help="Output format.")
@click.option("-q", "--quiet", is_flag=True, help="Only show image IDs.")
@click.pass_context
def images_cmd(ctx: click.Context, fmt: str, quiet: bool) -> None:
    """List the images in the local store."""
    store = _store(ctx)
    rows = [_image_row(store, ref, desc) for ref, desc in store.entries()]
    rows.sort(key=lambda r: (r["repository"] == "<none>", r["repository"], r["tag"]))
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2))
        return
    if quiet:
        for r in rows:
            click.echo(r["id"])
        return
    table = [["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"]]
    table += [[r["repository"], r["tag"], r["id"], human_ago(r["created"]),
               human_size(r["size"])] for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(5)]
    for row in table:
        click.echo("   ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def _named(store: Store, text: str) -> Reference | None:
    """The reference if ``text`` is a name present in the store."""
    try:
        ref = Reference.parse(text)
    except UsageError:
        return None
    return ref if any(str(r) == str(ref) for r, _ in store.entries() if r) else None


def _one_id(store: Store, text: str) -> str | None:
    """The one digest an ID prefix (4+ hex digits) matches; refuses ambiguous prefixes."""
    matches = store.match_id(text)
    if len(matches) > 1:
        raise UsageError(
            f"image ID prefix {text!r} is ambiguous: it matches "
            + ", ".join(m[7:19] for m in matches),
            hint="give more digits of the ID",
        )
    return matches[0] if matches else None


def _resolve_cli(store: Store, text: str) -> Descriptor:
    """Resolve a name, else an ID prefix of 4+ hex digits, else a digest reference."""
    if _named(store, text) is None:
        digest = _one_id(store, text)
        if digest is not None:
            return store.resolve(digest)
    return store.resolve(text)


@click.command("tag")
@click.argument("source")
@click.argument("target")
@click.pass_context
def tag_cmd(ctx: click.Context, source: str, target: str) -> None:
    """Give the image SOURCE (name or ID) the name TARGET."""
    store = _store(ctx)
    desc = _resolve_cli(store, source)
    store.tag(Reference.parse(target), desc)


@click.command("rmi")
@click.argument("images", nargs=-1, required=True)
@click.option("-f", "--force", is_flag=True,
              help="Remove every name of an image given by ID.")
@click.pass_context
def rmi_cmd(ctx: click.Context, images: tuple[str, ...], force: bool) -> None:
    """Remove images by name or ID prefix (blobs are freed by `kbuild prune`)."""
    store = _store(ctx)
    for text in images:
        ref = _named(store, text)
        if ref is not None:
            store.untag(ref)
            click.echo(f"Untagged: {ref.familiar}")
            continue
        digest = _one_id(store, text)
        if digest is None:
            raise ImageNotFound(f"no image {text!r} in the local store",
                                hint="see `kbuild images`")
        names = [r for r, d in store.entries() if d.digest == digest and r is not None]
        if len(names) > 1 and not force:
            raise UsageError(
                f"image {digest[7:19]} has several names ("
                + ", ".join(r.familiar for r in names) + "); remove them by name or use -f",
            )
        for removed in store.remove_digest(digest):
            if removed is not None:
                click.echo(f"Untagged: {removed.familiar}")
        click.echo(f"Deleted: {digest}")


@click.command("save")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="Archive file to write.")
@click.argument("images", nargs=-1, required=True)
@click.pass_context
def save_cmd(ctx: click.Context, output: str, images: tuple[str, ...]) -> None:
    """Save images to an OCI archive (a tar of an OCI image layout)."""
    store = _store(ctx)
    resolved = []
    for text in images:
        desc = _resolve_cli(store, text)
        resolved.append(text if _named(store, text) or "@" in text else desc.digest)
    save_archive(store, resolved, output)
    click.echo(f"Saved {len(images)} image(s) to {output}", err=True)


@click.command("load")
@click.option("-i", "--input", "input_", required=True,
              type=click.Path(dir_okay=False), help="OCI archive to read.")
@click.pass_context
def load_cmd(ctx: click.Context, input_: str) -> None:
    """Load images from an OCI archive (as written by `kbuild save` or skopeo)."""
    store = _store(ctx)
    result = load_archive(store, input_)
    for warning in result.warnings:
        click.echo(f"Warning: {warning}", err=True)
    for ref, desc in result.images:
        click.echo(f"Loaded image: {ref.familiar}" if ref else f"Loaded image ID: {desc.digest}")


@click.command("prune")
@click.option("-a", "--all", "all_", is_flag=True, help="Also drop the build cache records.")
@click.option("--grace", type=float, default=60.0, show_default=True,
              help="Keep unreferenced blobs younger than this many seconds.")
@click.pass_context
def prune_cmd(ctx: click.Context, all_: bool, grace: float) -> None:
    """Remove blobs no image (or build cache record) uses, and stale temp files."""
    store = _store(ctx)
    report = store.gc(records=all_, blob_grace=grace)
    if report.records_removed:
        click.echo(f"Deleted build cache records: {report.records_removed}")
    for digest in report.blobs_removed:
        click.echo(f"deleted: {digest}")
    if report.temp_removed:
        click.echo(f"Deleted temp files: {report.temp_removed}")
    if report.snapshots_removed:
        click.echo(f"Deleted snapshots: {report.snapshots_removed}")
    click.echo(f"Total reclaimed space: {human_size(report.bytes_freed)}")


@click.command("fsck")
@click.pass_context
def fsck_cmd(ctx: click.Context) -> None:
    """Re-hash every blob and check every image; exit 1 on any problem."""
    store = _store(ctx)
    problems = store.fsck()
    for p in problems:
        click.echo(p)
    if problems:
        raise StoreError(f"{len(problems)} problem(s) found in the store at {store.root}",
                         hint="`kbuild prune` drops unreferenced corrupt blobs; re-pull or "
                         "rebuild the images named above")
    click.echo(f"ok: {store.root}")


commands.extend([images_cmd, tag_cmd, rmi_cmd, save_cmd, load_cmd, prune_cmd, fsck_cmd])
