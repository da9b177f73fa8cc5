"""Loading a Clusterfile: YAML documents to the data model, strictly.

Errors are :class:`~kbuild.errors.ClusterfileError` naming the document
(index and kind), the field and the offending value; passwords are never
part of a message. Unknown fields are errors with the closest known name.
"""

from __future__ import annotations

import copy
import io
import re
from pathlib import Path
from typing import Any

import yaml

from kbuild.errors import ClusterfileError
from kbuild.runtime import values
from kbuild.runtime.clusterfile.distribution import parse_distribution
from kbuild.runtime.clusterfile.model import (
    DEFAULT_CLUSTER_NAME,
    DEFAULT_DATA_ROOT,
    PLUGIN_ACTIONS,
    ROLES,
    SSH,
    TAINT_EFFECTS,
    Cluster,
    Clusterfile,
    ConfigDoc,
    HostGroup,
    PluginDoc,
    Taint,
)
from kbuild.runtime.clusterfile.schema import Doc, Loader

CLUSTER_SPEC_FIELDS = frozenset(
    {"image", "ssh", "hosts", "env", "cmd", "cmds", "appNames", "registry", "hostAliases",
     "dataRoot", "containerRuntime", "distribution"}
)  # fmt: skip
HOST_FIELDS = frozenset({"ips", "roles", "ssh", "env", "labels", "taints"})
SSH_FIELDS = frozenset({"user", "passwd", "port", "pk", "pkPasswd"})
TOP_FIELDS = frozenset({"apiVersion", "kind", "metadata", "spec"})
METADATA_FIELDS = frozenset({"name", "labels", "annotations"})
CONFIG_FIELDS = frozenset({"path", "data", "strategy", "appName"})
PLUGIN_FIELDS = frozenset({"type", "action", "data", "scope"})


def parse_env(doc_or_none: Doc | None, path: str, items: object) -> dict[str, str]:
    """``["K=V", …]`` (or a mapping) as a dict; a bad entry is a ClusterfileError."""
    doc = doc_or_none or Doc("flags", 0, "Cluster")
    if isinstance(items, dict):
        pairs = [(str(k), "" if v is None else doc.string(f"{path}.{k}", v)) for k, v in
                 items.items()]  # fmt: skip
    else:
        pairs = []
        for i, item in enumerate(doc.items(path, items)):
            text = doc.string(f"{path}[{i}]", item)
            if "=" not in text:
                raise doc.error(f"{path}[{i}]", "expected KEY=VALUE", text)
            key, _, value = text.partition("=")
            pairs.append((key, value))
    env: dict[str, str] = {}
    for key, value in pairs:
        env[doc.check(path, values.env_name, key)] = doc.check(f"{path}.{key}", values.env_value,
                                                               value)  # fmt: skip
    return env


def expand_ips(doc: Doc, path: str, text: str) -> list[str]:
    """One IP or an ``a-b`` range as a list of canonical IPs."""
    return doc.check(path, values.ip_range, text)


def parse_taint(doc: Doc, path: str, text: str) -> Taint:
    """Parse ``key[=value]:Effect[-]`` (or ``key-`` to remove every effect of a key)."""
    raw = text
    remove = text.endswith("-")
    if remove:
        text = text[:-1]
    key_value, sep, effect = text.rpartition(":")
    if not sep:
        key_value, effect = text, ""
        if not remove:
            raise doc.error(path, "bad taint (want key[=value]:Effect)", raw)
    key, _, value = key_value.partition("=")
    if effect and effect not in TAINT_EFFECTS:
        raise doc.error(path, f"bad taint effect (one of {', '.join(TAINT_EFFECTS)})", raw)
    try:
        values.label_key(key)
        values.label_value(value)
    except values.BadValue:
        raise doc.error(path, "bad taint key or value", raw) from None
    return Taint(key=key, value=value, effect=effect, remove=remove)


