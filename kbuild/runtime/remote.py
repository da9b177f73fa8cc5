"""The runtime's own shell scripts that run on hosts (``kbuild/runtime/scripts/``).

A host needs no agent: each script travels in the command line of the
command that runs it (``sh -c TEXT NAME ARGS…``), its arguments quoted by
construction. The scripts' usage is in their headers.
"""

from __future__ import annotations

import functools
import shlex
from pathlib import Path

__all__ = ["SCRIPTS_DIR", "RemoteCommand", "display", "remote_script", "script_name",
           "script_text"]

SCRIPTS_DIR = Path(__file__).with_name("scripts")


@functools.cache
def script_text(name: str) -> str:
    """The text of one of the runtime's on-host scripts."""
    return (SCRIPTS_DIR / name).read_text()


def script_name(name: str) -> str:
    """``$0`` of a script run by :func:`remote_script` (``kbuild-<name>``)."""
    return f"kbuild-{name.removesuffix('.sh')}"


class RemoteCommand(str):
    """A command line running one of the runtime's scripts; ``display`` is how
    messages show it (``[name] args``, not the whole script)."""

    display: str


def remote_script(name: str, *args: str) -> RemoteCommand:
    """A shell command line running a packaged script with ``args``."""
    quoted = " ".join(shlex.quote(a) for a in args)
    cmd = RemoteCommand(f"sh -c {shlex.quote(script_text(name))} {script_name(name)} {quoted}"
                        .rstrip())  # fmt: skip
    cmd.display = f"[{name}] {quoted}".rstrip()
    return cmd


def display(cmd: str) -> str:
    """How a command appears in messages and progress."""
    return getattr(cmd, "display", cmd)
