"""The Kubernetes driver: detection, cluster PKI, generated host files, redaction.

The generated kubeadm files are also checked by the real kubeadm
(``kubeadm config validate`` and ``config images list``) when the cached
binaries are there.
"""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest
import yaml

from kbuild.errors import ClusterError
from kbuild.runtime import clusterfile as cfmod
from kbuild.runtime.drivers.kubernetes import KubernetesDriver, files, ha, kubectl, pki
from kbuild.runtime.drivers.kubernetes.pki import cluster_pki
from kbuild.runtime.executor import FileSpec, Result
from kbuild.runtime.image import ImageInfo

K8S = "v1.37.2"
CACHE = Path(os.environ.get("KBUILD_K8S_CACHE", "/var/cache/kbuild/kubernetes"))
KUBEADM = CACHE / K8S / "bin/kubeadm"

CF = """apiVersion: sealer.io/v2
kind: Cluster
metadata: {name: kt}
spec:
  image: kubernetes:v1.37.2
  ssh: {passwd: s3cret-pw, pkPasswd: s3cret-pp}
  env: [SvcCIDR=10.100.0.0/16]
  hosts:
  - {ips: [10.0.0.2], roles: [master]}
  - {ips: [10.0.0.3], roles: [node], labels: {disk: ssd}, ssh: {passwd: other-pw}}
---
apiVersion: kubeadm.k8s.io/v1beta4
kind: ClusterConfiguration
apiServer: {certSANs: [k8s.example.com]}
"""


def image(labels: dict[str, str] | None = None) -> ImageInfo:
    return ImageInfo(
        ref="kubernetes:v1.37.2", manifest_digest="sha256:" + "0" * 64, os="linux",
        arch="amd64",
        env={"PodCIDR": "10.244.0.0/16", "SvcCIDR": "10.96.0.0/22", "CgroupDriver": "cgroupfs"},
        labels={files.LABEL: K8S, files.PAUSE_LABEL: "3.10.2"} if labels is None else labels,
        layers=[], apps={}, launch=None, cmds=None, cmd=[],
    )  # fmt: skip


def test_detection() -> None:
    assert KubernetesDriver.claims(image().labels)
    assert not KubernetesDriver.claims(image({}).labels)
    assert files.kubernetes_version(image()) == K8S
    with pytest.raises(ClusterError, match="not a version"):
        files.kubernetes_version(image({files.LABEL: "latest"}))


