"""The runtime's own shell scripts that run on hosts (``kbuild/runtime/scripts/``).

A host needs no agent: each script travels in the command line of the
command that runs it (``sh -c TEXT NAME ARGS…``), its arguments quoted by
construction. The scripts' usage is in their headers. A line
``#include NAME`` in a script is replaced by the text of ``scripts/NAME``
(rules several scripts share, e.g. ``layer-store.sh``).
"""

from __future__ import annotations

import functools
import shlex
from pathlib import Path

__all__ = ["SCRIPTS_DIR", "RemoteCommand", "display", "remote_script", "script_argv",
           "script_name", "script_text"]

SCRIPTS_DIR = Path(__file__).with_name("scripts")


_INCLUDE = "#include "


@functools.cache
def script_text(name: str) -> str:
    """The text of one of the runtime's on-host scripts, its includes filled in."""
    lines = (SCRIPTS_DIR / name).read_text().splitlines(keepends=True)
    return "".join(
        script_text(line.removeprefix(_INCLUDE).strip()) if line.startswith(_INCLUDE) else line
        for line in lines
    )


def script_name(name: str) -> str:
    """``$0`` of a script run by :func:`remote_script` (``kbuild-<name>``)."""
    return f"kbuild-{name.removesuffix('.sh')}"


class RemoteCommand(str):
    """A command line running one of the runtime's scripts; ``display`` is how
    messages show it (``[name] args``, not the whole script)."""

    display: str


def script_argv(name: str, *args: str) -> list[str]:
    """The argv running a packaged script with ``args`` (``sh -c TEXT NAME ARGS…``)."""
    return ["sh", "-c", script_text(name), script_name(name), *args]


def remote_script(name: str, *args: str) -> RemoteCommand:
    """A shell command line running a packaged script with ``args``."""
    cmd = RemoteCommand(shlex.join(script_argv(name, *args)))
    cmd.display = f"[{name}] {' '.join(shlex.quote(a) for a in args)}".rstrip()
    return cmd


def display(cmd: str) -> str:
    """How a command appears in messages and progress."""
    return getattr(cmd, "display", cmd)
