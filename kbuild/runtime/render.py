"""Files rendered at run time into the cluster rootfs (the overlay's upper dir).

* Every ``*.tmpl`` file of the image is rendered per host and written next to
  it without the suffix (``etc/app.conf.tmpl`` → ``etc/app.conf``). The
  variables are the image's ENV, under the Clusterfile's cluster env, under
  the host's env, plus the ``KBUILD_*`` variables of the runtime contract.
  The syntax is the subset of Go templates sealer's images use:
  ``{{ .Name }}``, ``{{ .Name | default "x" }}`` and ``{{ default "x" .Name }}``.
  A variable that is unset and has no default is an error naming the file.
* ``Config`` documents are written to their path; ``strategy: merge`` merges
  YAML mappings (document by document, the Config's values win, lists are
  replaced) into the file the image has there.

The provision phase writes them with :meth:`Executor.put_files
<kbuild.runtime.executor.Executor.put_files>`: only files that differ are
sent, so a re-run writes nothing.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import yaml

from kbuild.errors import ClusterError, ClusterfileError
from kbuild.runtime.clusterfile import ConfigDoc
from kbuild.runtime.executor import Executor

_ACTION = re.compile(r"\{\{-?\s*(.*?)\s*-?\}\}", re.S)
_VAR = r"\.([A-Za-z_][A-Za-z0-9_]*)"
_STR = r'"((?:[^"\\]|\\.)*)"'
_FORMS = [
    (re.compile(rf"^{_VAR}$"), lambda m: (m.group(1), None)),
    (re.compile(rf"^{_VAR}\s*\|\s*default\s+{_STR}$"), lambda m: (m.group(1), m.group(2))),
    (re.compile(rf"^default\s+{_STR}\s+{_VAR}$"), lambda m: (m.group(2), m.group(1))),
]


def render_template(text: str, env: Mapping[str, str], *, name: str) -> str:
    """Render one template (syntax in the module docstring)."""

    def sub(match: re.Match[str]) -> str:
        action = match.group(1)
        for pattern, parts in _FORMS:
            m = pattern.match(action)
            if m:
                var, default = parts(m)
                if var in env:
                    return env[var]
                if default is not None:
                    return default.encode().decode("unicode_escape")
                raise ClusterError(
                    f"{name}: template variable {var!r} is not set",
                    hint="set it with -e/--env or in the Clusterfile's env",
                )
        line = text.count("\n", 0, match.start()) + 1
        raise ClusterError(f"{name}:{line}: unsupported template action {{{{ {action} }}}}")

    return _ACTION.sub(sub, text)


def merge_yaml(base: Any, over: Any) -> Any:
    """Deep-merge ``over`` into ``base`` (mappings merge, anything else is replaced)."""
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for k, v in over.items():
            out[k] = merge_yaml(base[k], v) if k in base else v
        return out
    return over


def merge_documents(base_text: str, data: str, *, name: str) -> str:
    """The merge strategy of a Config document, document by document."""
    try:
        base_docs = [d for d in yaml.safe_load_all(base_text)] if base_text.strip() else []
        over_docs = list(yaml.safe_load_all(data))
    except yaml.YAMLError as exc:
        raise ClusterfileError(f"Config {name}: cannot merge, not YAML: {exc}") from None
    merged = []
    for i in range(max(len(base_docs), len(over_docs))):
        if i < len(base_docs) and i < len(over_docs):
            merged.append(merge_yaml(base_docs[i], over_docs[i]))
        elif i < len(base_docs):
            merged.append(base_docs[i])
        else:
            merged.append(over_docs[i])
    return yaml.safe_dump_all(merged, sort_keys=False, default_flow_style=False)


def rendered_path(template_path: str) -> str:
    """Where a template's output goes."""
    return template_path[: -len(".tmpl")]


def render_files(templates: Mapping[str, str], env: Mapping[str, str]) -> dict[str, bytes]:
    """All templates rendered for one host: rootfs path → content."""
    return {
        rendered_path(path): render_template(text, env, name=path).encode()
        for path, text in sorted(templates.items())
    }


def config_files(conn: Executor, rootfs: str, configs: list[ConfigDoc]) -> dict[str, bytes]:
    """The content each Config document gives its file on this host."""
    out: dict[str, bytes] = {}
    for cfg in configs:
        path = cfg.rootfs_path
        if cfg.strategy == "merge":
            if path in out:
                base = out[path].decode()
            else:
                base = (conn.read_file(path, root=rootfs) or b"").decode(errors="replace")
            out[path] = merge_documents(base, cfg.data, name=cfg.name).encode()
        else:
            out[path] = cfg.data.encode()
    return out
