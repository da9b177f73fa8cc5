"""Clusterfile loading, validation and saving (data-driven)."""

# ruff: noqa: E501  (the tables hold whole YAML lines)

from __future__ import annotations

import os
import stat
import textwrap
from pathlib import Path

import pytest

from kbuild.errors import ClusterfileError
from kbuild.runtime import clusterfile as cf
from kbuild.runtime.state import StateDir

SEALER_EXAMPLE = """\
apiVersion: sealer.io/v2
kind: Cluster
metadata: {name: my-cluster}
spec:
  image: kubernetes:v1.30.2
  env: [PodCIDR=100.64.0.0/10, SvcCIDR=10.96.0.0/16]
  ssh: {user: root, passwd: "secret", port: "22", pk: /root/.ssh/id_rsa, pkPasswd: ""}
  hosts:
    - ips: [192.168.0.2, 192.168.0.3, 192.168.0.4]
      roles: [master]
      env: [Disk=/dev/vdb]
      taints: ["node-role.kubernetes.io/master:NoSchedule-"]
    - ips: [192.168.0.5-192.168.0.7]
      roles: [node]
      labels: {disk: ssd}
      ssh: {passwd: "other", port: "2222"}
  hostAliases: [{ip: 192.168.0.100, hostnames: [harbor.local]}]
  registry:
    localRegistry: {domain: sea.hub, port: 5000, ha: true, insecure: false, username: admin, password: "pw"}
  appNames: [calico, nginx]
  dataRoot: /var/lib/sealer/data
---
kind: Config
spec: {path: etc/values.yaml, appName: nginx, strategy: merge, data: "replicaCount: 2\\n"}
---
kind: Plugin
spec: {type: SHELL, action: pre-init-host, scope: "master|node", data: "echo hi\\n"}
---
apiVersion: kubeadm.k8s.io/v1beta3
kind: ClusterConfiguration
networking: {podSubnet: 100.64.0.0/10, serviceSubnet: 10.96.0.0/16}
"""


def cluster_doc(hosts: str, extra: str = "", ssh: str = "") -> str:
    """A Cluster document with the given hosts block (indented under spec)."""
    body = textwrap.indent(textwrap.dedent(hosts).strip("\n"), "  ")
    text = f"kind: Cluster\nmetadata: {{name: c1}}\nspec:\n  image: img:1\n{body}\n"
    if ssh:
        text += f"  ssh: {ssh}\n"
    if extra:
        text += textwrap.indent(textwrap.dedent(extra).strip("\n"), "  ") + "\n"
    return text


def test_sealer_example_loads() -> None:
    f = cf.loads(SEALER_EXAMPLE)
    c = f.cluster
    assert c.name == "my-cluster"
    assert c.image == "kubernetes:v1.30.2"
    assert [h.ip for h in c.all_hosts()] == [
        "192.168.0.2",
        "192.168.0.3",
        "192.168.0.4",
        "192.168.0.5",
        "192.168.0.6",
        "192.168.0.7",
    ]
    m0 = c.master0()
    assert m0.ip == "192.168.0.2"
    assert m0.env == {"PodCIDR": "100.64.0.0/10", "SvcCIDR": "10.96.0.0/16", "Disk": "/dev/vdb"}
    assert m0.ssh.passwd == "secret" and m0.ssh.port == 22 and m0.ssh.pk_passwd is None
    assert m0.taints[0] == cf.Taint("node-role.kubernetes.io/master", "", "NoSchedule", True)
    n = c.host("192.168.0.6")
    assert n.roles == ("node",)
    assert n.ssh.passwd == "other" and n.ssh.port == 2222 and n.ssh.user == "root"
    assert n.ssh.pk == "/root/.ssh/id_rsa"
    assert n.labels == {"disk": "ssd"}
    assert c.data_root == "/var/lib/sealer/data"
    assert c.app_names == ["calico", "nginx"]
    assert c.registry["localRegistry"]["domain"] == "sea.hub"
    assert c.host_aliases == [{"ip": "192.168.0.100", "hostnames": ["harbor.local"]}]
    assert f.configs[0].rootfs_path == "application/apps/nginx/etc/values.yaml"
    assert f.configs[0].strategy == "merge"
    assert f.plugins[0].action == "pre-init-host" and f.plugins[0].scope == ("master", "node")
    assert f.others == [
        {
            "apiVersion": "kubeadm.k8s.io/v1beta3",
            "kind": "ClusterConfiguration",
            "networking": {"podSubnet": "100.64.0.0/10", "serviceSubnet": "10.96.0.0/16"},
        }
    ]


