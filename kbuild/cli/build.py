"""kbuild CLI: ``build``, ``inspect`` and ``history``."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from kbuild.builder import (
    BuildFinished,
    BuildOptions,
    BytesDone,
    Event,
    StepDone,
    StepLog,
    StepStarted,
    build,
)
from kbuild.builder.inspect import image_history, inspect_image
from kbuild.errors import UsageError
from kbuild.layerstore import Reference, Store

from .common import store_root

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

BAR_MIN_BYTES = 32 << 20


def _pairs(values: tuple[str, ...], what: str, *, from_env: bool = False) -> dict[str, str]:
    out: dict[str, str] = {}
    for v in values:
        key, sep, value = v.partition("=")
        if not key:
            raise UsageError(f"bad {what} {v!r} (want KEY=VALUE)")
        if not sep:
            if not from_env:
                raise UsageError(f"bad {what} {v!r} (want KEY=VALUE)")
            if key not in os.environ:
                continue
            value = os.environ[key]
        out[key] = value
    return out


def _human(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


class PlainRenderer:
    """One line per event, for logs (``--progress plain``)."""

    def __init__(self) -> None:
        self.out = sys.stderr
        self._last_pct: dict[str, int] = {}

    def __call__(self, event: Event) -> None:
        if isinstance(event, StepStarted):
            print(f"[{event.step_id}] {event.text}", file=self.out, flush=True)
        elif isinstance(event, StepDone):
            state = "CACHED" if event.cached else "DONE"
            extra = f" {_human(event.layer_size)}" if event.layer_digest else ""
            print(f"[{event.step_id}] {state} {event.seconds:.2f}s{extra}", file=self.out,
                  flush=True)
        elif isinstance(event, StepLog):
            print(f"[{event.step_id}] | {event.line}", file=self.out, flush=True)
        elif isinstance(event, BytesDone) and event.total >= BAR_MIN_BYTES:
            pct = min(100, event.done * 100 // event.total) // 25 * 25
            if pct != self._last_pct.get(event.what):
                self._last_pct[event.what] = pct
                print(f"[{event.what}] packed {_human(event.done)} of {_human(event.total)}",
                      file=self.out, flush=True)

    def close(self) -> None:
        """Nothing to tear down."""


class RichRenderer:
    """Coloured step lines and a progress bar for large layers."""

    def __init__(self) -> None:
        from rich.console import Console

        self.console = Console(stderr=True)
        self.bars: Progress | None = None
        self.tasks: dict[str, TaskID] = {}

    def __call__(self, event: Event) -> None:
        c = self.console
        if isinstance(event, StepStarted):
            c.print(f"[bold blue]\\[{event.step_id}][/] {event.text}", highlight=False,
                    markup=True, soft_wrap=True)
        elif isinstance(event, StepDone):
            self._drop_bar(event.step_id)
            state = "[yellow]CACHED[/]" if event.cached else "[green]DONE[/]"
            extra = f" {_human(event.layer_size)}" if event.layer_digest else ""
            c.print(f"[bold blue]\\[{event.step_id}][/] {state} {event.seconds:.2f}s{extra}",
                    highlight=False)
        elif isinstance(event, StepLog):
            c.print(f"[dim]\\[{event.step_id}] |[/] {event.line}", highlight=False,
                    markup=True, soft_wrap=True)
        elif isinstance(event, BytesDone) and event.total >= BAR_MIN_BYTES:
            if self.bars is None:
                from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn

                self.bars = Progress(TextColumn("{task.description}"), BarColumn(),
                                     DownloadColumn(), console=c, transient=True)
                self.bars.start()
            if event.what not in self.tasks:
                label = event.what if " pull " in event.what else f"{event.what} packing"
                self.tasks[event.what] = self.bars.add_task(label, total=event.total)
            self.bars.update(self.tasks[event.what], completed=min(event.done, event.total))

    def _drop_bar(self, step_id: str) -> None:
        if self.bars is None:
            return
        for what in [w for w in self.tasks if w == step_id or w.startswith(step_id + " ")]:
            self.bars.remove_task(self.tasks.pop(what))

    def close(self) -> None:
        """Stop the live display."""
        if self.bars is not None:
            self.bars.stop()
            self.bars = None


def _pull_function() -> Any:
    """``kbuild.registry.pull_image``, imported only when a FROM needs it (it is slow to load)."""
    import importlib.util

    if importlib.util.find_spec("kbuild.registry") is None:
        return None

    def pull(store: Store, ref: str, *, platform: str | None = None,
             progress: Any = None) -> Any:
        from kbuild.registry import pull_image

        return pull_image(store, ref, platform=platform, progress=progress)

    return pull


def _fetch_function(tls_verify: bool) -> Any:
    """``kbuild.registry.fetch_image`` for the images a cluster image carries (as ``pull``)."""
    import importlib.util

    if importlib.util.find_spec("kbuild.registry") is None:
        return None

    def fetch(store: Store, ref: str, *, platforms: list[Any], quick: bool = False) -> Any:
        from kbuild.registry import ClientOptions, fetch_image

        options = ClientOptions(tls_verify=tls_verify, insecure=not tls_verify)
        return fetch_image(store, ref, platforms=platforms, quick=quick, options=options)

    return fetch


@click.command("build")
@click.option("-f", "--file", "kubefile", type=click.Path(dir_okay=False),
              help="Kubefile to build (default: CONTEXT/Kubefile).")
@click.option("-t", "--tag", "tags", multiple=True, help="Name the image NAME[:TAG] (repeatable).")
@click.option("--build-arg", "build_args", multiple=True, metavar="K=V",
              help="Set a build ARG (repeatable).")
@click.option("--no-cache", is_flag=True, help="Do not reuse cached layers.")
@click.option("--platform", help="Target os/arch (default: this machine); several, "
              "comma-separated, build one image each under an OCI image index.")
@click.option("--compression", type=click.Choice(["zstd", "gzip"]), default="zstd",
              show_default=True, help="Layer compression.")
@click.option("--level", type=click.IntRange(1, 22), default=3, show_default=True,
              help="Compression level.")
@click.option("--label", "labels", multiple=True, metavar="K=V", help="Add a label (repeatable).")
@click.option("--target", help="Build this stage instead of the last one.")
@click.option("--image-list", "image_lists", multiple=True,
              type=click.Path(exists=True, dir_okay=False),
              help="File of container images (one per line) to carry besides those the "
                   "image's files name (repeatable).")
@click.option("--ignored-image-list", "ignored_lists", multiple=True,
              type=click.Path(exists=True, dir_okay=False),
              help="File of images (or globs) not to carry (repeatable).")
@click.option("--exclude-image", "exclude", multiple=True, metavar="REF",
              help="An image (or glob) not to carry (repeatable).")
@click.option("--helm", "helm", type=click.Path(dir_okay=False),
              help="helm binary that renders charts (default: $KBUILD_HELM, else PATH).")
@click.option("--tls-verify", type=click.BOOL, default=True, show_default=True,
              help="Verify registry certificates when fetching carried images.")
@click.option("--progress", "progress_mode", type=click.Choice(["auto", "plain"]),
              default="auto", show_default=True, help="Progress output style.")
@click.argument("context", type=click.Path(exists=True, file_okay=False), default=".")
@click.pass_context
def build_command(ctx: click.Context, kubefile: str | None, tags: tuple[str, ...],
                  build_args: tuple[str, ...], no_cache: bool, platform: str | None,
                  compression: str, level: int, labels: tuple[str, ...], target: str | None,
                  image_lists: tuple[str, ...], ignored_lists: tuple[str, ...],
                  exclude: tuple[str, ...], helm: str | None, tls_verify: bool,
                  progress_mode: str, context: str) -> None:
    """Build an image from a Kubefile and the files of CONTEXT.

    A cluster image also carries, in registry/, every container image its
    manifests, charts, imageList files and IMAGE lines name.
    """
    if compression == "gzip" and level > 9:
        raise UsageError("gzip levels go from 1 to 9")
    options = BuildOptions(
        context=Path(context),
        kubefile=Path(kubefile) if kubefile else None,
        tags=list(tags),
        build_args=_pairs(build_args, "--build-arg", from_env=True),
        no_cache=no_cache,
        platform=platform,
        compression=compression,
        level=level,
        labels=_pairs(labels, "--label"),
        target=target,
        image_lists=[Path(p) for p in image_lists],
        ignored_image_lists=[Path(p) for p in ignored_lists],
        exclude_images=list(exclude),
        helm=helm,
    )
    plain = progress_mode == "plain" or not sys.stderr.isatty()
    renderer: PlainRenderer | RichRenderer = PlainRenderer() if plain else RichRenderer()
    finished: list[BuildFinished] = []

    def on_event(event: Event) -> None:
        if isinstance(event, BuildFinished):
            finished.append(event)
        renderer(event)

    store = Store(store_root(ctx))
    started = time.monotonic()
    try:
        result = build(store, options, progress=on_event, pull=_pull_function(),
                       fetch=_fetch_function(tls_verify))
    finally:
        renderer.close()
    names = ", ".join(Reference.parse(t).familiar for t in result.tags) or "(untagged)"
    click.echo(
        f"Built {names}\n  image  {result.manifest.digest}\n"
        f"  size   {_human(result.size)} in {result.layers} layers\n"
        f"  time   {time.monotonic() - started:.2f}s"
    )


@click.command("inspect")
@click.argument("image")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
              show_default=True, help="Output format.")
@click.option("--platform", help="OS/ARCH[/VARIANT] of a multi-platform image to show "
                                 "(default: this machine's).")
@click.pass_context
def inspect_command(ctx: click.Context, image: str, fmt: str, platform: str | None) -> None:
    """Show an image's config, labels, apps and every layer (of an index: its
    platforms, then one platform's image)."""
    data = inspect_image(Store(store_root(ctx)), image, platform)
    if fmt == "json":
        click.echo(json.dumps(data, indent=2, sort_keys=True))
        return
    lines = [f"{image}  {data['digest']}"]
    if data["index"]:
        lines[0] = f"{image}  index {data['index']}"
        lines += [f"  {e['platform']}  {e['digest']}" for e in data["platforms"]]
        lines.append(f"showing {data['digest']}")
    lines += [
             f"platform {data['os']}/{data['architecture']}  created {data['created']}  "
             f"size {_human(data['size'])}"]
    cfg = data["config"]
    for key in ("Env", "Entrypoint", "Cmd", "WorkingDir", "User", "ExposedPorts", "Volumes",
                "StopSignal"):
        if cfg.get(key):
            lines.append(f"{key}: {json.dumps(cfg[key])}")
    if data["labels"]:
        lines.append("Labels:")
        lines += [f"  {k}={v}" for k, v in sorted(data["labels"].items())]
    cluster = data["cluster"]
    if cluster:
        lines.append("Cluster image:")
        for key in ("launch", "cmds", "cmd", "cni", "csi", "kubeVersion"):
            if cluster.get(key):
                lines.append(f"  {key}: {json.dumps(cluster[key])}")
        for app in cluster["apps"]:
            lines.append(f"  app {app['name']} ({app['kind']}, {app['type']}) at {app['path']}: "
                         f"{json.dumps(app['cmds'])}")
        lines += _carried_lines(cluster.get("images") or [])
    lines.append("Layers:")
    for n, layer in enumerate(data["layers"], start=1):
        lines.append(
            f"  {n:>2} {layer['digest']}  diffID {layer['diffID']}\n"
            f"     {_human(layer['size'])} ({_human(layer['uncompressedSize'])} uncompressed)  "
            f"{layer['mediaType']}\n     {layer['createdBy'] or ''}")
    click.echo("\n".join(lines))


