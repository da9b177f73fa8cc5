"""The Kubernetes driver's kubeadm documents: precedence, old API conversion, real kubeadm."""

from __future__ import annotations

import glob
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from kbuild.errors import ClusterfileError, UsageError
from kbuild.runtime import clusterfile
from kbuild.runtime.drivers.kubernetes.kubeadm import (
    KubeadmConfig,
    Settings,
    build_config,
    convert_document,
    deep_merge,
    join_document,
    join_yaml,
)

REG = "sea.hub:5000"
HASH = "sha256:" + "ab" * 32
TOKEN = "abcdef.0123456789abcdef"
CERT_KEY = "c0" * 32


def _cluster_text(extra: str = "", env: str = "", taints: str = "") -> str:
    return f"""
apiVersion: sealer.io/v2
kind: Cluster
metadata: {{name: demo}}
spec:
  image: kubernetes:v1.37.2
  env: [{env}]
  hosts:
  - ips: [192.168.0.2, 192.168.0.3]
    roles: [master]
    {taints}
  - ips: [192.168.0.5-192.168.0.6]
    roles: [node]
    taints: ["dedicated=gpu:NoSchedule"]
{extra}"""


def _build(text: str, image_yaml: str | None = None, **settings: Any) -> KubeadmConfig:
    cf = clusterfile.loads(text)
    return build_config(cf.cluster, Settings("v1.37.2", REG, **settings),
                        image_kubeadm_yaml=image_yaml, user_documents=cf.others)


def test_defaults() -> None:
    conf = _build(_cluster_text())
    assert conf.init["apiVersion"] == "kubeadm.k8s.io/v1beta4"
    assert conf.init["localAPIEndpoint"] == {"advertiseAddress": "192.168.0.2", "bindPort": 6443}
    reg = conf.init["nodeRegistration"]
    assert reg["criSocket"] == "unix:///run/containerd/containerd.sock"
    assert "taints" not in reg  # kubeadm's default control-plane taint
    assert reg["kubeletExtraArgs"] == [{"name": "node-ip", "value": "192.168.0.2"}]
    c = conf.cluster
    assert c["kubernetesVersion"] == "v1.37.2"
    assert c["controlPlaneEndpoint"] == "apiserver.cluster.local:6443"
    assert c["apiServer"]["certSANs"] == ["127.0.0.1", "localhost", "apiserver.cluster.local",
                                          "192.168.0.2", "192.168.0.3", "10.103.97.2"]
    assert c["networking"] == {"podSubnet": "100.64.0.0/10", "serviceSubnet": "10.96.0.0/22",
                               "dnsDomain": "cluster.local"}
    assert c["imageRepository"] == REG
    assert c["dns"] == {"imageRepository": f"{REG}/coredns"}
    assert c["etcd"] == {"local": {"dataDir": "/var/lib/etcd"}}
    assert conf.kubelet == {"apiVersion": "kubelet.config.k8s.io/v1beta1",
                            "kind": "KubeletConfiguration",
                            "cgroupDriver": "systemd", "failCgroupV1": False}
    proxy = conf.kube_proxy
    assert proxy["mode"] == "iptables" and "ipvs" not in proxy
    assert proxy["conntrack"] == {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s",
                                  "tcpCloseWaitTimeout": "0s"}
    docs = list(yaml.safe_load_all(conf.init_yaml()))
    assert [d["kind"] for d in docs] == ["InitConfiguration", "ClusterConfiguration",
                                         "KubeletConfiguration", "KubeProxyConfiguration"]


def test_ipvs_mode_excludes_the_vip() -> None:
    conf = _build(_cluster_text(), proxy_mode="ipvs", vip="10.103.97.9")
    assert conf.kube_proxy["ipvs"] == {"excludeCIDRs": ["10.103.97.9/32"]}
    assert "10.103.97.9" in conf.cluster["apiServer"]["certSANs"]
    with pytest.raises(UsageError, match="kube-proxy mode"):
        _build(_cluster_text(), proxy_mode="userspace")


def test_cidrs_from_env() -> None:
    conf = _build(_cluster_text(env="PodCIDR=10.244.0.0/16, SvcCIDR=10.97.0.0/16"))
    assert conf.cluster["networking"]["podSubnet"] == "10.244.0.0/16"
    assert conf.cluster["networking"]["serviceSubnet"] == "10.97.0.0/16"
    with pytest.raises(ClusterfileError, match="PodCIDR: not a CIDR"):
        _build(_cluster_text(env="PodCIDR=10.244.0.0/99"))