def test_round_trip_is_stable() -> None:
    f = cf.loads(SEALER_EXAMPLE)
    text = cf.dumps(f)
    g = cf.loads(text)
    assert g == f
    assert cf.dumps(g) == text


@pytest.mark.parametrize(
    ("password_yaml", "expected"),
    [
        ("123456", "123456"),
        ("0123", "0123"),  # YAML 1.1 would read octal 83
        ("1e3", "1e3"),
        ("'007'", "007"),
        ('"yes"', "yes"),
        ("yes", "yes"),
        ("0x1F", "0x1F"),
        ("12_34", "12_34"),
    ],
)
def test_numeric_and_odd_passwords_are_kept_as_written(password_yaml: str, expected: str) -> None:
    text = cluster_doc(
        "hosts: [{ips: [10.0.0.1], roles: [master]}]", ssh=f"{{passwd: {password_yaml}}}"
    )
    f = cf.loads(text)
    assert f.cluster.master0().ssh.passwd == expected
    # and it survives a save/load
    assert cf.loads(cf.dumps(f)).cluster.master0().ssh.passwd == expected


@pytest.mark.parametrize(
    ("hosts", "fragments"),
    [
        (
            "hosts: [{ips: [10.0.0.1], roles: [boss]}]",
            ["document 1 (kind Cluster)", "spec.hosts[0].roles[0]", "unknown role", "'boss'"],
        ),
        (
            "hosts: [{ips: [10.0.0.1, 10.0.0.1], roles: [master]}]",
            ["spec.hosts[0].ips[1]", "duplicate IP", "'10.0.0.1'"],
        ),
        (
            "hosts: [{ips: [10.0.0.1], roles: [master]}, {ips: [10.0.0.0-10.0.0.2], roles: [node]}]",
            ["spec.hosts[1].ips[0]", "duplicate IP", "spec.hosts[0].ips[0]"],
        ),
        (
            "hosts: [{ips: [10.0.0.1], roles: [node]}]",
            ["spec.hosts", "no host has the master role"],
        ),
        (
            "hosts: [{ips: [10.0.0.300], roles: [master]}]",
            ["spec.hosts[0].ips[0]", "bad IP address", "'10.0.0.300'"],
        ),
        ("hosts: [{ips: [host.example], roles: [master]}]", ["bad IP address", "'host.example'"]),
        (
            "hosts: [{ips: [10.0.0.5-10.0.0.1], roles: [master]}]",
            ["bad IP range", "'10.0.0.5-10.0.0.1'"],
        ),
        ("hosts: [{ips: [10.0.0.1-fe80::1], roles: [master]}]", ["bad IP range"]),
        ("hosts: [{ips: [10.0.0.1-x], roles: [master]}]", ["bad IP range", "'10.0.0.1-x'"]),
        ("hosts: [{ips: [10.0.0.0-10.1.0.0], roles: [master]}]", ["IP range larger than"]),
        (
            "hosts: [{ips: [10.0.0.1], roles: [master], taints: [dedicated]}]",
            ["spec.hosts[0].taints[0]", "bad taint", "'dedicated'"],
        ),
        (
            "hosts: [{ips: [10.0.0.1], roles: [master], taints: ['a=b:Sometimes']}]",
            ["bad taint effect", "'a=b:Sometimes'"],
        ),
        (
            "hosts: [{ips: [10.0.0.1], roles: [master], taints: ['bad key!:NoSchedule']}]",
            ["bad taint key or value"],
        ),
        ("hosts: [{ips: [10.0.0.1], roles: []}]", ["spec.hosts[0].roles", "no roles"]),
        ("hosts: [{ips: [], roles: [master]}]", ["spec.hosts[0].ips", "no IPs"]),
        ("hosts: []", ["spec.hosts", "no hosts"]),
        (
            "hosts: [{ips: [10.0.0.1], roles: [master], colour: red}]",
            ["spec.hosts[0].colour", "unknown field"],
        ),
        (
            "hosts: [{ips: [10.0.0.1], roles: [master], ssh: {port: '70000'}}]",
            ["spec.hosts[0].ssh.port", "bad port", "'70000'"],
        ),
        ("hosts: [{ips: [10.0.0.1], roles: [master], ssh: {port: abc}}]", ["bad port"]),
        (
            "hosts: [{ips: [10.0.0.1], roles: [master], env: [NOEQUALS]}]",
            ["spec.hosts[0].env[0]", "expected KEY=VALUE"],
        ),
        (
            "hosts: [{ips: [10.0.0.1], roles: [master], env: ['1X=2']}]",
            ["bad variable name", "'1X'"],
        ),
        ("hosts: [{ips: [10.0.0.1], roles: [master], labels: {'a b': c}}]", ["bad label key"]),
        ("hosts: [{ips: [10.0.0.1], roles: [master], labels: {a: 'x y'}}]", ["bad label value"]),
        ("hosts: {ips: [10.0.0.1]}", ["spec.hosts", "expected a list"]),
        (
            "hosts: [{ips: [10.0.0.1], roles: [master]}]\ndataRoot: relative/dir",
            ["spec.dataRoot", "absolute path"],
        ),
        ("hosts: [{ips: [10.0.0.1], roles: [master]}]\ndataRoot: /var/../etc", ["spec.dataRoot"]),
        (
            "hosts: [{ips: [10.0.0.1], roles: [master]}]\nimages: [x]",
            ["spec.images", "unknown field"],
        ),
        (
            "hosts: [{ips: [10.0.0.1], roles: [master]}]\nhostAliases: [{ip: nope, hostnames: [a]}]",
            ["spec.hostAliases[0].ip", "bad IP address"],
        ),
        (
            "hosts: [{ips: [10.0.0.1], roles: [master]}]\nhostAliases: [{ip: 10.0.0.9}]",
            ["spec.hostAliases[0].hostnames", "no hostnames"],
        ),
    ],
)
def test_cluster_errors_name_document_field_and_value(hosts: str, fragments: list[str]) -> None:
    with pytest.raises(ClusterfileError) as info:
        cf.loads(cluster_doc(hosts), source="cf.yaml")
    message = str(info.value)
    assert message.startswith("cf.yaml: ")
    for fragment in fragments:
        assert fragment in message, message


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        (
            "kind: Cluster\nspec: {hosts: [{ips: [10.0.0.1], roles: [master]}]}",
            ["spec.image", "missing"],
        ),
        (
            "kind: Cluster\nmetadata: {name: Bad_Name}\nspec: {image: i, hosts: [{ips: [10.0.0.1], roles: [master]}]}",
            ["metadata.name", "bad cluster name"],
        ),
        (
            "kind: Cluster\nmetadata: {name: layers}\nspec: {image: i, hosts: [{ips: [10.0.0.1], roles: [master]}]}",
            ["metadata.name", "'layers' is reserved"],
        ),
        ("kind: Config\nspec: {path: a}\n", ["no document of kind Cluster"]),
        ("a: [unclosed\n", ["cf.yaml:", "not valid YAML"]),
        ("- just\n- a list\n", ["document 1", "expected a mapping"]),
        ("apiVersion: v1\nmetadata: {}\n", ["document 1", "kind", "missing"]),
        (
            "apiVersion: other.io/v1\nkind: Cluster\nspec: {}\n",
            ["unsupported apiVersion", "'other.io/v1'"],
        ),
    ],
)
def test_document_level_errors(text: str, fragments: list[str]) -> None:
    with pytest.raises(ClusterfileError) as info:
        cf.loads(text, source="cf.yaml")
    for fragment in fragments:
        assert fragment in str(info.value), str(info.value)


