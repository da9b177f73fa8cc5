"""Where the store lives."""

from __future__ import annotations

import os
from pathlib import Path


def default_root() -> Path:
    """``$KBUILD_ROOT``, else ``/var/lib/kbuild`` for root, else ``$XDG_DATA_HOME/kbuild``."""
    env = os.environ.get("KBUILD_ROOT")
    if env:
        return Path(env)
    if os.geteuid() == 0:
        return Path("/var/lib/kbuild")
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg) if xdg else Path.home() / ".local" / "share"
    return base / "kbuild"