def parse_ssh(doc: Doc, path: str, value: object) -> SSH:
    """An ``ssh`` section (host level or cluster level)."""
    raw = doc.mapping(path, value)
    doc.fields(path, raw, SSH_FIELDS)

    def opt(key: str, secret: bool = False) -> str | None:
        v = raw.get(key)
        if v is None or v == "":
            return None
        return doc.string(f"{path}.{key}", v, secret=secret)

    port_text = opt("port")
    user = opt("user")
    return SSH(
        user=doc.check(f"{path}.user", values.ssh_user, user) if user is not None else None,
        passwd=opt("passwd", True),
        port=doc.check(f"{path}.port", values.port, port_text) if port_text else None,
        pk=opt("pk"),
        pk_passwd=opt("pkPasswd", True),
    )


def _labels(doc: Doc, path: str, value: object) -> dict[str, str]:
    labels: dict[str, str] = {}
    for k, v in doc.mapping(path, value).items():
        key, val = str(k), "" if v is None else doc.string(f"{path}.{k}", v)
        labels[doc.check(path, values.label_key, key)] = doc.check(
            f"{path}.{key}", values.label_value, val
        )
    return labels


def _roles(doc: Doc, path: str, value: object) -> list[str]:
    roles: list[str] = []
    for ri, role_any in enumerate(doc.items(path, value)):
        role = doc.string(f"{path}[{ri}]", role_any)
        if role not in ROLES:
            raise doc.error(f"{path}[{ri}]", f"unknown role (one of {', '.join(ROLES)})", role)
        if role not in roles:
            roles.append(role)
    if not roles:
        raise doc.error(path, "no roles")
    return roles


def _host_group(doc: Doc, gpath: str, graw_any: object, seen: dict[str, str]) -> HostGroup:
    graw = doc.mapping(gpath, graw_any)
    doc.fields(gpath, graw, HOST_FIELDS)
    ips: list[str] = []
    for ii, ip_any in enumerate(doc.items(f"{gpath}.ips", graw.get("ips"))):
        ipath = f"{gpath}.ips[{ii}]"
        for ip in expand_ips(doc, ipath, doc.string(ipath, ip_any)):
            if ip in seen:
                raise doc.error(ipath, f"duplicate IP (also in {seen[ip]})", ip)
            seen[ip] = ipath
            ips.append(ip)
    if not ips:
        raise doc.error(f"{gpath}.ips", "no IPs")
    taints = [
        parse_taint(doc, f"{gpath}.taints[{ti}]", doc.string(f"{gpath}.taints[{ti}]", t))
        for ti, t in enumerate(doc.items(f"{gpath}.taints", graw.get("taints")))
    ]
    return HostGroup(
        ips=ips,
        roles=_roles(doc, f"{gpath}.roles", graw.get("roles")),
        ssh=parse_ssh(doc, f"{gpath}.ssh", graw.get("ssh")),
        env=parse_env(doc, f"{gpath}.env", graw.get("env")),
        labels=_labels(doc, f"{gpath}.labels", graw.get("labels")),
        taints=taints,
    )


def _host_aliases(doc: Doc, value: object) -> list[dict[str, Any]]:
    aliases: list[dict[str, Any]] = []
    for ai, alias_any in enumerate(doc.items("spec.hostAliases", value)):
        apath = f"spec.hostAliases[{ai}]"
        alias = doc.mapping(apath, alias_any)
        doc.fields(apath, alias, {"ip", "hostnames"})
        ip = doc.check(f"{apath}.ip", values.ip_address, doc.string(f"{apath}.ip", alias.get("ip")))
        names = [
            doc.check(f"{apath}.hostnames", values.hostname, doc.string(f"{apath}.hostnames", n))
            for n in doc.items(f"{apath}.hostnames", alias.get("hostnames"))
        ]
        if not names:
            raise doc.error(f"{apath}.hostnames", "no hostnames")
        aliases.append({"ip": ip, "hostnames": names})
    return aliases