GOOD = cluster_doc("hosts: [{ips: [10.0.0.1], roles: [master]}]")


@pytest.mark.parametrize(
    ("doc", "fragments"),
    [
        ("kind: Config\nspec: {data: x}", ["document 2 (kind Config)", "spec.path", "missing"]),
        ("kind: Config\nspec: {path: /etc/passwd, data: x}", ["spec.path", "relative"]),
        ("kind: Config\nspec: {path: ../x, data: x}", ["spec.path"]),
        (
            "kind: Config\nspec: {path: a.yaml, strategy: append, data: x}",
            ["spec.strategy", "'append'"],
        ),
        (
            "kind: Config\nspec: {path: a.yaml, strategy: merge, data: 'a: [b'}",
            ["spec.data", "not YAML"],
        ),
        (
            "kind: Plugin\nspec: {action: pre-init-host, data: 'x'}\n---\nkind: Plugin\nspec: {action: pre-boot, data: x}",
            ["document 3 (kind Plugin)", "spec.action", "'pre-boot'"],
        ),
        (
            "kind: Plugin\nspec: {type: GOLANG, action: pre-install, data: x}",
            ["spec.type", "'GOLANG'"],
        ),
        (
            "kind: Plugin\nspec: {action: pre-install, scope: 'master|etcd', data: x}",
            ["spec.scope", "'etcd'"],
        ),
        ("kind: Plugin\nspec: {action: pre-install}", ["spec.data", "missing"]),
        (
            "kind: Cluster\nspec: {image: x, hosts: [{ips: [10.0.0.2], roles: [master]}]}",
            ["a second Cluster"],
        ),
    ],
)
def test_config_and_plugin_errors(doc: str, fragments: list[str]) -> None:
    with pytest.raises(ClusterfileError) as info:
        cf.loads(GOOD + "---\n" + doc, source="cf.yaml")
    for fragment in fragments:
        assert fragment in str(info.value), str(info.value)


