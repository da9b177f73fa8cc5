"""End to end: backup, restore and certificates of a Kubernetes cluster on
podman hosts (1 master + 1 node, no route out).

- the Clusterfile asks for an etcd snapshot every 10 s, 2 kept: the master
  keeps the newest 2, ``backup --from-host`` takes one of them;
- a namespace with a ConfigMap and a Deployment; ``kbuild backup`` sealed
  with a passphrase (a file) → a 0600 archive that does not show the CA key;
- the namespace deleted; a truncated copy, a wrong passphrase and a backup
  of another cluster (another CA) are refused, and nothing changed (a
  ConfigMap made after the backup is still there, no new etcd data dir);
- ``kbuild restore`` (passphrase from the environment) → the namespace, the
  ConfigMap and the Deployment's pod Running are back, the ConfigMap made
  after the backup is gone, both nodes Ready, the control plane answers;
- ``kbuild cert check --format json`` lists kubeadm's certificates on the
  master, the kubelet's on the node, kbuild's CA here; ``cert renew`` moves
  every NotAfter of the master forward, the cluster answers and the
  kubeconfig here works; ``cert --alt-names`` adds names the API server's
  certificate then carries;
- ``delete --all``, then ``kbuild restore -f Clusterfile`` onto the hosts
  (clean, at the same addresses) → both nodes Ready, the ConfigMap back,
  kubeadm's CA the same, a kubeconfig of the old cluster still works;
- the passphrase and the SSH password appear in no process list, output or
  journal.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kbuild.runtime.drivers.kubernetes import archive
from kbuild.runtime.drivers.kubernetes.pki import KeyPair, generate_ca, san_names
from tests.fixtures.hosts import HostSet
from tests.kubernetes.helpers import (
    BASE,
    CP_TAINT,
    DATA_ROOT,
    KUBECTL,
    PAUSE,
    STORE,
    build_base,
    kubectl,
    pods,
    q,
    ready_nodes,
    wait,
)
from tests.kubernetes.secrets import Watch
from tests.runtime.e2e_helpers import Env, kbuild

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CLUSTER = "k8s-backup"
NS = "keep"
DEPLOY = f"""apiVersion: v1
kind: Namespace
metadata: {{name: {NS}}}
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: settings, namespace: {NS}}}
data: {{colour: teal, size: "42"}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: sleeper, namespace: {NS}}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: sleeper}}}}
  template:
    metadata: {{labels: {{app: sleeper}}}}
    spec:
      containers:
      - {{name: pause, image: "registry.k8s.io/pause:{PAUSE}"}}
