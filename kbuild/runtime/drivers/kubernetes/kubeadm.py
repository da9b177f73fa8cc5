"""kubeadm configuration generated from the Clusterfile.

:func:`build_config` makes the five documents kubeadm reads —
InitConfiguration, ClusterConfiguration, JoinConfiguration (one form for
masters, one for nodes), KubeletConfiguration and KubeProxyConfiguration —
and merges documents given by the image and the user over them::

    Clusterfile documents  >  the image's etc/kubeadm.yml  >  generated defaults

Merging is by ``kind``: mappings merge key by key (recursively), a scalar or
a list from the higher layer replaces the lower one, with two exceptions:
``apiServer.certSANs`` is the union of all layers (the generated names must
stay), and ``extraArgs``/``kubeletExtraArgs`` (lists of ``{name, value}``)
merge by ``name``. A ``null`` value sets the field to null (kubeadm's
default).

kubeadm API: ``kubeadm.k8s.io/v1beta4`` (Kubernetes 1.31 and later; 1.37
no longer reads v1beta3). Documents written for sealer in ``v1beta3`` or
``v1beta2`` are converted first: ``extraArgs`` and ``kubeletExtraArgs``
maps become ``{name, value}`` lists, ``apiServer.timeoutForControlPlane``
becomes ``InitConfiguration.timeouts.controlPlaneComponentHealthCheck``,
``discovery.timeout`` becomes ``JoinConfiguration.timeouts.discovery``, and
fields v1beta4 has no place for (``dns.type``, ``useHyperKubeImage``) are
dropped with a warning.

Image names: ``imageRepository`` is the embedded registry
(``sea.hub:5000``), so kubeadm asks for ``sea.hub:5000/kube-apiserver:…``,
``…/etcd:…``, ``…/pause:…``; ``dns.imageRepository`` is
``sea.hub:5000/coredns`` because kubeadm drops the ``coredns/`` path
element for a non-default repository, and the registry layout keeps
``registry.k8s.io/coredns/coredns`` as ``coredns/coredns``.
"""

from __future__ import annotations

import copy
import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kbuild.errors import ClusterfileError, UsageError
from kbuild.runtime.clusterfile import Cluster, Host, Taint
from kbuild.runtime.drivers.kubernetes.kubeadm_docs import (
    API_OF,
    CLUSTER,
    GROUP_OF,
    INIT,
    JOIN,
    KINDS,
    KUBE_PROXY,
    KUBELET,
    OLD_KUBEADM_APIS,
    convert_document,
    deep_merge,
    dump_documents,
    merge_args,
    parse_documents,
    unique,
)

API_SERVER_DOMAIN = "apiserver.cluster.local"
"""The name every host reaches the API server by (``/etc/hosts``)."""

API_SERVER_PORT = 6443
DEFAULT_VIP = "10.103.97.2"
"""The IPVS virtual IP workers reach the masters by (sealer's default)."""

DEFAULT_POD_CIDR = "100.64.0.0/10"
DEFAULT_SVC_CIDR = "10.96.0.0/22"
DEFAULT_CRI_SOCKET = "unix:///run/containerd/containerd.sock"
CONTROL_PLANE_TAINT = "node-role.kubernetes.io/control-plane"
"""The key of kubeadm's default taint on masters (effect NoSchedule)."""
PROXY_MODES = ("ipvs", "iptables", "nftables")



@dataclass
class KubeadmConfig:
    """The merged documents, each a mapping with ``apiVersion`` and ``kind``.

    ``join_master`` and ``join_node`` are JoinConfiguration templates:
    :func:`join_document` fills in the host, the token and the CA hashes.
    ``warnings`` lists fields dropped while converting old documents.
    """

    init: dict[str, Any]
    cluster: dict[str, Any]
    join_master: dict[str, Any]
    join_node: dict[str, Any]
    kubelet: dict[str, Any]
    kube_proxy: dict[str, Any]
    warnings: list[str] = field(default_factory=list)

    def init_yaml(self) -> str:
        """The ``kubeadm init --config`` file: Init, Cluster, Kubelet and KubeProxy."""
        return dump_documents([self.init, self.cluster, self.kubelet, self.kube_proxy])


