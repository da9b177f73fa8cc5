"""The Clusterfile: load, validate and save sealer.io/v2 compatible documents.

A Clusterfile is multi-document YAML. One document is ``kind: Cluster``
(sealer's ``sealer.io/v2`` fields), any number are ``kind: Config`` (files
written into the rootfs before the phases run) and ``kind: Plugin`` (shell
hooks at sealer's phase names), and every other document (kubeadm, kubelet,
kube-proxy configuration) is kept verbatim for the kubeadm layer.

Errors are :class:`~kbuild.errors.ClusterfileError` naming the document
(index and kind), the field and the offending value; passwords are never
part of a message.
"""

from __future__ import annotations

import copy
import io
import ipaddress
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from kbuild.errors import ClusterfileError

API_VERSION = "sealer.io/v2"
"""apiVersion written for the Cluster document."""

DOC_API_VERSION = "sealer.io/v1"
"""apiVersion written for Config and Plugin documents (as sealer does)."""

ROLES = ("master", "node")
"""Roles a host may have."""

DEFAULT_DATA_ROOT = "/var/lib/kbuild/data"
"""Where hosts keep layers and cluster root filesystems when ``dataRoot`` is unset."""

DEFAULT_CLUSTER_NAME = "my-cluster"
"""The cluster name when neither ``metadata.name`` nor ``--cluster-name`` gives one."""

PLUGIN_ACTIONS = (
    "pre-init-host",
    "post-init-host",
    "pre-clean-host",
    "post-clean-host",
    "upgrade-host",
    "pre-install",
    "post-install",
    "pre-uninstall",
    "post-uninstall",
    "pre-scaleup",
    "post-scaleup",
    "upgrade",
    "rollback",
)
"""sealer's plugin phase names; the first five run on hosts, the rest on master0."""

HOST_ACTIONS = frozenset(PLUGIN_ACTIONS[:5])
"""Plugin actions that run on every host in scope (the others run on master0)."""

TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")
MAX_RANGE = 4096
_SECRET_KEYS = frozenset({"passwd", "pkPasswd", "password"})
_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_ENV_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
_QUALIFIED_RE = re.compile(
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
_LABEL_VALUE_RE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")
_CLUSTER_SPEC_KEYS = frozenset(
    {
        "image",
        "ssh",
        "hosts",
        "env",
        "cmd",
        "cmds",
        "appNames",
        "registry",
        "hostAliases",
        "dataRoot",
        "containerRuntime",
    }
)


# ---------------------------------------------------------------- data model


@dataclass(frozen=True)
class SSH:
    """SSH settings; ``None`` fields inherit from the cluster level."""

    user: str | None = None
    passwd: str | None = None
    port: int | None = None
    pk: str | None = None
    pk_passwd: str | None = None

    def over(self, base: SSH) -> SSH:
        """These settings with unset fields taken from ``base``."""
        return SSH(
            user=self.user if self.user is not None else base.user,
            passwd=self.passwd if self.passwd is not None else base.passwd,
            port=self.port if self.port is not None else base.port,
            pk=self.pk if self.pk is not None else base.pk,
            pk_passwd=self.pk_passwd if self.pk_passwd is not None else base.pk_passwd,
        )

    def is_empty(self) -> bool:
        """True when no field is set."""
        return self == SSH()

    def __repr__(self) -> str:
        hidden = "***" if self.passwd is not None else None
        hidden_pk = "***" if self.pk_passwd is not None else None
        return (
            f"SSH(user={self.user!r}, passwd={hidden!r}, port={self.port!r}, "
            f"pk={self.pk!r}, pk_passwd={hidden_pk!r})"
        )


@dataclass(frozen=True)
class Taint:
    """A Kubernetes taint ``key[=value]:Effect``, ``remove`` for a trailing ``-``."""

    key: str
    value: str
    effect: str
    remove: bool = False

    def __str__(self) -> str:
        text = self.key + (f"={self.value}" if self.value else "")
        text += f":{self.effect}" if self.effect else ""
        return text + ("-" if self.remove else "")


@dataclass
class HostGroup:
    """One entry of ``spec.hosts``: IPs sharing roles and settings."""

    ips: list[str]
    roles: list[str]
    ssh: SSH = field(default_factory=SSH)
    env: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    taints: list[Taint] = field(default_factory=list)


@dataclass(frozen=True)
class Host:
    """A single host with its settings resolved (host level over cluster level)."""

    ip: str
    roles: tuple[str, ...]
    ssh: SSH
    env: Mapping[str, str]
    labels: Mapping[str, str]
    taints: tuple[Taint, ...]

    @property
    def is_master(self) -> bool:
        """True for a host with the master role."""
        return "master" in self.roles


@dataclass
class Cluster:
    """The ``kind: Cluster`` document."""

    name: str
    image: str
    hosts: list[HostGroup]
    ssh: SSH = field(default_factory=SSH)
    env: dict[str, str] = field(default_factory=dict)
    cmds: list[str] = field(default_factory=list)
    app_names: list[str] = field(default_factory=list)
    registry: dict[str, Any] = field(default_factory=dict)
    host_aliases: list[dict[str, Any]] = field(default_factory=list)
    data_root: str = DEFAULT_DATA_ROOT
    extra: dict[str, Any] = field(default_factory=dict)

    def all_hosts(self) -> list[Host]:
        """Every host, masters first in file order, then the others in file order."""
        hosts: list[Host] = []
        for group in self.hosts:
            for ip in group.ips:
                hosts.append(
                    Host(
                        ip=ip,
                        roles=tuple(group.roles),
                        ssh=group.ssh.over(self.ssh),
                        env={**self.env, **group.env},
                        labels=dict(group.labels),
                        taints=tuple(group.taints),
                    )
                )
        return [h for h in hosts if h.is_master] + [h for h in hosts if not h.is_master]

    def masters(self) -> list[Host]:
        """Hosts with the master role, in file order."""
        return [h for h in self.all_hosts() if h.is_master]

    def master0(self) -> Host:
        """The first master: cluster-level steps run there."""
        return self.masters()[0]

    def host(self, ip: str) -> Host:
        """The host with that IP (``KeyError`` when absent)."""
        for h in self.all_hosts():
            if h.ip == ip:
                return h
        raise KeyError(ip)


@dataclass
class ConfigDoc:
    """A ``kind: Config`` document: a file written into the rootfs."""

    name: str
    path: str
    data: str
    strategy: str = "overwrite"
    app_name: str = ""

    @property
    def rootfs_path(self) -> str:
        """The path inside the cluster rootfs (app configs live under the app dir)."""
        if self.app_name:
            return f"application/apps/{self.app_name}/{self.path}"
        return self.path


@dataclass
class PluginDoc:
    """A ``kind: Plugin`` document: a shell hook at one phase."""

    name: str
    action: str
    data: str
    scope: tuple[str, ...] = ()
    type: str = "SHELL"

    def applies_to(self, roles: Iterable[str]) -> bool:
        """True when a host with these roles is in the plugin's scope."""
        return not self.scope or bool(set(self.scope) & set(roles))


@dataclass
class Clusterfile:
    """All documents of one Clusterfile."""

    cluster: Cluster
    configs: list[ConfigDoc] = field(default_factory=list)
    plugins: list[PluginDoc] = field(default_factory=list)
    others: list[dict[str, Any]] = field(default_factory=list)

    def plugins_for(self, action: str) -> list[PluginDoc]:
        """Plugins of one phase, in file order."""
        return [p for p in self.plugins if p.action == action]


# ---------------------------------------------------------------- YAML loading


class _Loader(yaml.SafeLoader):
    """SafeLoader keeping secrets as the text written (``0123`` stays ``"0123"``)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        mapping: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in _SECRET_KEYS and isinstance(value_node, yaml.ScalarNode):
                resolved = self.resolve(yaml.ScalarNode, value_node.value, (True, False))
                is_null = value_node.style is None and resolved == "tag:yaml.org,2002:null"
                mapping[key] = None if is_null else value_node.value
            else:
                mapping[key] = self.construct_object(value_node, deep=deep)
        return mapping


_Loader.add_constructor(
    "tag:yaml.org,2002:map",
    lambda loader, node: loader.construct_mapping(node, deep=True),  # type: ignore[arg-type]
)


class _Doc:
    """Error context: the document's position and kind."""

    def __init__(self, source: str, index: int, kind: str) -> None:
        self.source = source
        self.index = index
        self.kind = kind

    def error(
        self, path: str, message: str, value: object = None, *, show: bool = True
    ) -> ClusterfileError:
        where = f"{self.source}: document {self.index + 1} (kind {self.kind})"
        text = f"{where}: {path}: {message}"
        if show and value is not None:
            text += f": {value!r}"
        return ClusterfileError(text)


def _as_str(doc: _Doc, path: str, value: object, *, secret: bool = False) -> str:
    if isinstance(value, bool) or value is None or isinstance(value, (dict, list)):
        raise doc.error(path, "expected a string", None if secret else value, show=not secret)
    return str(value)


def _as_list(doc: _Doc, path: str, value: object) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise doc.error(path, "expected a list", value)
    return value


def _as_map(doc: _Doc, path: str, value: object) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise doc.error(path, "expected a mapping", value)
    return value


def parse_env(doc_or_none: _Doc | None, path: str, items: object) -> dict[str, str]:
    """``["K=V", …]`` (or a mapping) as a dict; a bad entry is a ClusterfileError."""
    doc = doc_or_none or _Doc("flags", 0, "Cluster")
    env: dict[str, str] = {}
    if isinstance(items, dict):
        pairs = [(str(k), "" if v is None else str(v)) for k, v in items.items()]
    else:
        pairs = []
        for i, item in enumerate(_as_list(doc, path, items)):
            text = _as_str(doc, f"{path}[{i}]", item)
            if "=" not in text:
                raise doc.error(f"{path}[{i}]", "expected KEY=VALUE", text)
            key, _, value = text.partition("=")
            pairs.append((key, value))
    for key, value in pairs:
        if not _ENV_KEY_RE.match(key):
            raise doc.error(path, "bad variable name", key)
        env[key] = value
    return env


def expand_ips(doc: _Doc, path: str, text: str) -> list[str]:
    """One IP or an ``a-b`` range (same family, ``a <= b``) as a list of IPs."""
    text = text.strip()
    try:
        if "-" in text:
            first_text, _, last_text = text.partition("-")
            first = ipaddress.ip_address(first_text.strip())
            last = ipaddress.ip_address(last_text.strip())
            if first.version != last.version or int(last) < int(first):
                raise doc.error(path, "bad IP range", text)
            if int(last) - int(first) >= MAX_RANGE:
                raise doc.error(path, f"IP range larger than {MAX_RANGE} hosts", text)
            return [str(ipaddress.ip_address(n)) for n in range(int(first), int(last) + 1)]
        return [str(ipaddress.ip_address(text))]
    except ValueError:
        raise doc.error(
            path, "bad IP address" if "-" not in text else "bad IP range", text
        ) from None


def parse_taint(doc: _Doc, path: str, text: str) -> Taint:
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
    if not key or not _QUALIFIED_RE.match(key) or not _LABEL_VALUE_RE.match(value):
        raise doc.error(path, "bad taint key or value", raw)
    return Taint(key=key, value=value, effect=effect, remove=remove)


def _parse_ssh(doc: _Doc, path: str, value: object) -> SSH:
    raw = _as_map(doc, path, value)
    known = {"user", "passwd", "port", "pk", "pkPasswd"}
    for key in raw:
        if key not in known:
            raise doc.error(f"{path}.{key}", "unknown field", key)

    def opt(key: str, secret: bool = False) -> str | None:
        v = raw.get(key)
        if v is None or v == "":
            return None
        return _as_str(doc, f"{path}.{key}", v, secret=secret)

    port_text = opt("port")
    port: int | None = None
    if port_text is not None:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise doc.error(f"{path}.port", "bad port", port_text)
        port = int(port_text)
    return SSH(
        user=opt("user"),
        passwd=opt("passwd", True),
        port=port,
        pk=opt("pk"),
        pk_passwd=opt("pkPasswd", True),
    )


def _parse_labels(doc: _Doc, path: str, value: object) -> dict[str, str]:
    labels: dict[str, str] = {}
    for k, v in _as_map(doc, path, value).items():
        key, val = str(k), "" if v is None else str(v)
        if not _QUALIFIED_RE.match(key):
            raise doc.error(f"{path}", "bad label key", key)
        if not _LABEL_VALUE_RE.match(val):
            raise doc.error(f"{path}.{key}", "bad label value", val)
        labels[key] = val
    return labels


def _parse_cluster(doc: _Doc, raw: dict[str, Any]) -> Cluster:
    meta = _as_map(doc, "metadata", raw.get("metadata"))
    name = _as_str(doc, "metadata.name", meta.get("name") or DEFAULT_CLUSTER_NAME)
    if not _NAME_RE.match(name) or len(name) > 63:
        raise doc.error("metadata.name", "bad cluster name (lowercase letters, digits, '-')", name)
    spec = _as_map(doc, "spec", raw.get("spec"))
    for key in spec:
        if key not in _CLUSTER_SPEC_KEYS:
            raise doc.error(f"spec.{key}", "unknown field", key)
    image = spec.get("image")
    if not image:
        raise doc.error("spec.image", "missing")
    image = _as_str(doc, "spec.image", image)

    seen: dict[str, str] = {}
    groups: list[HostGroup] = []
    for gi, graw_any in enumerate(_as_list(doc, "spec.hosts", spec.get("hosts"))):
        gpath = f"spec.hosts[{gi}]"
        graw = _as_map(doc, gpath, graw_any)
        for key in graw:
            if key not in {"ips", "roles", "ssh", "env", "labels", "taints"}:
                raise doc.error(f"{gpath}.{key}", "unknown field", key)
        ips: list[str] = []
        for ii, ip_any in enumerate(_as_list(doc, f"{gpath}.ips", graw.get("ips"))):
            ipath = f"{gpath}.ips[{ii}]"
            for ip in expand_ips(doc, ipath, _as_str(doc, ipath, ip_any)):
                if ip in seen:
                    raise doc.error(ipath, f"duplicate IP (also in {seen[ip]})", ip)
                seen[ip] = ipath
                ips.append(ip)
        if not ips:
            raise doc.error(f"{gpath}.ips", "no IPs")
        roles: list[str] = []
        for ri, role_any in enumerate(_as_list(doc, f"{gpath}.roles", graw.get("roles"))):
            role = _as_str(doc, f"{gpath}.roles[{ri}]", role_any)
            if role not in ROLES:
                raise doc.error(
                    f"{gpath}.roles[{ri}]", f"unknown role (one of {', '.join(ROLES)})", role
                )
            if role not in roles:
                roles.append(role)
        if not roles:
            raise doc.error(f"{gpath}.roles", "no roles")
        taints = [
            parse_taint(doc, f"{gpath}.taints[{ti}]", _as_str(doc, f"{gpath}.taints[{ti}]", t))
            for ti, t in enumerate(_as_list(doc, f"{gpath}.taints", graw.get("taints")))
        ]
        groups.append(
            HostGroup(
                ips=ips,
                roles=roles,
                ssh=_parse_ssh(doc, f"{gpath}.ssh", graw.get("ssh")),
                env=parse_env(doc, f"{gpath}.env", graw.get("env")),
                labels=_parse_labels(doc, f"{gpath}.labels", graw.get("labels")),
                taints=taints,
            )
        )
    if not groups:
        raise doc.error("spec.hosts", "no hosts")
    if not any("master" in g.roles for g in groups):
        raise doc.error("spec.hosts", "no host has the master role")

    cmds_raw = spec.get("cmds", spec.get("cmd"))
    cmds = [_as_str(doc, "spec.cmds", c) for c in _as_list(doc, "spec.cmds", cmds_raw)]
    apps = [
        _as_str(doc, "spec.appNames", a)
        for a in _as_list(doc, "spec.appNames", spec.get("appNames"))
    ]
    aliases: list[dict[str, Any]] = []
    for ai, alias_any in enumerate(_as_list(doc, "spec.hostAliases", spec.get("hostAliases"))):
        apath = f"spec.hostAliases[{ai}]"
        alias = _as_map(doc, apath, alias_any)
        ip = _as_str(doc, f"{apath}.ip", alias.get("ip"))
        if "-" in ip:
            raise doc.error(f"{apath}.ip", "bad IP address", ip)
        expand_ips(doc, f"{apath}.ip", ip)
        names = [
            _as_str(doc, f"{apath}.hostnames", n)
            for n in _as_list(doc, f"{apath}.hostnames", alias.get("hostnames"))
        ]
        if not names:
            raise doc.error(f"{apath}.hostnames", "no hostnames")
        aliases.append({"ip": ip, "hostnames": names})
    data_root = _as_str(doc, "spec.dataRoot", spec.get("dataRoot") or DEFAULT_DATA_ROOT)
    if not data_root.startswith("/") or data_root.rstrip("/") == "" or "\n" in data_root:
        raise doc.error("spec.dataRoot", "must be an absolute path other than /", data_root)
    if any(part in ("..", ".") for part in data_root.split("/")):
        raise doc.error("spec.dataRoot", "must not contain . or ..", data_root)
    extra = {}
    if "containerRuntime" in spec:
        extra["containerRuntime"] = copy.deepcopy(spec["containerRuntime"])
    return Cluster(
        name=name,
        image=image,
        hosts=groups,
        ssh=_parse_ssh(doc, "spec.ssh", spec.get("ssh")),
        env=parse_env(doc, "spec.env", spec.get("env")),
        cmds=cmds,
        app_names=apps,
        registry=copy.deepcopy(_as_map(doc, "spec.registry", spec.get("registry"))),
        host_aliases=aliases,
        data_root=data_root.rstrip("/"),
        extra=extra,
    )


def _parse_config(doc: _Doc, raw: dict[str, Any]) -> ConfigDoc:
    name = _as_str(
        doc,
        "metadata.name",
        _as_map(doc, "metadata", raw.get("metadata")).get("name") or f"config-{doc.index + 1}",
    )
    spec = _as_map(doc, "spec", raw.get("spec"))
    path = spec.get("path")
    if not path:
        raise doc.error("spec.path", "missing")
    path = _as_str(doc, "spec.path", path)
    parts = path.split("/")
    if path.startswith("/") or ".." in parts:
        raise doc.error("spec.path", "must be relative to the rootfs, without ..", path)
    strategy = _as_str(doc, "spec.strategy", spec.get("strategy") or "overwrite")
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
        app_name=_as_str(doc, "spec.appName", app) if app else "",
    )


