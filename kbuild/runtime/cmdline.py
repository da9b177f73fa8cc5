"""The shell line that runs a command on a host, and what goes on its stdin first.

Secrets never go on a command line (``/proc/*/cmdline`` is world-readable on
a host): the sudo password and the command's environment travel on stdin,
before the command's own input. :func:`wrap_command` returns both parts.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping

from kbuild.errors import UsageError

__all__ = ["ENV_NAME", "env_block", "wrap_command"]

ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_READ_ENV = 'IFS= read -r kbuild_env_n && eval "$(head -c "$kbuild_env_n")" && '


def env_block(env: Mapping[str, str]) -> bytes:
    """``export K='v'`` lines (quoted by construction) for the command's shell."""
    for k in env:
        if not ENV_NAME.match(k):
            raise UsageError(f"environment variable name {k!r} is not valid")
    return "".join(f"export {k}={shlex.quote(v)}\n" for k, v in env.items()).encode()


def wrap_command(
    cmd: str,
    *,
    is_root: bool,
    sudo: bool,
    sudo_password: bool,
    env: Mapping[str, str] | None,
) -> tuple[str, bytes]:
    """The shell line that runs ``cmd`` as root (when ``sudo``; ``is_root``: the
    login already is root) with ``env``,
    and the bytes the caller must write to its stdin before anything else.

    With ``sudo_password`` the caller prepends the password and a newline
    (``-k`` makes sudo always read it, so it never reaches the command). The
    environment follows as a byte count line and the ``export`` lines, read by
    the shell with ``head -c`` (which never reads past the count).
    """
    prefix = b""
    if env:
        block = env_block(env)
        prefix = f"{len(block)}\n".encode() + block
        cmd = _READ_ENV + "{\n" + cmd + "\n}"
    if not sudo or is_root:
        return cmd, prefix
    inner = shlex.quote(cmd)
    if sudo_password:
        return f"sudo -k -S -p '' -- sh -c {inner}", prefix
    return f"sudo -n -- sh -c {inner}", prefix