# ---------------------------------------------------------------- layers


def _layer(docs: Iterable[Mapping[str, Any]], source: str,
           warnings: list[str]) -> dict[str, dict[str, Any]]:
    """The kubeadm-family documents of one layer, by kind (converted, merged in order)."""
    out: dict[str, dict[str, Any]] = {}
    for i, raw in enumerate(docs):
        kind = str(raw.get("kind", ""))
        api = str(raw.get("apiVersion", ""))
        if kind not in KINDS:
            continue
        where = f"{source}: document {i + 1} ({kind})"
        group = api.split("/")[0]
        if group != GROUP_OF[kind]:
            raise ClusterfileError(f"{where}: apiVersion {api!r} is not one of {GROUP_OF[kind]}")
        if api != API_OF[kind] and api not in OLD_KUBEADM_APIS:
            raise ClusterfileError(
                f"{where}: unsupported apiVersion {api!r} (use {API_OF[kind]})")
        doc = convert_document(raw, source=where, warnings=warnings)
        moved = doc.pop("__moved__", {})
        for target, part in [(kind, doc), *moved.items()]:
            out[target] = deep_merge(out.get(target, {}), part)
    return out


# ---------------------------------------------------------------- defaults


def _cidr(env: Mapping[str, str], key: str, default: str) -> str:
    value = env.get(key, "") or default
    try:
        for part in value.split(","):
            ipaddress.ip_network(part.strip(), strict=False)
    except ValueError:
        raise ClusterfileError(f"Clusterfile: env {key}: not a CIDR: {value!r}") from None
    return value


def _taints(host: Host) -> list[dict[str, str]] | None:
    """nodeRegistration.taints for a host, or None for kubeadm's default.

    kubeadm's default is the control-plane taint on masters and none on
    nodes; the host's taints apply in order to that list, as ``kubectl
    taint --overwrite`` would: an added taint replaces one with the same
    key and effect, ``key:Effect-`` removes that one, ``key-`` every effect
    of the key. The result is the whole list kubeadm registers the node
    with (``[]`` when everything was removed: kubeadm then adds nothing).
    """
    if not host.taints:
        return None
    current: list[Taint] = []
    if host.is_master:
        current.append(Taint(CONTROL_PLANE_TAINT, "", "NoSchedule"))
    for t in host.taints:
        if t.remove:
            current = [c for c in current
                       if not (c.key == t.key and (not t.effect or c.effect == t.effect))]
            continue
        same = [i for i, c in enumerate(current) if c.key == t.key and c.effect == t.effect]
        if same:
            current[same[0]] = t
        else:
            current.append(t)
    out = []
    for t in current:
        entry = {"key": t.key, "effect": t.effect}
        if t.value:
            entry["value"] = t.value
        out.append(entry)
    return out


def _node_registration(host: Host, cri_socket: str, ignore: Sequence[str]) -> dict[str, Any]:
    reg: dict[str, Any] = {
        "criSocket": cri_socket,
        "imagePullPolicy": "IfNotPresent",
        "kubeletExtraArgs": [{"name": "node-ip", "value": host.ip}],
    }
    taints = _taints(host)
    if taints is not None:
        reg["taints"] = taints
    if ignore:
        reg["ignorePreflightErrors"] = list(ignore)
    return reg


@dataclass(frozen=True)
class Settings:
    """Inputs of :func:`build_config` besides the Clusterfile."""

    kubernetes_version: str
    registry: str
    """The embedded registry as ``host:port`` (``sea.hub:5000``)."""
    proxy_mode: str = "iptables"
    """kube-proxy mode; ``ipvs`` is deprecated since Kubernetes 1.35 (kubeadm warns)."""
    cgroup_driver: str = "systemd"
    fail_cgroup_v1: bool = False
    cri_socket: str = DEFAULT_CRI_SOCKET
    vip: str | None = DEFAULT_VIP
    extra_sans: tuple[str, ...] = ()
    ignore_preflight_errors: tuple[str, ...] = ()