def _parse_plugin(doc: _Doc, raw: dict[str, Any]) -> PluginDoc:
    name = _as_str(
        doc,
        "metadata.name",
        _as_map(doc, "metadata", raw.get("metadata")).get("name") or f"plugin-{doc.index + 1}",
    )
    spec = _as_map(doc, "spec", raw.get("spec"))
    ptype = _as_str(doc, "spec.type", spec.get("type") or "SHELL")
    if ptype.upper() != "SHELL":
        raise doc.error("spec.type", "unsupported plugin type (SHELL)", ptype)
    action = _as_str(doc, "spec.action", spec.get("action") or "")
    if action not in PLUGIN_ACTIONS:
        raise doc.error("spec.action", "unknown action", action)
    scope_text = spec.get("scope") or ""
    scope: list[str] = []
    for part in re.split(r"[|,\s]+", _as_str(doc, "spec.scope", scope_text) if scope_text else ""):
        if not part:
            continue
        if part not in ROLES:
            raise doc.error("spec.scope", f"unknown role (one of {', '.join(ROLES)})", part)
        scope.append(part)
    data = spec.get("data")
    if not isinstance(data, str) or not data.strip():
        raise doc.error("spec.data", "missing shell script")
    return PluginDoc(name=name, action=action, data=data, scope=tuple(scope), type="SHELL")