def test_cluster_pki_made_once_registry_cert_per_host(tmp_path: Path) -> None:
    cf = cfmod.loads(CF)
    first = cluster_pki(tmp_path, cf.cluster)
    m0 = first.registry("sea.hub", "10.0.0.2")
    d = tmp_path / "pki"
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    for name in ("ca.key", "registry-10.0.0.2.key"):
        assert stat.S_IMODE((d / name).stat().st_mode) == 0o600
    names, ips = pki.san_names(m0)
    assert "sea.hub" in names and set(ips) == {"10.0.0.2", "127.0.0.1"}
    n1 = first.registry("sea.hub", "10.0.0.3")
    assert "10.0.0.2" not in pki.san_names(n1)[1]
    again = cluster_pki(tmp_path, cf.cluster)
    assert again.ca.cert_pem == first.ca.cert_pem
    assert again.registry("sea.hub", "10.0.0.2").cert_pem == m0.cert_pem
    # another registry domain: the certificate is issued again, by the same CA
    other = again.registry("hub.example", "10.0.0.2")
    assert other.cert_pem != m0.cert_pem and "hub.example" in pki.san_names(other)[0]
    (tmp_path / "kubeconfig").write_text("x")
    kubectl.forget(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def _data(f: bytes | FileSpec) -> bytes:
    return f.data if isinstance(f, FileSpec) else f


Files = dict[str, bytes | FileSpec]


def _files(tmp_path: Path) -> tuple[Files, Files, bytes]:
    cf = cfmod.loads(CF)
    p = cluster_pki(tmp_path, cf.cluster)
    config = files.kubeadm_config(cf, image(), None)
    m0, n1 = (
        files.host_files(cf, cf.cluster.host(ip), image(), p.ca.cert_pem, rootfs="/d/kt/rootfs",
                        containerd_root="/d/kt/containerd", config=config)
        for ip in ("10.0.0.2", "10.0.0.3")
    )  # fmt: skip
    return m0, n1, p.ca.cert_pem


def test_host_files(tmp_path: Path) -> None:
    m0, n1, ca = _files(tmp_path)
    assert "etc/kbuild/kubeadm-init.yaml" in m0 and "etc/kbuild/kubeadm-join.yaml" not in m0
    assert "etc/kbuild/kubeadm-join.yaml" in n1 and "etc/kbuild/kubeadm-init.yaml" not in n1
    init, joined = m0["etc/kbuild/kubeadm-init.yaml"], n1["etc/kbuild/kubeadm-join.yaml"]
    # they may hold bootstrap tokens and a certificate key
    assert isinstance(init, FileSpec) and isinstance(joined, FileSpec)
    assert init.mode == joined.mode == 0o600
    docs = {d["kind"]: d for d in yaml.safe_load_all(init.data)}
    cluster = docs["ClusterConfiguration"]
    # image ENV under Clusterfile env; the Clusterfile's kubeadm document merged
    assert cluster["networking"]["podSubnet"] == "10.244.0.0/16"
    assert cluster["networking"]["serviceSubnet"] == "10.100.0.0/16"
    assert cluster["imageRepository"] == "sea.hub:5000"
    assert "k8s.example.com" in cluster["apiServer"]["certSANs"]
    assert docs["KubeletConfiguration"]["cgroupDriver"] == "cgroupfs"
    assert docs["KubeletConfiguration"]["failCgroupV1"] is False
    assert docs["InitConfiguration"]["localAPIEndpoint"]["advertiseAddress"] == "10.0.0.2"
    join = yaml.safe_load(joined.data)
    assert join["discovery"]["bootstrapToken"]["token"] == files.JOIN_TOKEN
    assert "controlPlane" not in join
    toml = m0["etc/kbuild/containerd/config.toml"].decode()
    assert "restrict_oom_score_adj = true" in toml
    assert 'root = "/d/kt/containerd"' in toml
    assert 'sandbox = "sea.hub:5000/pause:3.10.2"' in toml
    assert 'BinaryName = "/d/kt/rootfs/bin/runc"' in toml
    assert 'bin_dirs = ["/d/kt/rootfs/bin/cni"]' in toml
    assert n1["etc/kbuild/containerd/certs.d/sea.hub:5000/ca.crt"] == ca
    default = n1["etc/kbuild/containerd/certs.d/_default/hosts.toml"].decode()
    assert 'server = "https://sea.hub:5000"' in default
    env = m0["etc/kbuild/kube.env"].decode()
    assert "REGISTRY=sea.hub:5000\n" in env and "POD_CIDR=10.244.0.0/16\n" in env
    # nodes reach the masters through the VIP agent; every host pulls from itself first
    assert n1[ha.VIP_BACKENDS].decode().splitlines()[1:] == ["10.0.0.2"]
    assert ha.VIP_BACKENDS not in m0
    assert 'server = "https://10.0.0.2:5000"' not in str(m0)
    assert "10.0.0.2:5000" in str(n1["etc/kbuild/containerd/certs.d/sea.hub:5000/hosts.toml"])


def test_secret_files_modes(tmp_path: Path) -> None:
    cf = cfmod.loads(CF)
    pair = cluster_pki(tmp_path, cf.cluster).registry("sea.hub", "10.0.0.3")
    secret = files.registry_files("/d/kt", pair, "/d/kt/rootfs", 5000)
    assert secret["/d/kt/pki/registry.key"] == FileSpec(pair.key_pem, 0o600)
    config = yaml.safe_load(secret["/d/kt/pki/registry.yml"].data)
    assert config["storage"]["filesystem"]["rootdirectory"] == "/d/kt/rootfs/registry"
    assert config["http"]["tls"]["key"] == "/d/kt/pki/registry.key"


def test_redacted_clusterfile() -> None:
    text = kubectl.redacted_clusterfile(cfmod.loads(CF))
    for secret in ("s3cret-pw", "s3cret-pp", "other-pw"):
        assert secret not in text
    assert "10.0.0.3" in text and "disk: ssd" in text


@pytest.mark.skipif(not KUBEADM.exists(), reason="kubeadm binary not built (build-from-source.sh)")
def test_real_kubeadm_accepts_the_files(tmp_path: Path) -> None:
    m0, n1, _ = _files(tmp_path)
    init = tmp_path / "init.yaml"
    init.write_bytes(_data(m0["etc/kbuild/kubeadm-init.yaml"]))
    subprocess.run([str(KUBEADM), "config", "validate", "--config", str(init)],
                   check=True, capture_output=True, timeout=60)  # fmt: skip
    images = subprocess.run(
        [str(KUBEADM), "config", "images", "list", "--config", str(init)],
        check=True, capture_output=True, text=True, timeout=60,
    ).stdout.split()  # fmt: skip
    assert "sea.hub:5000/kube-apiserver:v1.37.2" in images
    assert "sea.hub:5000/coredns/coredns:v1.14.6" in images
    assert "sea.hub:5000/pause:3.10.2" in images
    join = tmp_path / "join.yaml"
    text = _data(n1["etc/kbuild/kubeadm-join.yaml"]).decode()
    text = text.replace(files.JOIN_TOKEN, "abcdef.0123456789abcdef").replace(
        files.JOIN_CA_HASH, "sha256:" + "a" * 64)
    join.write_text(text)
    subprocess.run([str(KUBEADM), "config", "validate", "--config", str(join)],
                   check=True, capture_output=True, timeout=60)  # fmt: skip


class _LateNodes:
    """master0 as seen right after ``kubeadm join``: the new Node object
    registers a moment later (a race the real cluster shows only sometimes;
    the e2e test covers the real path)."""

    def __init__(self, late_ip: str, after_calls: int) -> None:
        self.late_ip = late_ip
        self.after_calls = after_calls
        self.lists = 0
        self.labelled: list[str] = []

    def run(self, cmd: str, **_: object) -> Result:
        if "get nodes" in cmd:
            self.lists += 1
            lines = ["h0 10.0.0.2"]
            if self.lists > self.after_calls:
                lines.append(f"h1 {self.late_ip}")
            return Result(0, "\n".join(lines) + "\n", "")
        self.labelled.append(cmd)
        return Result(0, "", "")


def _labelled_hosts() -> list[cfmod.Host]:
    cf = cfmod.loads(
        "apiVersion: sealer.io/v2\nkind: Cluster\nmetadata: {name: c}\n"
        "spec:\n  image: kubernetes:v1.37.2\n  ssh: {passwd: x}\n  hosts:\n"
        "  - {ips: [10.0.0.2], roles: [master]}\n"
        "  - {ips: [10.0.0.3], roles: [node], labels: {disk: ssd}}\n"
    )
    return cf.cluster.all_hosts()


def test_labels_wait_for_a_node_that_registers_late() -> None:
    conn = _LateNodes("10.0.0.3", after_calls=2)
    assert kubectl.apply_labels(conn, _labelled_hosts(), timeout=30) == ["h1"]  # type: ignore[arg-type]
    assert conn.lists == 3
    assert len(conn.labelled) == 1 and "label node h1 disk=ssd --overwrite" in conn.labelled[0]


def test_labels_give_up_on_a_node_that_never_registers() -> None:
    conn = _LateNodes("10.0.0.9", after_calls=0)
    with pytest.raises(ClusterError, match=r"10\.0\.0\.3: no Kubernetes node with this InternalIP"):
        kubectl.apply_labels(conn, _labelled_hosts(), timeout=3)  # type: ignore[arg-type]
    assert conn.labelled == []