def _metadata_name(doc: Doc, raw: dict[str, Any], default: str) -> str:
    meta = doc.mapping("metadata", raw.get("metadata"))
    doc.fields("metadata", meta, METADATA_FIELDS)
    return doc.string("metadata.name", meta.get("name") or default)


def parse_cluster(doc: Doc, raw: dict[str, Any]) -> Cluster:
    """The ``kind: Cluster`` document."""
    doc.fields("", raw, TOP_FIELDS)
    name = doc.check("metadata.name", values.cluster_name,
                     _metadata_name(doc, raw, DEFAULT_CLUSTER_NAME))  # fmt: skip
    spec = doc.mapping("spec", raw.get("spec"))
    doc.fields("spec", spec, CLUSTER_SPEC_FIELDS)
    if not spec.get("image"):
        raise doc.error("spec.image", "missing")
    seen: dict[str, str] = {}
    groups = [
        _host_group(doc, f"spec.hosts[{gi}]", g, seen)
        for gi, g in enumerate(doc.items("spec.hosts", spec.get("hosts")))
    ]
    if not groups:
        raise doc.error("spec.hosts", "no hosts")
    if not any("master" in g.roles for g in groups):
        raise doc.error("spec.hosts", "no host has the master role")
    cmds_raw = spec.get("cmds", spec.get("cmd"))
    data_root = doc.string("spec.dataRoot", spec.get("dataRoot") or DEFAULT_DATA_ROOT)
    return Cluster(
        name=name,
        image=doc.string("spec.image", spec["image"]),
        hosts=groups,
        ssh=parse_ssh(doc, "spec.ssh", spec.get("ssh")),
        env=parse_env(doc, "spec.env", spec.get("env")),
        cmds=[doc.string("spec.cmds", c) for c in doc.items("spec.cmds", cmds_raw)],
        app_names=[
            doc.check("spec.appNames", values.app_name, doc.string("spec.appNames", a))
            for a in doc.items("spec.appNames", spec.get("appNames"))
        ],
        registry=copy.deepcopy(doc.mapping("spec.registry", spec.get("registry"))),
        host_aliases=_host_aliases(doc, spec.get("hostAliases")),
        data_root=doc.check("spec.dataRoot", values.data_root, data_root),
        distribution=parse_distribution(doc, spec.get("distribution")),
        extra={k: copy.deepcopy(spec[k]) for k in ("containerRuntime",) if k in spec},
    )


def parse_config(doc: Doc, raw: dict[str, Any]) -> ConfigDoc:
    """A ``kind: Config`` document."""
    doc.fields("", raw, TOP_FIELDS)
    name = _metadata_name(doc, raw, f"config-{doc.index + 1}")
    spec = doc.mapping("spec", raw.get("spec"))
    doc.fields("spec", spec, CONFIG_FIELDS)
    if not spec.get("path"):
        raise doc.error("spec.path", "missing")
    path = doc.check("spec.path", values.rootfs_path, doc.string("spec.path", spec["path"]))
    strategy = doc.string("spec.strategy", spec.get("strategy") or "overwrite")
    if strategy not in ("overwrite", "merge"):
        raise doc.error("spec.strategy", "unknown strategy (overwrite or merge)", strategy)
    data = spec.get("data", "")
    if not isinstance(data, str):
        data = yaml.safe_dump(data, sort_keys=False)
    if strategy == "merge":
        try:
            list(yaml.safe_load_all(data))
        except yaml.YAMLError as exc:
            raise doc.error(
                "spec.data", f"not YAML, cannot merge ({exc.__class__.__name__})"
            ) from None
    app = spec.get("appName") or ""
    return ConfigDoc(
        name=name,
        path=path,
        data=data,
        strategy=strategy,
        app_name=doc.check("spec.appName", values.app_name, doc.string("spec.appName", app))
        if app
        else "",
    )