def loads(text: str, *, source: str = "Clusterfile") -> Clusterfile:
    """Parse Clusterfile text; ``source`` names it in errors."""
    try:
        raw_docs = [d for d in yaml.load_all(io.StringIO(text), Loader=_Loader)]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ClusterfileError(f"{where}: not valid YAML: {problem}") from None
    cluster: Cluster | None = None
    configs: list[ConfigDoc] = []
    plugins: list[PluginDoc] = []
    others: list[dict[str, Any]] = []
    for index, raw in enumerate(raw_docs):
        if raw is None:
            continue
        if not isinstance(raw, dict):
            raise ClusterfileError(f"{source}: document {index + 1}: expected a mapping")
        kind = raw.get("kind")
        api = str(raw.get("apiVersion") or "")
        doc = _Doc(source, index, str(kind))
        if not kind:
            raise doc.error("kind", "missing")
        if (
            kind in ("Cluster", "Config", "Plugin")
            and api
            and not api.startswith("sealer.io/")
            and not api.startswith("kbuild.io/")
        ):
            raise doc.error("apiVersion", "unsupported apiVersion", api)
        if kind == "Cluster":
            if cluster is not None:
                raise doc.error("kind", "a second Cluster document", kind)
            cluster = _parse_cluster(doc, raw)
        elif kind == "Config":
            configs.append(_parse_config(doc, raw))
        elif kind == "Plugin":
            plugins.append(_parse_plugin(doc, raw))
        else:
            others.append(copy.deepcopy(raw))
    if cluster is None:
        raise ClusterfileError(f"{source}: no document of kind Cluster")
    return Clusterfile(cluster=cluster, configs=configs, plugins=plugins, others=others)