IMAGE_YAML = """
apiVersion: kubeadm.k8s.io/v1beta3
kind: ClusterConfiguration
networking: {podSubnet: 172.16.0.0/16}
apiServer:
  certSANs: [image.example.com]
  extraArgs: {audit-log-maxage: "10", service-node-port-range: "1-65535"}
---
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
maxPods: 50
clusterDNS: [10.96.0.10]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: ignored}
"""

USER_DOCS = """
---
apiVersion: kubeadm.k8s.io/v1beta4
kind: ClusterConfiguration
networking: {podSubnet: 10.250.0.0/16}
apiServer:
  certSANs: [user.example.com, 192.168.0.2]
  extraArgs:
  - {name: audit-log-maxage, value: "30"}
---
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
clusterDNS: [10.96.0.53]
cgroupDriver: cgroupfs
"""


def test_precedence_user_over_image_over_defaults() -> None:
    conf = _build(_cluster_text(extra=USER_DOCS), IMAGE_YAML)
    c = conf.cluster
    assert c["networking"]["podSubnet"] == "10.250.0.0/16"          # user over image
    assert c["networking"]["serviceSubnet"] == "10.96.0.0/22"       # default kept
    assert c["apiServer"]["certSANs"] == [                          # union, in layer order
        "127.0.0.1", "localhost", "apiserver.cluster.local", "192.168.0.2", "192.168.0.3",
        "10.103.97.2", "image.example.com", "user.example.com"]
    assert c["apiServer"]["extraArgs"] == [                         # merged by name
        {"name": "audit-log-maxage", "value": "30"},
        {"name": "service-node-port-range", "value": "1-65535"}]
    assert conf.kubelet["maxPods"] == 50                            # image over default
    assert conf.kubelet["clusterDNS"] == ["10.96.0.53"]             # lists replaced
    assert conf.kubelet["cgroupDriver"] == "cgroupfs"               # user over default
    assert conf.kubelet["failCgroupV1"] is False


def test_image_layer_only() -> None:
    conf = _build(_cluster_text(), IMAGE_YAML)
    assert conf.cluster["networking"]["podSubnet"] == "172.16.0.0/16"
    assert conf.cluster["apiServer"]["extraArgs"][0] == {"name": "audit-log-maxage",
                                                         "value": "10"}


@pytest.mark.parametrize(
    ("doc", "want", "moved"),
    [
        (
            {"apiVersion": "kubeadm.k8s.io/v1beta3", "kind": "ClusterConfiguration",
             "apiServer": {"extraArgs": {"a": "1"}, "timeoutForControlPlane": "5m0s"},
             "controllerManager": {"extraArgs": {"b": 2}},
             "scheduler": {"extraArgs": {"c": None}},
             "etcd": {"local": {"extraArgs": {"d": "4"}}}},
            {"apiVersion": "kubeadm.k8s.io/v1beta4", "kind": "ClusterConfiguration",
             "apiServer": {"extraArgs": [{"name": "a", "value": "1"}]},
             "controllerManager": {"extraArgs": [{"name": "b", "value": "2"}]},
             "scheduler": {"extraArgs": [{"name": "c", "value": ""}]},
             "etcd": {"local": {"extraArgs": [{"name": "d", "value": "4"}]}}},
            {"InitConfiguration": {"timeouts": {"controlPlaneComponentHealthCheck": "5m0s"}}},
        ),
        (
            {"apiVersion": "kubeadm.k8s.io/v1beta3", "kind": "JoinConfiguration",
             "discovery": {"timeout": "3m0s"},
             "nodeRegistration": {"kubeletExtraArgs": {"max-pods": "20"}}},
            {"apiVersion": "kubeadm.k8s.io/v1beta4", "kind": "JoinConfiguration",
             "discovery": {}, "timeouts": {"discovery": "3m0s"},
             "nodeRegistration": {"kubeletExtraArgs": [{"name": "max-pods", "value": "20"}]}},
            None,
        ),
        (
            {"apiVersion": "kubeadm.k8s.io/v1beta2", "kind": "InitConfiguration",
             "nodeRegistration": {"kubeletExtraArgs": {"v": "2"}}},
            {"apiVersion": "kubeadm.k8s.io/v1beta4", "kind": "InitConfiguration",
             "nodeRegistration": {"kubeletExtraArgs": [{"name": "v", "value": "2"}]}},
            None,
        ),
        (  # already v1beta4: unchanged
            {"apiVersion": "kubeadm.k8s.io/v1beta4", "kind": "ClusterConfiguration",
             "apiServer": {"extraArgs": [{"name": "a", "value": "1"}]}},
            {"apiVersion": "kubeadm.k8s.io/v1beta4", "kind": "ClusterConfiguration",
             "apiServer": {"extraArgs": [{"name": "a", "value": "1"}]}},
            None,
        ),
    ],
)
def test_convert(doc: dict[str, Any], want: dict[str, Any], moved: dict[str, Any] | None) -> None:
    out = convert_document(doc)
    assert out.pop("__moved__", None) == moved
    assert out == want


