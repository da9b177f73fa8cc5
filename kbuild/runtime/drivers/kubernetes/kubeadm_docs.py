"""kubeadm's documents as data: kinds and API versions, the merge rules, and the
conversion of sealer's older documents (v1beta2/v1beta3) to v1beta4.

The rules (see also :mod:`.kubeadm`): mappings merge key by key
(recursively), a scalar or a list from the higher layer replaces the lower
one, with two exceptions: ``apiServer.certSANs`` is the union of all layers,
and ``extraArgs``/``kubeletExtraArgs`` (lists of ``{name, value}``) merge by
``name``.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any

import yaml

from kbuild.errors import ClusterfileError

KUBEADM_API = "kubeadm.k8s.io/v1beta4"
KUBELET_API = "kubelet.config.k8s.io/v1beta1"
KUBE_PROXY_API = "kubeproxy.config.k8s.io/v1alpha1"
OLD_KUBEADM_APIS = ("kubeadm.k8s.io/v1beta3", "kubeadm.k8s.io/v1beta2")

INIT = "InitConfiguration"
CLUSTER = "ClusterConfiguration"
JOIN = "JoinConfiguration"
KUBELET = "KubeletConfiguration"
KUBE_PROXY = "KubeProxyConfiguration"
KINDS = (INIT, CLUSTER, JOIN, KUBELET, KUBE_PROXY)
API_OF = {INIT: KUBEADM_API, CLUSTER: KUBEADM_API, JOIN: KUBEADM_API,
           KUBELET: KUBELET_API, KUBE_PROXY: KUBE_PROXY_API}
GROUP_OF = {kind: api.split("/")[0] for kind, api in API_OF.items()}

_ARG_LISTS = ("extraArgs", "kubeletExtraArgs")


def merge_args(base: list[Any], over: list[Any]) -> list[Any]:
    """``{name, value}`` lists merged by ``name`` (``over`` wins, order kept)."""
    out = [copy.deepcopy(a) for a in base]
    names = [a.get("name") if isinstance(a, dict) else None for a in out]
    for arg in over:
        name = arg.get("name") if isinstance(arg, dict) else None
        if name is not None and name in names:
            out[names.index(name)] = copy.deepcopy(arg)
        else:
            out.append(copy.deepcopy(arg))
            names.append(name)
    return out


def deep_merge(
    base: Mapping[str, Any], over: Mapping[str, Any], *, path: str = ""
) -> dict[str, Any]:
    """``over`` merged onto ``base`` (neither is changed); rules in the module docstring."""
    out = copy.deepcopy(dict(base))
    for key, value in over.items():
        here = f"{path}.{key}" if path else key
        old = out.get(key)
        if isinstance(value, Mapping) and isinstance(old, Mapping):
            out[key] = deep_merge(old, value, path=here)
        elif key in _ARG_LISTS and isinstance(value, list) and isinstance(old, list):
            out[key] = merge_args(old, value)
        elif here == "apiServer.certSANs" and isinstance(value, list) and isinstance(old, list):
            out[key] = unique([*old, *value])
        else:
            out[key] = copy.deepcopy(value)
    return out


def unique(items: Iterable[Any]) -> list[Any]:
    """The items without repeats, first occurrence kept."""
    seen: list[Any] = []
    for item in items:
        if item not in seen:
            seen.append(item)
    return seen


# ---------------------------------------------------------------- old API versions


def _args_list(value: Any, where: str) -> Any:
    if isinstance(value, Mapping):
        return [{"name": str(k), "value": "" if v is None else str(v)} for k, v in value.items()]
    if value is None or isinstance(value, list):
        return value
    raise ClusterfileError(f"{where}: expected a mapping of flag names to values")


def convert_document(doc: Mapping[str, Any], *, source: str = "kubeadm document",
                     warnings: list[str] | None = None) -> dict[str, Any]:
    """A kubeadm v1beta2/v1beta3 document as v1beta4 (others returned as copies).

    Fields that moved to another kind are returned under the key
    ``"__moved__"`` as ``{kind: partial document}`` for the caller to merge.
    """
    out = copy.deepcopy(dict(doc))
    api = str(out.get("apiVersion", ""))
    if api not in OLD_KUBEADM_APIS:
        return out
    kind = str(out.get("kind", ""))
    where = f"{source} ({api} {kind})"
    notes = warnings if warnings is not None else []
    moved: dict[str, dict[str, Any]] = {}
    out["apiVersion"] = KUBEADM_API
    if kind == CLUSTER:
        for comp in ("apiServer", "controllerManager", "scheduler"):
            section = out.get(comp)
            if isinstance(section, dict) and "extraArgs" in section:
                section["extraArgs"] = _args_list(section["extraArgs"], f"{where}: {comp}")
        etcd_local = (out.get("etcd") or {}).get("local") if isinstance(out.get("etcd"), dict) \
            else None
        if isinstance(etcd_local, dict) and "extraArgs" in etcd_local:
            etcd_local["extraArgs"] = _args_list(etcd_local["extraArgs"], f"{where}: etcd.local")
        api_server = out.get("apiServer")
        if isinstance(api_server, dict) and "timeoutForControlPlane" in api_server:
            moved.setdefault(INIT, {})["timeouts"] = {
                "controlPlaneComponentHealthCheck": api_server.pop("timeoutForControlPlane")}
        dns = out.get("dns")
        if isinstance(dns, dict) and "type" in dns:
            dns.pop("type")
            notes.append(f"{where}: dns.type dropped (v1beta4 has CoreDNS only)")
        if "useHyperKubeImage" in out:
            out.pop("useHyperKubeImage")
            notes.append(f"{where}: useHyperKubeImage dropped (no hyperkube image any more)")
    if kind in (INIT, JOIN):
        reg = out.get("nodeRegistration")
        if isinstance(reg, dict) and "kubeletExtraArgs" in reg:
            reg["kubeletExtraArgs"] = _args_list(
                reg["kubeletExtraArgs"], f"{where}: nodeRegistration.kubeletExtraArgs")
    if kind == JOIN:
        discovery = out.get("discovery")
        if isinstance(discovery, dict) and "timeout" in discovery:
            out.setdefault("timeouts", {})["discovery"] = discovery.pop("timeout")
    if moved:
        out["__moved__"] = moved
    return out


def parse_documents(text: str, *, source: str) -> list[dict[str, Any]]:
    """The mappings of a multi-document YAML text (``source`` names it in errors)."""
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark else source
        raise ClusterfileError(f"{where}: not valid YAML: {getattr(exc, 'problem', exc)}") from None
    for i, d in enumerate(docs):
        if not isinstance(d, dict):
            raise ClusterfileError(f"{source}: document {i + 1}: expected a mapping")
    return docs


def dump_documents(docs: Iterable[Mapping[str, Any]]) -> str:
    """Documents as multi-document YAML (keys in insertion order)."""
    return yaml.safe_dump_all([dict(d) for d in docs], sort_keys=False,
                              default_flow_style=False, explicit_start=True)