def default_documents(cluster: Cluster, settings: Settings) -> dict[str, dict[str, Any]]:
    """The generated documents, by kind, before any user document is merged."""
    if settings.proxy_mode not in PROXY_MODES:
        raise UsageError(f"kube-proxy mode {settings.proxy_mode!r}: one of "
                         f"{', '.join(PROXY_MODES)}")
    masters = cluster.masters()
    master0 = masters[0]
    endpoint = f"{API_SERVER_DOMAIN}:{API_SERVER_PORT}"
    sans = unique(["127.0.0.1", "localhost", API_SERVER_DOMAIN,
                    *(m.ip for m in masters),
                    *([settings.vip] if settings.vip else []), *settings.extra_sans])
    ignore = settings.ignore_preflight_errors
    # kubeadm's 1-minute API call timeout fails `init` on a busy small host
    # while the fresh apiserver is still slow (seen on 2 shared cores)
    timeouts = {"kubernetesAPICall": "3m0s"}
    init = {
        "localAPIEndpoint": {"advertiseAddress": master0.ip, "bindPort": API_SERVER_PORT},
        "nodeRegistration": _node_registration(master0, settings.cri_socket, ignore),
        "timeouts": {**timeouts, "controlPlaneComponentHealthCheck": "8m0s"},
    }
    cluster_doc = {
        "clusterName": cluster.name,
        "kubernetesVersion": settings.kubernetes_version,
        "controlPlaneEndpoint": endpoint,
        "imageRepository": settings.registry,
        "dns": {"imageRepository": f"{settings.registry}/coredns"},
        "apiServer": {"certSANs": sans},
        "networking": {
            "podSubnet": _cidr(cluster.env, "PodCIDR", DEFAULT_POD_CIDR),
            "serviceSubnet": _cidr(cluster.env, "SvcCIDR", DEFAULT_SVC_CIDR),
            "dnsDomain": cluster.env.get("DNSDomain") or "cluster.local",
        },
        "etcd": {"local": {"dataDir": "/var/lib/etcd"}},
    }
    join_common: dict[str, Any] = {
        "discovery": {"bootstrapToken": {"apiServerEndpoint": endpoint}},
        "nodeRegistration": {"criSocket": settings.cri_socket,
                             "imagePullPolicy": "IfNotPresent"},
        "timeouts": dict(timeouts),
    }
    if ignore:
        join_common["nodeRegistration"]["ignorePreflightErrors"] = list(ignore)
    join_master = deep_merge(join_common, {"controlPlane": {
        "localAPIEndpoint": {"bindPort": API_SERVER_PORT}}})
    kubelet = {
        "cgroupDriver": settings.cgroup_driver,
        "failCgroupV1": settings.fail_cgroup_v1,
    }
    proxy: dict[str, Any] = {
        "mode": settings.proxy_mode,
        # a host that is a container cannot write nf_conntrack_max or the
        # conntrack timeouts: 0 tells kube-proxy to leave them as they are
        "conntrack": {"maxPerCore": 0, "min": 0,
                      "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
    }
    if settings.proxy_mode == "ipvs" and settings.vip:
        # the workers' IPVS service for the masters is not kube-proxy's to clean up
        proxy["ipvs"] = {"excludeCIDRs": [f"{settings.vip}/32"]}
    return {INIT: init, CLUSTER: cluster_doc, JOIN + "/master": join_master,
            JOIN + "/node": join_common, KUBELET: kubelet, KUBE_PROXY: proxy}


def _head(kind: str, doc: Mapping[str, Any]) -> dict[str, Any]:
    body = {k: v for k, v in doc.items() if k not in ("apiVersion", "kind")}
    return {"apiVersion": API_OF[kind], "kind": kind, **body}


def build_config(
    cluster: Cluster,
    settings: Settings,
    *,
    image_kubeadm_yaml: str | None = None,
    user_documents: Sequence[Mapping[str, Any]] = (),
    image_source: str = "etc/kubeadm.yml",
) -> KubeadmConfig:
    """The kubeadm documents for ``cluster``.

    ``image_kubeadm_yaml``: the text of the image's ``etc/kubeadm.yml``
    (None when the image has none); ``user_documents``: the Clusterfile's
    other documents (``Clusterfile.others``; kinds kubeadm does not know are
    ignored here). Precedence: user documents > image file > defaults.
    """
    warnings: list[str] = []
    defaults = default_documents(cluster, settings)
    image_layer = _layer(
        parse_documents(image_kubeadm_yaml, source=image_source) if image_kubeadm_yaml else [],
        image_source, warnings)
    user_layer = _layer(user_documents, "Clusterfile", warnings)

    def merged(kind: str, base: Mapping[str, Any]) -> dict[str, Any]:
        doc = deep_merge(base, image_layer.get(kind, {}))
        doc = deep_merge(doc, user_layer.get(kind, {}))
        return _head(kind, doc)

    init = merged(INIT, defaults[INIT])
    # the host's own taints win over nodeRegistration.taints of any layer (as in joins)
    master0_taints = _taints(cluster.masters()[0])
    if master0_taints is not None:
        init.setdefault("nodeRegistration", {})["taints"] = master0_taints
    return KubeadmConfig(
        init=init,
        cluster=merged(CLUSTER, defaults[CLUSTER]),
        join_master=merged(JOIN, defaults[JOIN + "/master"]),
        join_node=merged(JOIN, defaults[JOIN + "/node"]),
        kubelet=merged(KUBELET, defaults[KUBELET]),
        kube_proxy=merged(KUBE_PROXY, defaults[KUBE_PROXY]),
        warnings=warnings,
    )


def join_document(
    config: KubeadmConfig,
    host: Host,
    *,
    token: str,
    ca_cert_hashes: Sequence[str],
    certificate_key: str | None = None,
) -> dict[str, Any]:
    """The JoinConfiguration for one host (a master when it has the master role).

    ``token`` and ``ca_cert_hashes`` come from master0 (``kubeadm token
    create``, the CA's public key hash); masters also need the
    ``certificate_key`` of ``kubeadm init phase upload-certs``.
    """
    if not ca_cert_hashes:
        raise UsageError("a join needs the CA certificate hash (sha256:…) of the cluster")
    base = config.join_master if host.is_master else config.join_node
    doc = copy.deepcopy(base)
    disc = doc.setdefault("discovery", {}).setdefault("bootstrapToken", {})
    disc["token"] = token
    disc["caCertHashes"] = list(ca_cert_hashes)
    reg = doc.setdefault("nodeRegistration", {})
    reg["kubeletExtraArgs"] = merge_args(
        [{"name": "node-ip", "value": host.ip}], reg.get("kubeletExtraArgs") or [])
    taints = _taints(host)
    if taints is not None:
        reg["taints"] = taints
    if host.is_master:
        if not certificate_key:
            raise UsageError(f"{host.ip}: a master join needs the certificate key of upload-certs")
        cp = doc.setdefault("controlPlane", {})
        cp.setdefault("localAPIEndpoint", {})["advertiseAddress"] = host.ip
        cp["certificateKey"] = certificate_key
    else:
        doc.pop("controlPlane", None)
    return doc


def join_yaml(config: KubeadmConfig, host: Host, **kwargs: Any) -> str:
    """:func:`join_document` as the text of a ``kubeadm join --config`` file."""
    return dump_documents([join_document(config, host, **kwargs)])


def _section(doc: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = doc.get(key)
    return value if isinstance(value, Mapping) else {}


def document_secrets(documents: Iterable[Mapping[str, Any]]) -> list[str]:
    """Certificate keys and bootstrap tokens in kubeadm documents (any version)."""
    out: list[Any] = []
    for doc in documents:
        kind = doc.get("kind")
        if kind == INIT:
            out.append(doc.get("certificateKey"))
            tokens = doc.get("bootstrapTokens")
            for tok in tokens if isinstance(tokens, list) else []:
                out.append(tok.get("token") if isinstance(tok, Mapping) else None)
        elif kind == JOIN:
            disc = _section(doc, "discovery")
            out += [_section(disc, "bootstrapToken").get("token"),
                    disc.get("tlsBootstrapToken"),
                    _section(doc, "controlPlane").get("certificateKey")]  # fmt: skip
    return [str(v) for v in out if v]
