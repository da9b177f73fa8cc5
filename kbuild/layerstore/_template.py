"""The ``*.tmpl`` syntax of cluster images: the subset of Go templates sealer's images use.

``{{ .Name }}``, ``{{ .Name | default "x" }}`` and ``{{ default "x" .Name }}``
(``{{-``/``-}}`` accepted, whitespace trimming is not done). The runtime
renders these files with the cluster's env; the builder renders them with
the image's env to find the container images they name.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

_NAME = r"\.(?P<{0}>[A-Za-z_][A-Za-z0-9_]*)"
_QUOTED = r'"(?P<{0}>(?:[^"\\]|\\.)*)"'
_ACTION_RE = re.compile(
    r"\{\{-?\s*(?:"
    + _NAME.format("v1") + r"(?:\s*\|\s*default\s+" + _QUOTED.format("d1") + r")?"
    + r"|default\s+" + _QUOTED.format("d2") + r"\s+" + _NAME.format("v2")
    + r")\s*-?\}\}"
)
_ANY_ACTION_RE = re.compile(r"\{\{.*?\}\}", re.S)


def render_template(text: str, env: Mapping[str, str], *,
                    missing: Callable[[str], str]) -> str:
    """``text`` with every action replaced.

    A variable in ``env`` gives its value, else the action's default; with
    neither, ``missing(name)`` decides (return a value or raise). Actions of
    any other form are left as they are, for the caller to find with
    :func:`unrendered`.
    """

    def one(m: re.Match[str]) -> str:
        name = m.group("v1") or m.group("v2")
        if name in env:
            return env[name]
        default = m.group("d1") if m.group("v1") else m.group("d2")
        if default is not None:
            return default.encode().decode("unicode_escape")
        return missing(name)

    return _ACTION_RE.sub(one, text)


def unrendered(text: str) -> list[str]:
    """Template actions left in ``text`` (forms :func:`render_template` does not know)."""
    return _ANY_ACTION_RE.findall(text)