def test_convert_drops_and_warns() -> None:
    warnings: list[str] = []
    out = convert_document({"apiVersion": "kubeadm.k8s.io/v1beta2",
                            "kind": "ClusterConfiguration", "dns": {"type": "CoreDNS"},
                            "useHyperKubeImage": False}, warnings=warnings)
    assert out == {"apiVersion": "kubeadm.k8s.io/v1beta4", "kind": "ClusterConfiguration",
                   "dns": {}}
    assert len(warnings) == 2 and "dns.type" in warnings[0]
    with pytest.raises(ClusterfileError, match="expected a mapping of flag names"):
        convert_document({"apiVersion": "kubeadm.k8s.io/v1beta3",
                          "kind": "ClusterConfiguration", "apiServer": {"extraArgs": "x=1"}})


def test_moved_timeout_lands_in_init() -> None:
    conf = _build(_cluster_text(extra="""---
apiVersion: kubeadm.k8s.io/v1beta3
kind: ClusterConfiguration
apiServer: {timeoutForControlPlane: 7m0s}
"""))
    assert conf.init["timeouts"] == {
        "controlPlaneComponentHealthCheck": "7m0s",  # the user's, over the default 8m0s
        "kubernetesAPICall": "3m0s",
    }
    assert "timeoutForControlPlane" not in conf.cluster["apiServer"]


def test_default_timeouts_leave_room_for_a_slow_apiserver() -> None:
    conf = _build(_cluster_text())
    assert conf.init["timeouts"] == {
        "controlPlaneComponentHealthCheck": "8m0s",
        "kubernetesAPICall": "3m0s",
    }
    assert conf.join_node["timeouts"] == {"kubernetesAPICall": "3m0s"}


@pytest.mark.parametrize(
    ("doc", "match"),
    [
        ("apiVersion: kubeadm.k8s.io/v1alpha1\nkind: ClusterConfiguration\n",
         "unsupported apiVersion 'kubeadm.k8s.io/v1alpha1'"),
        ("apiVersion: kubeadm.k8s.io/v1beta4\nkind: KubeletConfiguration\n",
         "is not one of kubelet.config.k8s.io"),
        ("apiVersion: kubeproxy.config.k8s.io/v1beta9\nkind: KubeProxyConfiguration\n",
         "unsupported apiVersion"),
    ],
)
def test_bad_api_versions(doc: str, match: str) -> None:
    with pytest.raises(ClusterfileError, match=match):
        _build(_cluster_text(extra="---\n" + doc))
    with pytest.raises(ClusterfileError, match=r"etc/kubeadm\.yml: document 1"):
        _build(_cluster_text(), doc)


def test_image_yaml_errors_name_the_file() -> None:
    with pytest.raises(ClusterfileError, match=r"etc/kubeadm\.yml:2: not valid YAML"):
        _build(_cluster_text(), "a: b\n  - c: [\n")


def test_deep_merge_leaves_inputs_alone() -> None:
    base = {"a": {"b": [1], "c": 1}}
    over = {"a": {"b": [2], "d": None}}
    assert deep_merge(base, over) == {"a": {"b": [2], "c": 1, "d": None}}
    assert base == {"a": {"b": [1], "c": 1}} and over == {"a": {"b": [2], "d": None}}