"""


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    """The base image (build.sh, cached) in STORE."""
    base = tmp_path_factory.mktemp("k8s-backup")
    build_base()
    yield Env(root=STORE, state=base / "state")


@pytest.fixture(scope="module")
def hosts(podman_hosts: Callable[..., HostSet]) -> HostSet:
    return podman_hosts(2, internal=True)


def _foreign(good: Path, passphrase: str, out: Path, tmp: Path) -> None:
    """The same backup with another cluster CA (as a backup of another cluster has)."""
    unpacked = tmp / "unpacked"
    m = archive.read_archive(good, unpacked, passphrase=passphrase)
    ca = generate_ca("another cluster's CA")
    (unpacked / "kubeadm/pki/ca.crt").write_bytes(ca.cert_pem)
    (unpacked / "kubeadm/pki/ca.key").write_bytes(ca.key_pem)
    m.ca_sha256 = hashlib.sha256(ca.cert_pem).hexdigest()
    files = {n: unpacked / n for n in m.members}
    archive.write_archive(out, m, files, passphrase=passphrase)


def test_backup_restore_certs(env: Env, hosts: HostSet, tmp_path: Path) -> None:
    h0, h1 = hosts
    m0 = hosts.connect(h0)
    watch = Watch([h.container for h in hosts])
    passphrase = secrets.token_urlsafe(24)
    pass_file = tmp_path / "passphrase"
    pass_file.write_text(passphrase + "\n")

    def kb(*args: str, extra: dict[str, str] | None = None, check: bool = True,
           timeout: float = 600) -> subprocess.CompletedProcess[str]:  # fmt: skip
        with watch.processes():
            proc = subprocess.run(
                [sys.executable, "-m", "kbuild.cli.main", *args],
                env={**env.vars(), **(extra or {})}, capture_output=True, text=True,
                timeout=timeout, check=False,
            )  # fmt: skip
        watch.texts.append((f"kbuild {args[0]} output", proc.stdout + proc.stderr))
        if check:
            assert proc.returncode == 0, f"kbuild {args}:\n{proc.stdout}\n{proc.stderr}"
        return proc

    cf = tmp_path / "Clusterfile"
    cf.write_text(
        "apiVersion: sealer.io/v2\nkind: Cluster\n"
        f"metadata: {{name: {CLUSTER}}}\n"
        f"spec:\n  image: {BASE}\n  ssh: {{passwd: {h0.root_password}}}\n"
        f"  dataRoot: {DATA_ROOT}\n"
        "  env: [PodCIDR=10.244.0.0/16, 'EtcdSnapshotSchedule=*:*:0/10', EtcdSnapshotRetention=2]\n"
        "  hosts:\n"
        f"  - {{ips: [{h0.ip}], roles: [master], taints: [{CP_TAINT}:NoSchedule-]}}\n"
        f"  - {{ips: [{h1.ip}], roles: [node]}}\n"
    )
    try:
        started = time.monotonic()
        kb("run", "-f", str(cf), "--progress", "plain", timeout=900)
        wait("both nodes Ready", lambda: ready_nodes(m0) == {h0.ip: True, h1.ip: True}, 240)
        print(f"run → Ready in {time.monotonic() - started:.0f}s")
        m0.run("kubectl --kubeconfig /etc/kubernetes/admin.conf apply -f -", stdin=DEPLOY)
        wait("the sleeper Running", lambda: [p["phase"] for p in pods(m0, "app=sleeper", NS)]
             == ["Running"], 180)  # fmt: skip

        # -------------------------------------------------- scheduled snapshots
        def snapshots() -> list[str]:
            return m0.run("ls -1 /var/lib/kbuild-backup/snapshots/ | grep '^snapshot-'",
                          check=False).stdout.split()  # fmt: skip

        wait("two scheduled snapshots", lambda: len(snapshots()) == 2, 60, step=2)
        first = snapshots()
        wait("the oldest snapshot replaced", lambda: snapshots()[0] != first[0], 60, step=2)
        assert len(snapshots()) == 2
        from_host = tmp_path / "from-host.kbk"
        kb("backup", "--cluster-name", CLUSTER, "--from-host", "-o", str(from_host),
           "--progress", "plain")  # fmt: skip
        on_host = {m0.run(f"sha256sum /var/lib/kbuild-backup/snapshots/{n}").stdout.split()[0]
                   for n in snapshots()}  # fmt: skip
        taken = archive.read_archive(from_host, tmp_path / "from-host", passphrase=None)
        assert taken.members["etcd/snapshot.db"].sha256 in on_host

        # -------------------------------------------------- backup
        out = tmp_path / "cluster.kbk"
        t = time.monotonic()
        kb("backup", "--cluster-name", CLUSTER, "-o", str(out), "--passphrase-file",
           str(pass_file), "--progress", "plain")  # fmt: skip
        print(f"backup in {time.monotonic() - t:.1f}s, {out.stat().st_size} bytes")
        assert stat.S_IMODE(out.stat().st_mode) == 0o600
        ca_key = m0.run("cat /etc/kubernetes/pki/ca.key").stdout.encode()
        assert ca_key.strip() and ca_key.strip() not in out.read_bytes()
        unpacked = tmp_path / "check"
        m = archive.read_archive(out, unpacked, passphrase=passphrase)
        assert m.cluster == CLUSTER and m.kubernetes == "v1.37.2"
        assert (unpacked / "kubeadm/pki/ca.key").read_bytes() == ca_key
        assert h0.root_password not in (unpacked / "kbuild/Clusterfile").read_text()
        assert {"etcd/snapshot.db", "kubeadm/ClusterConfiguration.yaml", "kbuild/state.json",
                "kbuild/pki/ca.key", "kubeadm/pki/sa.key"} <= set(m.members)  # fmt: skip

        # -------------------------------------------------- loss, refusals
        kubectl(m0, f"delete namespace {NS} --wait=true --timeout=120s")
        kubectl(m0, "create configmap after-backup -n default --from-literal=x=1")
        truncated = tmp_path / "truncated.kbk"
        truncated.write_bytes(out.read_bytes()[: out.stat().st_size // 2])
        foreign = tmp_path / "foreign.kbk"
        _foreign(out, passphrase, foreign, tmp_path)
        etcd_before = m0.run("ls -i -d /var/lib/etcd/member").stdout
        for bad, extra, why in (
            (truncated, {"KBUILD_BACKUP_PASSPHRASE": passphrase}, "truncated"),
            (out, {"KBUILD_BACKUP_PASSPHRASE": "not-the-passphrase"}, "wrong passphrase"),
            (out, {}, "sealed with a passphrase"),
            (foreign, {"KBUILD_BACKUP_PASSPHRASE": passphrase}, "another CA"),
        ):
            proc = kb("restore", "--cluster-name", CLUSTER, str(bad), "--progress", "plain",
                      extra=extra, check=False)  # fmt: skip
            assert proc.returncode != 0 and why in proc.stderr, (why, proc.stderr)
            assert str(bad) in proc.stderr
        assert m0.run("ls -i -d /var/lib/etcd/member").stdout == etcd_before
        assert m0.run("ls -d /var/lib/etcd.kbuild-restore /var/lib/kbuild-backup/restore.db",
                      check=False).stdout.strip() == ""  # fmt: skip
        assert "after-backup" in kubectl(m0, "get configmap -n default")

        # -------------------------------------------------- restore
        t = time.monotonic()
        kb("restore", "--cluster-name", CLUSTER, str(out), "--progress", "plain",
           extra={"KBUILD_BACKUP_PASSPHRASE": passphrase})  # fmt: skip
        print(f"restore in {time.monotonic() - t:.1f}s")
        data = json.loads(kubectl(m0, f"-n {NS} get configmap settings -o json"))["data"]
        assert data == {"colour": "teal", "size": "42"}
        assert "after-backup" not in kubectl(m0, "get configmap -n default")
        wait("both nodes Ready after the restore",
             lambda: ready_nodes(m0) == {h0.ip: True, h1.ip: True}, 180)  # fmt: skip
        wait("the sleeper Running after the restore",
             lambda: [p["phase"] for p in pods(m0, "app=sleeper", NS)] == ["Running"], 180)
        assert m0.run("ls -d /var/lib/etcd.kbuild-before-restore /var/lib/kbuild-backup/restore.db",
                      check=False).stdout.strip() == ""  # fmt: skip

        # -------------------------------------------------- certificates
        certs = json.loads(kb("cert", "check", "--cluster-name", CLUSTER, "--format", "json",
                              "--progress", "plain").stdout)  # fmt: skip
        where = {(c["host"], c["path"]) for c in certs}
        for path in ("/etc/kubernetes/pki/apiserver.crt", "/etc/kubernetes/pki/etcd/server.crt",
                     "/etc/kubernetes/pki/ca.crt", "/etc/kubernetes/admin.conf",
                     f"{DATA_ROOT}/{CLUSTER}/pki/registry.crt"):  # fmt: skip
            assert (h0.ip, path) in where, path
        assert (h1.ip, "/etc/kubernetes/kubelet.conf") in where or (
            h1.ip, "/var/lib/kubelet/pki/kubelet-client-current.pem") in where
        assert any(c["host"] == "local" and c["path"].endswith("/pki/ca.crt") for c in certs)
        assert all(c["daysLeft"] > 300 for c in certs)
        table = kb("cert", "check", "--cluster-name", CLUSTER, "--progress", "plain").stdout
        assert "apiserver.crt" in table and "DAYS" in table

        # renew: every kubeadm certificate on the master moves forward, the
        # cluster answers, the kubeconfig here (fetched again) works
        def not_after(found: list[dict[str, str]]) -> dict[str, str]:
            return {c["path"]: c["notAfter"] for c in found if c["host"] == h0.ip
                    and c["path"].startswith("/etc/kubernetes/")
                    and not c["path"].endswith("ca.crt")}  # fmt: skip

        before = not_after(certs)
        time.sleep(2)
        kb("cert", "renew", "--cluster-name", CLUSTER, "--progress", "plain")
        after = not_after(json.loads(kb("cert", "check", "--cluster-name", CLUSTER, "--format",
                                        "json").stdout))  # fmt: skip
        assert "/etc/kubernetes/pki/apiserver.crt" in before
        moved = {p for p in before if after.get(p, "") > before[p]}
        assert moved == set(before), (before, after)
        kubeconfig = env.state / CLUSTER / "kubeconfig"
        assert stat.S_IMODE(kubeconfig.stat().st_mode) == 0o600
        nodes = subprocess.run(
            [str(KUBECTL), "--kubeconfig", str(kubeconfig), "get", "nodes", "-o", "name"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert nodes.returncode == 0 and len(nodes.stdout.split()) == 2, nodes.stderr

        # alt-names: openssl shows the new names, kubeadm-config and the Clusterfile keep them
        kb("cert", "--alt-names", "api.backup.test,10.99.0.7", "--cluster-name", CLUSTER,
           "--progress", "plain")  # fmt: skip
        pem = m0.run("cat /etc/kubernetes/pki/apiserver.crt").stdout.encode()
        dns, ips = san_names(KeyPair(pem, b""))
        assert "api.backup.test" in dns and "10.99.0.7" in ips, (dns, ips)
        config = kubectl(m0, "-n kube-system get configmap kubeadm-config -o yaml")
        assert "api.backup.test" in config
        assert "api.backup.test" in (env.state / CLUSTER / "Clusterfile").read_text()
        wait("both nodes Ready after the certificates",
             lambda: ready_nodes(m0) == {h0.ip: True, h1.ip: True}, 120)  # fmt: skip

        # -------------------------------------------------- everything lost
        # a backup after the certificate work, a kubeconfig of the old cluster,
        # then delete --all: the hosts are as fresh as before the run
        kb("backup", "--cluster-name", CLUSTER, "-o", str(out), "--passphrase-file",
           str(pass_file), "--progress", "plain")  # fmt: skip
        old_kubeconfig = tmp_path / "old-kubeconfig"
        old_kubeconfig.write_bytes(kubeconfig.read_bytes())
        kb("delete", "--all", "--cluster-name", CLUSTER, "--progress", "plain")
        assert m0.run("ls -d /var/lib/etcd /etc/kubernetes", check=False).stdout.strip() == ""
        proc = kb("restore", str(out), "-f", str(cf), "--progress", "plain", check=False,
                  extra={"KBUILD_BACKUP_PASSPHRASE": "not-the-passphrase"})  # fmt: skip
        assert proc.returncode != 0 and "wrong passphrase" in proc.stderr, proc.stderr
        assert not (env.state / CLUSTER / "Clusterfile").exists()
        assert m0.run("ls -d /etc/kubernetes", check=False).stdout.strip() == ""
        t = time.monotonic()
        kb("restore", str(out), "-f", str(cf), "--progress", "plain", timeout=900,
           extra={"KBUILD_BACKUP_PASSPHRASE": passphrase})  # fmt: skip
        print(f"restore onto fresh hosts in {time.monotonic() - t:.0f}s")
        wait("both nodes Ready on the fresh hosts",
             lambda: ready_nodes(m0) == {h0.ip: True, h1.ip: True}, 240)  # fmt: skip
        data = json.loads(kubectl(m0, f"-n {NS} get configmap settings -o json"))["data"]
        assert data == {"colour": "teal", "size": "42"}
        assert m0.run("cat /etc/kubernetes/pki/ca.key").stdout.encode() == ca_key
        old = subprocess.run(
            [str(KUBECTL), "--kubeconfig", str(old_kubeconfig), "-n", NS, "get", "configmap",
             "settings", "-o", "name"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert old.returncode == 0 and old.stdout.strip() == "configmap/settings", old.stderr
        wait("the sleeper Running on the fresh hosts",
             lambda: [p["phase"] for p in pods(m0, "app=sleeper", NS)] == ["Running"], 180)

        watch.journals()
        found = watch.found({"passphrase": passphrase, "SSH password": h0.root_password})
        assert found == [], found
    finally:
        kbuild(env, "delete", "--all", "--cluster-name", CLUSTER, "--progress", "plain",
               timeout=600, check=False)  # fmt: skip
    assert not (env.state / CLUSTER).exists()
    assert m0.run("ls -d /var/lib/etcd /var/lib/kbuild-backup " + q(DATA_ROOT + "/" + CLUSTER)
                  + " /etc/systemd/system/kbuild-etcd-snapshot.timer",
                  check=False).stdout.strip() == ""  # fmt: skip
    assert os.path.exists(out)