@pytest.mark.parametrize(
    ("taint", "expected"),
    [
        ("k=v:NoSchedule", cf.Taint("k", "v", "NoSchedule")),
        ("k:NoExecute", cf.Taint("k", "", "NoExecute")),
        (
            "example.com/k=v:PreferNoSchedule-",
            cf.Taint("example.com/k", "v", "PreferNoSchedule", True),
        ),
        ("k-", cf.Taint("k", "", "", True)),
    ],
)
def test_taints(taint: str, expected: cf.Taint) -> None:
    f = cf.loads(cluster_doc(f"hosts: [{{ips: [10.0.0.1], roles: [master], taints: ['{taint}']}}]"))
    assert f.cluster.master0().taints == (expected,)
    assert str(expected) == taint


@pytest.mark.parametrize(
    ("spec", "ips"),
    [
        ("10.0.0.1", ["10.0.0.1"]),
        ("10.0.0.254-10.0.1.1", ["10.0.0.254", "10.0.0.255", "10.0.1.0", "10.0.1.1"]),
        ("10.0.0.3-10.0.0.3", ["10.0.0.3"]),
        ("fd00::1-fd00::3", ["fd00::1", "fd00::2", "fd00::3"]),
        (" 10.0.0.9 ", ["10.0.0.9"]),
    ],
)
def test_ip_ranges(spec: str, ips: list[str]) -> None:
    f = cf.loads(cluster_doc(f"hosts: [{{ips: ['{spec}'], roles: [master]}}]"))
    assert [h.ip for h in f.cluster.all_hosts()] == ips


def test_host_ssh_and_env_override_cluster_ones() -> None:
    text = cluster_doc(
        """
        hosts:
          - {ips: [10.0.0.1], roles: [master], ssh: {user: admin, port: 2222}, env: [A=host, C=3]}
          - {ips: [10.0.0.2], roles: [node]}
        """,
        extra="env: [A=cluster, B=2]",
        ssh="{user: root, passwd: 42, port: 22, pk: /k, pkPasswd: 7}",
    )
    c = cf.loads(text).cluster
    m, n = c.host("10.0.0.1"), c.host("10.0.0.2")
    assert m.ssh == cf.SSH(user="admin", passwd="42", port=2222, pk="/k", pk_passwd="7")
    assert n.ssh == cf.SSH(user="root", passwd="42", port=22, pk="/k", pk_passwd="7")
    assert dict(m.env) == {"A": "host", "B": "2", "C": "3"}
    assert dict(n.env) == {"A": "cluster", "B": "2"}


def test_masters_come_first_whatever_the_file_order() -> None:
    text = cluster_doc(
        """
        hosts:
          - {ips: [10.0.0.9], roles: [node]}
          - {ips: [10.0.0.2, 10.0.0.1], roles: [master, node]}
        """
    )
    c = cf.loads(text).cluster
    assert [h.ip for h in c.all_hosts()] == ["10.0.0.2", "10.0.0.1", "10.0.0.9"]
    assert c.master0().ip == "10.0.0.2"


def test_secrets_never_in_errors_or_repr() -> None:
    with pytest.raises(ClusterfileError) as info:
        cf.loads(
            cluster_doc(
                "hosts: [{ips: [10.0.0.1], roles: [master]}]", ssh="{passwd: [hunter2secret]}"
            )
        )
    assert "hunter2secret" not in str(info.value)
    f = cf.loads(
        cluster_doc("hosts: [{ips: [10.0.0.1], roles: [master]}]", ssh="{passwd: hunter2secret}")
    )
    assert "hunter2secret" not in repr(f)
    assert "hunter2secret" not in repr(f.cluster.all_hosts())


