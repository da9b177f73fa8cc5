"""kbuild CLI: ``login``, ``logout``, ``push``, ``pull``."""

from __future__ import annotations

import sys
import threading
import time
from typing import Any

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from kbuild.errors import UsageError
from kbuild.layerstore import Reference, Store
from kbuild.registry import (
    BlobDone,
    BlobProgress,
    BlobStarted,
    ClientOptions,
    Event,
    ManifestDone,
    Retrying,
    login,
    logout,
    pull_all,
    pull_image,
    push_image,
)

from .common import store_root

commands: list[click.Command] = []

_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 1 << 10, "m": 1 << 20, "mb": 1 << 20,
          "g": 1 << 30, "gb": 1 << 30}


def parse_size(text: str) -> int:
    """``64M`` → 67108864 (binary units; a plain number is bytes)."""
    t = text.strip().lower().removesuffix("ib")
    num = t.rstrip("kmgb")
    unit = t[len(num):]
    try:
        value = float(num) * _UNITS[unit]
    except (ValueError, KeyError):
        raise UsageError(f"bad size {text!r}", hint="use bytes or K/M/G, e.g. 64M") from None
    if value < 1 << 20:
        raise UsageError(f"size {text!r} is below the 1M minimum")
    return int(value)


class TransferView:
    """Renders registry events: rich bars per blob, plain lines, or nothing (quiet)."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.console = Console(stderr=True)
        self._tasks: dict[str, TaskID] = {}
        self._lock = threading.Lock()
        self._bars: Progress | None = None
        if mode == "rich":
            self._bars = Progress(
                TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                TransferSpeedColumn(), TimeRemainingColumn(), console=self.console,
                transient=False)

    def __enter__(self) -> TransferView:
        if self._bars is not None:
            self._bars.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bars is not None:
            self._bars.stop()

    def _plain(self, text: str) -> None:
        if self.mode == "plain":
            print(text, file=sys.stderr, flush=True)

    def __call__(self, event: Event) -> None:
        with self._lock:
            self._handle(event)

    def _handle(self, event: Event) -> None:
        if self.mode == "quiet":
            return
        bars = self._bars
        if isinstance(event, BlobStarted):
            short = event.digest[7:19]
            if event.offset:
                self._plain(f"{short}: resuming at byte {event.offset}")
            if bars is not None and event.digest not in self._tasks:
                self._tasks[event.digest] = bars.add_task(
                    f"{short} {event.direction}", total=event.size, completed=event.offset)
        elif isinstance(event, BlobProgress):
            if bars is not None and event.digest in self._tasks:
                bars.update(self._tasks[event.digest], completed=event.done)
        elif isinstance(event, BlobDone):
            speed = event.transferred / event.seconds / 1e6 if event.seconds > 0 else 0.0
            self._plain(f"{event.digest[7:19]}: {event.how} ({event.size} bytes"
                        + (f", {speed:.1f} MB/s)" if event.transferred else ")"))
            if bars is not None and event.digest in self._tasks:
                bars.update(self._tasks[event.digest], completed=event.size,
                            description=f"{event.digest[7:19]} {event.how}")
        elif isinstance(event, Retrying):
            text = (f"retrying {event.what} in {event.delay:.1f}s "
                    f"(attempt {event.attempt}: {event.reason})")
            if bars is not None:
                bars.console.print(f"[yellow]{text}[/]")
            else:
                self._plain(text)
        elif isinstance(event, ManifestDone):
            self._plain(f"manifest {event.reference} {event.digest}")


def _mode(quiet: bool, progress: str) -> str:
    if quiet:
        return "quiet"
    if progress == "auto":
        return "rich" if sys.stderr.isatty() else "plain"
    return progress


def _options(tls_verify: bool, jobs: int, chunk_size: str | None) -> ClientOptions:
    if jobs < 1 or jobs > 64:
        raise UsageError(f"--jobs {jobs}: use 1 to 64")
    opts = ClientOptions(tls_verify=tls_verify, insecure=not tls_verify, jobs=jobs)
    if chunk_size:
        opts.chunk_size = parse_size(chunk_size)
    return opts


def _transfer_options(f: Any) -> Any:
    f = click.option("--tls-verify", type=click.BOOL, default=True, show_default=True,
                     help="Verify the registry's TLS certificate (false also allows "
                          "plain HTTP).")(f)
    f = click.option("-j", "--jobs", type=int, default=4, show_default=True,
                     help="Blobs transferred in parallel.")(f)
    f = click.option("-q", "--quiet", is_flag=True, help="No progress output.")(f)
    f = click.option("--progress", type=click.Choice(["auto", "rich", "plain"]),
                     default="auto", show_default=True,
                     help="Progress display: bars (rich), plain lines, auto by terminal.")(f)
    return f


@click.command("login")
@click.argument("registry")
@click.option("-u", "--username", help="User name (prompted when missing).")
@click.option("-p", "--password", help="Password (prefer --password-stdin).")
@click.option("--password-stdin", is_flag=True, help="Read the password from stdin.")
@click.option("--tls-verify", type=click.BOOL, default=True, show_default=True,
              help="Verify the registry's TLS certificate.")
def login_cmd(registry: str, username: str | None, password: str | None,
              password_stdin: bool, tls_verify: bool) -> None:
    """Log in to REGISTRY and store the credentials (Docker-compatible config.json)."""
    if password and password_stdin:
        raise UsageError("--password and --password-stdin are mutually exclusive")
    if password_stdin:
        if not username:
            raise UsageError("--password-stdin needs --username")
        password = sys.stdin.read().rstrip("\r\n")
    if not username:
        username = click.prompt("Username")
    if not password:
        password = click.prompt("Password", hide_input=True)
    where = login(registry, username or "", password or "",
                  options=ClientOptions(tls_verify=tls_verify, insecure=not tls_verify))
    click.echo(f"Login Succeeded (credentials in {where})")


@click.command("logout")
@click.argument("registry")
def logout_cmd(registry: str) -> None:
    """Remove the stored credentials of REGISTRY."""
    if logout(registry):
        click.echo(f"Removed login credentials for {registry}")
    else:
        raise UsageError(f"not logged in to {registry}")


@click.command("push")
@click.argument("image")
@click.argument("destination", required=False)
@click.option("--chunk-size", help="Blobs larger than this go up in chunks of this size "
                                   "(resumable; default 32M).")
@_transfer_options
@click.pass_context
def push_cmd(ctx: click.Context, image: str, destination: str | None, chunk_size: str | None,
             tls_verify: bool, jobs: int, quiet: bool, progress: str) -> None:
    """Push the local IMAGE to a registry (to DESTINATION when given, else to its name)."""
    store = Store(store_root(ctx))
    dest = Reference.parse(destination or image)
    started = time.monotonic()
    with TransferView(_mode(quiet, progress)) as view:
        desc = push_image(store, image, dest, progress=view,
                          options=_options(tls_verify, jobs, chunk_size))
    if not quiet:
        click.echo(f"Pushed {dest}@{desc.digest} in {time.monotonic() - started:.1f}s",
                   err=True)
    click.echo(desc.digest)


@click.command("pull")
@click.argument("image")
@click.option("--platform", help="OS/ARCH[/VARIANT] to pick from a multi-arch image "
                                 "(default: this machine's).")
@click.option("--all-platforms", "all_", is_flag=True,
              help="Pull the whole index, every platform (as `skopeo copy --all`).")
@_transfer_options
@click.pass_context
def pull_cmd(ctx: click.Context, image: str, platform: str | None, all_: bool,
             tls_verify: bool, jobs: int, quiet: bool, progress: str) -> None:
    """Pull IMAGE from its registry into the local store."""
    if all_ and platform:
        raise UsageError("--platform and --all-platforms are mutually exclusive")
    store = Store(store_root(ctx))
    ref = Reference.parse(image)
    started = time.monotonic()
    options = _options(tls_verify, jobs, None)
    with TransferView(_mode(quiet, progress)) as view:
        desc = (pull_all(store, ref, progress=view, options=options) if all_ else
                pull_image(store, ref, platform=platform, progress=view, options=options))
    if not quiet:
        click.echo(f"Pulled {ref} ({desc.digest}) in {time.monotonic() - started:.1f}s",
                   err=True)
    click.echo(desc.digest)


commands = [login_cmd, logout_cmd, push_cmd, pull_cmd]