def parse_plugin(doc: Doc, raw: dict[str, Any]) -> PluginDoc:
    """A ``kind: Plugin`` document."""
    doc.fields("", raw, TOP_FIELDS)
    name = _metadata_name(doc, raw, f"plugin-{doc.index + 1}")
    spec = doc.mapping("spec", raw.get("spec"))
    doc.fields("spec", spec, PLUGIN_FIELDS)
    ptype = doc.string("spec.type", spec.get("type") or "SHELL")
    if ptype.upper() != "SHELL":
        raise doc.error("spec.type", "unsupported plugin type (SHELL)", ptype)
    action = doc.string("spec.action", spec.get("action") or "")
    if action not in PLUGIN_ACTIONS:
        raise doc.error("spec.action", "unknown action", action)
    scope_text = doc.string("spec.scope", spec["scope"]) if spec.get("scope") else ""
    scope: list[str] = []
    for part in re.split(r"[|,\s]+", scope_text):
        if part and part not in ROLES:
            raise doc.error("spec.scope", f"unknown role (one of {', '.join(ROLES)})", part)
        if part:
            scope.append(part)
    data = spec.get("data")
    if not isinstance(data, str) or not data.strip():
        raise doc.error("spec.data", "missing shell script")
    return PluginDoc(name=name, action=action, data=data, scope=tuple(scope), type="SHELL")


def _documents(text: str, source: str) -> list[Any]:
    try:
        return list(yaml.load_all(io.StringIO(text), Loader=Loader))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ClusterfileError(f"{where}: not valid YAML: {problem}") from None
    except RecursionError:
        raise ClusterfileError(f"{source}: not valid YAML: nested too deeply") from None


def loads(text: str, *, source: str = "Clusterfile") -> Clusterfile:
    """Parse Clusterfile text; ``source`` names it in errors."""
    cluster: Cluster | None = None
    docs: dict[str, list[Any]] = {"Config": [], "Plugin": [], "other": []}
    for index, raw in enumerate(_documents(text, source)):
        if raw is None:
            continue
        if not isinstance(raw, dict):
            raise ClusterfileError(f"{source}: document {index + 1}: expected a mapping")
        kind = raw.get("kind")
        doc = Doc(source, index, str(kind))
        if not kind:
            raise doc.error("kind", "missing")
        api = str(raw.get("apiVersion") or "")
        if kind in ("Cluster", "Config", "Plugin") and api and not api.startswith(
            ("sealer.io/", "kbuild.io/")
        ):
            raise doc.error("apiVersion", "unsupported apiVersion", api)
        if kind == "Cluster":
            if cluster is not None:
                raise doc.error("kind", "a second Cluster document", kind)
            cluster = parse_cluster(doc, raw)
        elif kind == "Config":
            docs["Config"].append(parse_config(doc, raw))
        elif kind == "Plugin":
            docs["Plugin"].append(parse_plugin(doc, raw))
        else:
            docs["other"].append(copy.deepcopy(raw))
    if cluster is None:
        raise ClusterfileError(f"{source}: no document of kind Cluster")
    return Clusterfile(cluster, docs["Config"], docs["Plugin"], docs["other"])


def load_plugins(text: str, *, source: str) -> list[PluginDoc]:
    """The Plugin documents of an image's ``plugins/*.yaml`` file (other kinds are errors)."""
    out: list[PluginDoc] = []
    for index, raw in enumerate(_documents(text, source)):
        if raw is None:
            continue
        if not isinstance(raw, dict) or raw.get("kind") != "Plugin":
            kind = raw.get("kind") if isinstance(raw, dict) else None
            raise ClusterfileError(
                f"{source}: document {index + 1}: expected kind Plugin, got {kind!r}"
            )
        out.append(parse_plugin(Doc(source, index, "Plugin"), raw))
    return out


def load(path: str | Path) -> Clusterfile:
    """Read and parse a Clusterfile from disk."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ClusterfileError(f"{p}: cannot read: {why}") from None
    return loads(text, source=str(p))