def load_plugins(text: str, *, source: str) -> list[PluginDoc]:
    """The Plugin documents of an image's ``plugins/*.yaml`` file (other kinds are errors)."""
    try:
        raw_docs = list(yaml.load_all(io.StringIO(text), Loader=_Loader))
    except yaml.YAMLError as exc:
        raise ClusterfileError(f"{source}: not valid YAML: {exc.__class__.__name__}") from None
    out: list[PluginDoc] = []
    for index, raw in enumerate(raw_docs):
        if raw is None:
            continue
        if not isinstance(raw, dict) or raw.get("kind") != "Plugin":
            kind = raw.get("kind") if isinstance(raw, dict) else None
            raise ClusterfileError(
                f"{source}: document {index + 1}: expected kind Plugin, got {kind!r}"
            )
        out.append(_parse_plugin(_Doc(source, index, "Plugin"), raw))
    return out


def load(path: str | Path) -> Clusterfile:
    """Read and parse a Clusterfile from disk."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ClusterfileError(f"{p}: cannot read: {exc.strerror}") from None
    return loads(text, source=str(p))


# ---------------------------------------------------------------- saving


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


def to_documents(cf: Clusterfile) -> list[dict[str, Any]]:
    """The Clusterfile as plain documents (what :func:`dumps` writes)."""
    c = cf.cluster
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
    if c.cmds:
        spec["cmds"] = list(c.cmds)
    if c.app_names:
        spec["appNames"] = list(c.app_names)
    if c.registry:
        spec["registry"] = copy.deepcopy(c.registry)
    if c.host_aliases:
        spec["hostAliases"] = copy.deepcopy(c.host_aliases)
    if c.data_root != DEFAULT_DATA_ROOT:
        spec["dataRoot"] = c.data_root
    spec.update(copy.deepcopy(c.extra))
    docs: list[dict[str, Any]] = [
        {"apiVersion": API_VERSION, "kind": "Cluster", "metadata": {"name": c.name}, "spec": spec}
    ]
    for cfg in cf.configs:
        cspec: dict[str, Any] = {"path": cfg.path, "strategy": cfg.strategy, "data": cfg.data}
        if cfg.app_name:
            cspec["appName"] = cfg.app_name
        docs.append(
            {
                "apiVersion": DOC_API_VERSION,
                "kind": "Config",
                "metadata": {"name": cfg.name},
                "spec": cspec,
            }
        )
    for pl in cf.plugins:
        pspec: dict[str, Any] = {"type": pl.type, "action": pl.action, "data": pl.data}
        if pl.scope:
            pspec["scope"] = "|".join(pl.scope)
        docs.append(
            {
                "apiVersion": DOC_API_VERSION,
                "kind": "Plugin",
                "metadata": {"name": pl.name},
                "spec": pspec,
            }
        )
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
    from kbuild.fsutil import write_private

    write_private(Path(path), dumps(cf).encode())


# ---------------------------------------------------------------- flags


def split_ip_list(text: str, *, what: str) -> list[str]:
    """Expand a ``--masters``/``--nodes`` value: comma list of IPs and ``a-b`` ranges."""
    doc = _Doc("flags", 0, "Cluster")
    out: list[str] = []
    for part in [p.strip() for p in text.split(",") if p.strip()]:
        out.extend(expand_ips(doc, f"--{what}", part))
    return out


def from_flags(
    image: str,
    *,
    masters: Sequence[str],
    nodes: Sequence[str] = (),
    user: str | None = None,
    passwd: str | None = None,
    port: int | None = None,
    pk: str | None = None,
    pk_passwd: str | None = None,
    env: Sequence[str] = (),
    cmds: Sequence[str] = (),
    apps: Sequence[str] = (),
    cluster_name: str | None = None,
    data_root: str | None = None,
) -> Clusterfile:
    """The Clusterfile that ``kbuild run IMAGE --masters … --nodes …`` stands for.

    Built as documents and parsed by :func:`loads`'s rules, so the flags are
    validated exactly like a file.
    """
    ssh: dict[str, Any] = {}
    if user:
        ssh["user"] = user
    if passwd is not None:
        ssh["passwd"] = passwd
    if port is not None:
        ssh["port"] = str(port)
    if pk:
        ssh["pk"] = pk
    if pk_passwd is not None:
        ssh["pkPasswd"] = pk_passwd
    hosts: list[dict[str, Any]] = []
    if masters:
        hosts.append({"ips": list(masters), "roles": ["master"]})
    if nodes:
        hosts.append({"ips": list(nodes), "roles": ["node"]})
    spec: dict[str, Any] = {"image": image, "hosts": hosts}
    if ssh:
        spec["ssh"] = ssh
    if env:
        spec["env"] = list(env)
    if cmds:
        spec["cmds"] = list(cmds)
    if apps:
        spec["appNames"] = list(apps)
    if data_root:
        spec["dataRoot"] = data_root
    raw = {
        "apiVersion": API_VERSION,
        "kind": "Cluster",
        "metadata": {"name": cluster_name or DEFAULT_CLUSTER_NAME},
        "spec": spec,
    }
    cluster = _parse_cluster(_Doc("flags", 0, "Cluster"), raw)
    return Clusterfile(cluster=cluster)


# ---------------------------------------------------------------- editing


def with_hosts(cf: Clusterfile, groups: list[HostGroup]) -> Clusterfile:
    """A copy with ``spec.hosts`` replaced (validated again)."""
    new = copy.deepcopy(cf)
    new.cluster = replace(new.cluster, hosts=copy.deepcopy(groups))
    return loads(dumps(new), source="Clusterfile")


def add_hosts(
    cf: Clusterfile, ips: Sequence[str], role: str, ssh: SSH | None = None
) -> Clusterfile:
    """A copy with new hosts of one role appended as a new group."""
    groups = copy.deepcopy(cf.cluster.hosts)
    groups.append(HostGroup(ips=list(ips), roles=[role], ssh=ssh or SSH()))
    return with_hosts(cf, groups)


def remove_hosts(cf: Clusterfile, ips: Iterable[str]) -> Clusterfile:
    """A copy without these hosts (empty groups dropped)."""
    gone = set(ips)
    groups = []
    for g in copy.deepcopy(cf.cluster.hosts):
        g.ips = [ip for ip in g.ips if ip not in gone]
        if g.ips:
            groups.append(g)
    return with_hosts(cf, groups)


def iter_host_ips(cf: Clusterfile) -> Iterator[str]:
    """Every host IP in the order :meth:`Cluster.all_hosts` gives."""
    for h in cf.cluster.all_hosts():
        yield h.ip