@pytest.mark.parametrize(
    "flags",
    [
        {"masters": ["10.0.0.1"], "passwd": "x"},
        {
            "masters": ["10.0.0.1", "10.0.0.2"],
            "nodes": ["10.0.0.3"],
            "passwd": "123",
            "port": 2222,
            "user": "deploy",
            "env": ["A=1", "B=x=y"],
            "cluster_name": "prod",
        },
        {
            "masters": ["10.0.0.1"],
            "pk": "/root/.ssh/id_ed25519",
            "pk_passwd": "0777",
            "cmds": ["echo hi"],
            "apps": ["web"],
        },
    ],
)
def test_flags_save_load_equal(tmp_path: Path, flags: dict) -> None:  # type: ignore[type-arg]
    built = cf.from_flags("hello:1", **flags)
    path = tmp_path / "Clusterfile"
    cf.save(built, path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = cf.load(path)
    assert loaded == built
    # and the flags' Clusterfile equals one written by hand
    ssh_bits = []
    if "user" in flags:
        ssh_bits.append(f"user: {flags['user']}")
    if "passwd" in flags:
        ssh_bits.append(f"passwd: {flags['passwd']}")
    if "port" in flags:
        ssh_bits.append(f"port: {flags['port']}")
    if "pk" in flags:
        ssh_bits.append(f"pk: {flags['pk']}")
    if "pk_passwd" in flags:
        ssh_bits.append(f"pkPasswd: {flags['pk_passwd']}")
    hosts = [f"{{ips: [{', '.join(flags['masters'])}], roles: [master]}}"]
    if flags.get("nodes"):
        hosts.append(f"{{ips: [{', '.join(flags['nodes'])}], roles: [node]}}")
    text = (
        f"apiVersion: sealer.io/v2\nkind: Cluster\nmetadata: {{name: {flags.get('cluster_name', 'my-cluster')}}}\n"
        f"spec:\n  image: hello:1\n  ssh: {{{', '.join(ssh_bits)}}}\n  hosts: [{', '.join(hosts)}]\n"
    )
    if flags.get("env"):
        text += "  env: [" + ", ".join(f"'{e}'" for e in flags["env"]) + "]\n"
    if flags.get("cmds"):
        text += "  cmds: [" + ", ".join(f"'{e}'" for e in flags["cmds"]) + "]\n"
    if flags.get("apps"):
        text += "  appNames: [" + ", ".join(flags["apps"]) + "]\n"
    assert cf.loads(text) == built


def test_flag_ip_lists_with_ranges() -> None:
    assert cf.split_ip_list("10.0.0.1,10.0.0.3-10.0.0.4", what="nodes") == [
        "10.0.0.1",
        "10.0.0.3",
        "10.0.0.4",
    ]
    with pytest.raises(ClusterfileError, match=r"--nodes.*bad IP address.*'x'"):
        cf.split_ip_list("10.0.0.1,x", what="nodes")


def test_flags_are_validated_like_a_file() -> None:
    with pytest.raises(ClusterfileError, match=r"flags.*no host has the master role"):
        cf.from_flags("i:1", masters=[], nodes=["10.0.0.1"])
    with pytest.raises(ClusterfileError, match="duplicate IP"):
        cf.from_flags("i:1", masters=["10.0.0.1"], nodes=["10.0.0.1"])
    with pytest.raises(ClusterfileError, match="expected KEY=VALUE"):
        cf.from_flags("i:1", masters=["10.0.0.1"], env=["novalue"])


def test_add_and_remove_hosts() -> None:
    f = cf.from_flags("i:1", masters=["10.0.0.1"], nodes=["10.0.0.2"], passwd="p")
    g = cf.add_hosts(f, ["10.0.0.3"], "node")
    assert [h.ip for h in g.cluster.all_hosts()] == ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
    assert g.cluster.host("10.0.0.3").ssh.passwd == "p"
    with pytest.raises(ClusterfileError, match="duplicate IP"):
        cf.add_hosts(g, ["10.0.0.2"], "node")
    h = cf.remove_hosts(g, ["10.0.0.2"])
    assert [x.ip for x in h.cluster.all_hosts()] == ["10.0.0.1", "10.0.0.3"]
    with pytest.raises(ClusterfileError, match="no host has the master role"):
        cf.remove_hosts(h, ["10.0.0.1"])


def test_state_dir_modes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KBUILD_STATE_DIR", str(tmp_path / "st"))
    sd = StateDir("c1")
    f = cf.from_flags("i:1", masters=["10.0.0.1"], passwd="pw")
    sd.save_clusterfile(f)
    assert stat.S_IMODE(os.stat(sd.path).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(sd.clusterfile_path).st_mode) == 0o600
    assert sd.load_clusterfile() == f
    assert sd.path == tmp_path / "st" / "c1"