def _carried_lines(images: list[dict[str, Any]]) -> list[str]:
    """The ``Images`` section of ``kbuild inspect``: one image, then where it came from."""
    if not images:
        return []
    total = sum(int(i.get("size") or 0) for i in images)
    lines = [f"Images in registry/ ({len(images)}, {_human(total)}):"]
    for image in images:
        served = image["repository"] + (f":{image['tag']}" if image.get("tag") else "")
        lines.append(f"  {image['name']}  {image['digest']}  {_human(int(image['size']))}  "
                     f"{','.join(image['platforms'])}  (served as {served})")
        for source in image.get("sources") or []:
            where = f"{source['file']}:{source['line']}" if source.get("line") else source["file"]
            extra = ", ".join(x for x in (f"app {source['app']}" if source.get("app") else "",
                                          source.get("detail") or "") if x)
            lines.append(f"      from {where}" + (f" ({extra})" if extra else ""))
    return lines


@click.command("history")
@click.argument("image")
@click.pass_context
def history_command(ctx: click.Context, image: str) -> None:
    """Show the instructions that made an image, newest first."""
    rows = image_history(Store(store_root(ctx)), image)
    click.echo(f"{'LAYER':<12}  {'CREATED':<20}  {'SIZE':>9}  CREATED BY")
    for row in rows:
        layer = row["layer"][7:19] if row["layer"] else "-"
        size = _human(row["size"]) if row["layer"] else "0 B"
        click.echo(f"{layer:<12}  {row['created'] or '':<20}  {size:>9}  {row['createdBy']}")


commands: list[click.Command] = [build_command, inspect_command, history_command]
