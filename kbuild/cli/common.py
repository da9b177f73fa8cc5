"""Helpers shared by the CLI commands: the store, progress rendering."""

from __future__ import annotations

from pathlib import Path

import click


def store_root(ctx: click.Context) -> Path | None:
    """The ``--root`` given to the top-level command, if any."""
    root = ctx.find_root().obj.get("root") if ctx.find_root().obj else None
    return Path(root) if root else None
