"""Helpers shared by the CLI commands: the store, progress rendering."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from kbuild.errors import UsageError


def store_root(ctx: click.Context) -> Path | None:
    """The ``--root`` given to the top-level command, if any."""
    root = ctx.find_root().obj.get("root") if ctx.find_root().obj else None
    return Path(root) if root else None


def read_secret(stdin: bool, file: str | None, file_flag: str) -> str | None:
    """A secret from stdin's first line, or a file's first line (``file_flag``
    names the option in errors); None when neither is asked for."""
    if stdin:
        return sys.stdin.readline().rstrip("\r\n")
    if file is None:
        return None
    try:
        with open(file, encoding="utf-8") as fh:
            return fh.readline().rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{file_flag} {file}: cannot read it ({exc})") from None