def test_join_documents() -> None:
    text = _cluster_text(taints='taints: ["node-role.kubernetes.io/control-plane:NoSchedule-"]')
    cf = clusterfile.loads(text)
    conf = build_config(cf.cluster, Settings("v1.37.2", REG))
    # a master whose control-plane taint is removed: an explicit empty list
    assert conf.init["nodeRegistration"]["taints"] == []
    master = join_document(conf, cf.cluster.host("192.168.0.3"), token=TOKEN,
                           ca_cert_hashes=[HASH], certificate_key=CERT_KEY)
    assert master["kind"] == "JoinConfiguration"
    assert master["discovery"]["bootstrapToken"] == {
        "apiServerEndpoint": "apiserver.cluster.local:6443", "token": TOKEN,
        "caCertHashes": [HASH]}
    assert master["controlPlane"] == {
        "localAPIEndpoint": {"advertiseAddress": "192.168.0.3", "bindPort": 6443},
        "certificateKey": CERT_KEY}
    assert master["nodeRegistration"]["taints"] == []
    node = join_document(conf, cf.cluster.host("192.168.0.6"), token=TOKEN,
                         ca_cert_hashes=[HASH])
    assert "controlPlane" not in node
    assert node["nodeRegistration"]["taints"] == [
        {"key": "dedicated", "effect": "NoSchedule", "value": "gpu"}]
    assert node["nodeRegistration"]["kubeletExtraArgs"] == [
        {"name": "node-ip", "value": "192.168.0.6"}]
    # the templates are not changed by filling one in
    assert "token" not in conf.join_node["discovery"]["bootstrapToken"]
    with pytest.raises(UsageError, match="certificate key"):
        join_document(conf, cf.cluster.host("192.168.0.3"), token=TOKEN, ca_cert_hashes=[HASH])
    with pytest.raises(UsageError, match="CA certificate hash"):
        join_document(conf, cf.cluster.host("192.168.0.5"), token=TOKEN, ca_cert_hashes=[])


def test_user_join_document_is_merged() -> None:
    conf = _build(_cluster_text(extra="""---
apiVersion: kubeadm.k8s.io/v1beta3
kind: JoinConfiguration
nodeRegistration:
  kubeletExtraArgs: {max-pods: "80", node-ip: "10.0.0.1"}
"""))
    doc = join_document(conf, clusterfile.loads(_cluster_text()).cluster.host("192.168.0.5"),
                        token=TOKEN, ca_cert_hashes=[HASH])
    # the user's node-ip wins over the generated one (Clusterfile > defaults)
    assert doc["nodeRegistration"]["kubeletExtraArgs"] == [
        {"name": "node-ip", "value": "10.0.0.1"}, {"name": "max-pods", "value": "80"}]


# --------------------------------------------------------------------------- real kubeadm


def _kubeadm() -> str | None:
    for path in sorted(glob.glob("/var/cache/kbuild/kubernetes/*/bin/kubeadm"), reverse=True):
        if os.access(path, os.X_OK):
            return path
    return None


KUBEADM = _kubeadm()
needs_kubeadm = pytest.mark.skipif(
    KUBEADM is None,
    reason="kubeadm is not built yet (images/kubernetes/build-from-source.sh fills "
           "/var/cache/kbuild/kubernetes/<version>/bin)")


def _validate(path: Path) -> subprocess.CompletedProcess[str]:
    assert KUBEADM is not None
    return subprocess.run([KUBEADM, "config", "validate", "--config", str(path)],
                          capture_output=True, text=True, timeout=60)


@needs_kubeadm
@pytest.mark.parametrize(
    ("name", "extra", "image_yaml", "settings"),
    [
        ("defaults", "", None, {}),
        ("ipvs", "", None, {"proxy_mode": "ipvs"}),
        ("precedence-and-v1beta3", USER_DOCS, IMAGE_YAML, {}),
        ("v1beta3-everything", """---
apiVersion: kubeadm.k8s.io/v1beta3
kind: ClusterConfiguration
apiServer: {extraArgs: {audit-log-maxage: "30"}, timeoutForControlPlane: 6m0s}
controllerManager: {extraArgs: {node-cidr-mask-size: "24"}}
scheduler: {extraArgs: {v: "2"}}
etcd: {local: {extraArgs: {quota-backend-bytes: "8589934592"}}}
---
apiVersion: kubeadm.k8s.io/v1beta3
kind: InitConfiguration
nodeRegistration: {kubeletExtraArgs: {max-pods: "90"}}
---
apiVersion: kubeadm.k8s.io/v1beta3
kind: JoinConfiguration
discovery: {timeout: 4m0s}
nodeRegistration: {kubeletExtraArgs: {max-pods: "90"}}
""", None, {"ignore_preflight_errors": ("Swap", "SystemVerification")}),
    ],
)
def test_kubeadm_validates(tmp_path: Path, name: str, extra: str, image_yaml: str | None,
                           settings: dict[str, Any]) -> None:
    text = _cluster_text(extra=extra, taints='taints: ["team=a:PreferNoSchedule"]')
    conf = _build(text, image_yaml, **settings)
    cluster = clusterfile.loads(text).cluster
    files = {
        "init.yaml": conf.init_yaml(),
        "join-master.yaml": join_yaml(conf, cluster.host("192.168.0.3"), token=TOKEN,
                                      ca_cert_hashes=[HASH], certificate_key=CERT_KEY),
        "join-node.yaml": join_yaml(conf, cluster.host("192.168.0.5"), token=TOKEN,
                                    ca_cert_hashes=[HASH]),
    }
    for fname, content in files.items():
        path = tmp_path / fname
        path.write_text(content)
        out = _validate(path)
        assert out.returncode == 0, f"{name}/{fname}:\n{content}\n{out.stderr}"


