"""Saving a Clusterfile: the data model back to sealer.io/v2 documents."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from kbuild.fsutil import write_private
from kbuild.runtime.clusterfile.distribution import dump_distribution
from kbuild.runtime.clusterfile.model import (
    API_VERSION,
    DEFAULT_DATA_ROOT,
    DOC_API_VERSION,
    SSH,
    Cluster,
    Clusterfile,
    Distribution,
)


def _ssh_dict(ssh: SSH) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if ssh.user is not None:
        out["user"] = ssh.user
    if ssh.passwd is not None:
        out["passwd"] = ssh.passwd
    if ssh.port is not None:
        out["port"] = str(ssh.port)
    if ssh.pk is not None:
        out["pk"] = ssh.pk
    if ssh.pk_passwd is not None:
        out["pkPasswd"] = ssh.pk_passwd
    return out


def _cluster_spec(c: Cluster) -> dict[str, Any]:
    spec: dict[str, Any] = {"image": c.image}
    if not c.ssh.is_empty():
        spec["ssh"] = _ssh_dict(c.ssh)
    if c.env:
        spec["env"] = [f"{k}={v}" for k, v in c.env.items()]
    hosts = []
    for g in c.hosts:
        entry: dict[str, Any] = {"ips": list(g.ips), "roles": list(g.roles)}
        if not g.ssh.is_empty():
            entry["ssh"] = _ssh_dict(g.ssh)
        if g.env:
            entry["env"] = [f"{k}={v}" for k, v in g.env.items()]
        if g.labels:
            entry["labels"] = dict(g.labels)
        if g.taints:
            entry["taints"] = [str(t) for t in g.taints]
        hosts.append(entry)
    spec["hosts"] = hosts
    optional = {
        "cmds": list(c.cmds),
        "appNames": list(c.app_names),
        "registry": copy.deepcopy(c.registry),
        "hostAliases": copy.deepcopy(c.host_aliases),
    }
    spec.update({k: v for k, v in optional.items() if v})
    if c.data_root != DEFAULT_DATA_ROOT:
        spec["dataRoot"] = c.data_root
    if c.distribution != Distribution():
        spec["distribution"] = dump_distribution(c.distribution)
    spec.update(copy.deepcopy(c.extra))
    return spec


def to_documents(cf: Clusterfile) -> list[dict[str, Any]]:
    """The Clusterfile as plain documents (what :func:`dumps` writes)."""
    c = cf.cluster
    docs: list[dict[str, Any]] = [
        {"apiVersion": API_VERSION, "kind": "Cluster", "metadata": {"name": c.name},
         "spec": _cluster_spec(c)}
    ]  # fmt: skip
    for cfg in cf.configs:
        cspec: dict[str, Any] = {"path": cfg.path, "strategy": cfg.strategy, "data": cfg.data}
        if cfg.app_name:
            cspec["appName"] = cfg.app_name
        docs.append({"apiVersion": DOC_API_VERSION, "kind": "Config",
                     "metadata": {"name": cfg.name}, "spec": cspec})  # fmt: skip
    for pl in cf.plugins:
        pspec: dict[str, Any] = {"type": pl.type, "action": pl.action, "data": pl.data}
        if pl.scope:
            pspec["scope"] = "|".join(pl.scope)
        docs.append({"apiVersion": DOC_API_VERSION, "kind": "Plugin",
                     "metadata": {"name": pl.name}, "spec": pspec})  # fmt: skip
    docs.extend(copy.deepcopy(cf.others))
    return docs


class _Dumper(yaml.SafeDumper):
    """Block-style dumper writing multi-line strings as literal blocks."""


def _str_representer(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    if "\n" in data:
        return dumper.represent_scalar("tag:yaml.org,2002:str", data, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", data)


_Dumper.add_representer(str, _str_representer)


def dumps(cf: Clusterfile) -> str:
    """The Clusterfile as multi-document YAML text (secrets included: write it 0600)."""
    return yaml.dump_all(
        to_documents(cf), Dumper=_Dumper, sort_keys=False, default_flow_style=False
    )


def save(cf: Clusterfile, path: str | Path) -> None:
    """Write the Clusterfile atomically with mode 0600."""
    write_private(Path(path), dumps(cf).encode())