@needs_kubeadm
def test_kubeadm_refuses_what_conversion_fixes(tmp_path: Path) -> None:
    """The raw v1beta3 input fails kubeadm, the converted output passes."""
    raw = tmp_path / "raw.yaml"
    raw.write_text("apiVersion: kubeadm.k8s.io/v1beta3\nkind: ClusterConfiguration\n"
                   "apiServer: {extraArgs: {audit-log-maxage: '30'}}\n")
    assert _validate(raw).returncode != 0
    conf = _build(_cluster_text(extra="---\n" + raw.read_text()))
    good = tmp_path / "good.yaml"
    good.write_text(conf.init_yaml())
    assert _validate(good).returncode == 0
    # and kubeadm is strict: an unknown field in any document fails
    bad = tmp_path / "bad.yaml"
    bad.write_text(conf.init_yaml().replace("failCgroupV1: false",
                                            "failCgroupV1: false\nnoSuchField: 1"))
    assert "noSuchField" in _validate(bad).stderr


@needs_kubeadm
def test_kubeadm_asks_the_embedded_registry_for_every_image(tmp_path: Path) -> None:
    conf = _build(_cluster_text())
    path = tmp_path / "init.yaml"
    path.write_text(conf.init_yaml())
    assert KUBEADM is not None
    out = subprocess.run([KUBEADM, "config", "images", "list", "--config", str(path)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    images = out.stdout.split()
    names = {i.rsplit(":", 1)[0] for i in images}
    assert all(i.startswith(REG + "/") for i in images), images
    # the registry layout keeps registry.k8s.io/coredns/coredns as coredns/coredns
    assert names >= {f"{REG}/kube-apiserver", f"{REG}/kube-controller-manager",
                     f"{REG}/kube-scheduler", f"{REG}/kube-proxy", f"{REG}/etcd",
                     f"{REG}/pause", f"{REG}/coredns/coredns"}
    assert f"{REG}/kube-apiserver:v1.37.2" in images


def _taints_of(text: str) -> tuple[Any, Any]:
    cf = clusterfile.loads(text)
    conf = build_config(cf.cluster, Settings("v1.37.2", REG), user_documents=cf.others)
    master = join_document(conf, cf.cluster.host("192.168.0.3"), token=TOKEN,
                           ca_cert_hashes=[HASH], certificate_key=CERT_KEY)
    return conf.init["nodeRegistration"]["taints"], master["nodeRegistration"]["taints"]


def test_taints_apply_in_order_to_kubeadm_default() -> None:
    cp = {"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}
    # an added taint keeps the default control-plane taint of a master
    init, master = _taints_of(_cluster_text(taints='taints: ["a=1:NoExecute"]'))
    assert init == master == [cp, {"key": "a", "effect": "NoExecute", "value": "1"}]
    # same key and effect: the later one replaces (kubectl taint --overwrite)
    init, _ = _taints_of(_cluster_text(
        taints='taints: ["node-role.kubernetes.io/control-plane=x:NoSchedule"]'))
    assert init == [{**cp, "value": "x"}]
    # `key-` removes every effect of the key; a removal of another effect keeps it
    init, _ = _taints_of(_cluster_text(
        taints='taints: ["a:NoExecute", "a:PreferNoSchedule", "node-role.kubernetes.io/'
               'control-plane:NoExecute-", "a-"]'))
    assert init == [cp]
    # removed and added again: the added one stays
    init, _ = _taints_of(_cluster_text(
        taints='taints: ["node-role.kubernetes.io/control-plane-", "b:NoSchedule"]'))
    assert init == [{"key": "b", "effect": "NoSchedule"}]


def test_host_taints_win_over_user_init_document() -> None:
    user = """---
apiVersion: kubeadm.k8s.io/v1beta4
kind: InitConfiguration
nodeRegistration:
  taints: [{key: user, effect: NoSchedule}]
"""
    text = _cluster_text(extra=user,
                         taints='taints: ["node-role.kubernetes.io/control-plane:NoSchedule-"]')
    init, master = _taints_of(text)
    assert init == [] and master == []
    # without host taints the user's document decides
    conf = _build(_cluster_text(extra=user))
    assert conf.init["nodeRegistration"]["taints"] == [{"key": "user", "effect": "NoSchedule"}]
