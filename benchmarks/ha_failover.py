"""Benchmark: HA failover through the VIP, and what the VIP costs in steady state.

3 masters + 1 node of ``kubernetes:v1.37.2`` on podman hosts with no route
out. On the node a bounded request loop asks the API through the VIP
(``apiserver.cluster.local`` → ``kbuild-vip``'s nftables DNAT) five times a
second, each request with a 2 s timeout, and logs its start time and result.
Then, three times: master0's host stops answering (``podman pause``: every
process in it frozen, like a hung or powerless machine; ``podman stop`` is not
usable on this cgroup v1 kernel, see ``providers/podman/hosts.py``), and from
the log:

- first success: seconds from the power cut to the first request that
  started after it and succeeded;
- failover: seconds from the power cut to the end of the last failed
  request (after it, every request succeeded);
- failed: requests that failed in between.

master0 is resumed and waited for (Ready, back behind the VIP) before
the next round. Steady state: 40 requests through the VIP and 40 to a
master's address directly, the request's own duration as kubectl measures it
(``-v=6``: "… 200 OK in N milliseconds"), medians.

There is no peer on this machine (sealer's lvscare needs IPVS, which this
kernel lacks); the numbers stand alone.

    python benchmarks/ha_failover.py [--image kubernetes:v1.37.2] [--store DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

from kubernetes_run import bench_hosts, kbuild, machine

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from kbuild.runtime.providers import podman  # noqa: E402
from kbuild.runtime.ssh import Connection  # noqa: E402

CACHE = Path(os.environ.get("KBUILD_K8S_CACHE", "/var/cache/kbuild/kubernetes"))
NODE_KUBECTL = "kubectl --kubeconfig /etc/kubernetes/kubelet.conf"
LOOP = (
    "while :; do t=$(date +%s.%N); "
    f"if {NODE_KUBECTL} get --raw /readyz --request-timeout=2s >/dev/null 2>&1; "
    'then r=ok; else r=fail; fi; echo "$t $(date +%s.%N) $r"; sleep 0.2; done'
)


def wait(what: str, fn: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if fn():  # type: ignore[operator]
            return
        time.sleep(1)
    raise SystemExit(f"timed out after {timeout:.0f}s waiting for {what}")


def ready(conn: Connection, n: int) -> bool:
    """``n`` nodes, all Ready (asked on a master with the admin kubeconfig)."""
    res = conn.run("kubectl --kubeconfig /etc/kubernetes/admin.conf get nodes -o json",
                   check=False)  # fmt: skip
    if not res.ok:
        return False
    items = json.loads(res.stdout)["items"]
    return len(items) == n and all(
        any(c["type"] == "Ready" and c["status"] == "True" for c in i["status"]["conditions"])
        for i in items
    )


def programmed(node: Connection) -> list[str]:
    res = node.run("cat /run/kbuild-vip/status.json", check=False)
    return json.loads(res.stdout).get("programmed", []) if res.ok and res.stdout.strip() else []


def one_round(node: Connection, lead: Connection, m0: podman.PodmanHost,
              masters: list[str]) -> dict[str, float]:  # fmt: skip
    node.run("rm -f /tmp/vip-loop; nohup sh -c '" + LOOP + "' >/tmp/vip-loop 2>&1 & "
             "echo $! >/tmp/vip-loop.pid")  # fmt: skip
    time.sleep(5)
    cut = float(node.run("date +%s.%N").stdout)
    podman.freeze_host(m0.container)
    time.sleep(20)
    node.run("kill $(cat /tmp/vip-loop.pid)")
    rows = [line.split() for line in node.run("cat /tmp/vip-loop").stdout.splitlines()]
    after = [(float(s), float(e), r) for s, e, r in rows if float(e) > cut]
    first_ok = next(s for s, _, r in after if r == "ok" and s >= cut) - cut
    fails = [(s, e) for s, e, r in after if r == "fail"]
    failover = (max(e for _, e in fails) - cut) if fails else 0.0
    podman.thaw_host(m0.container)
    wait("master0 back behind the VIP", lambda: programmed(node) == sorted(masters), 300)
    wait("all nodes Ready after master0 came back", lambda: ready(lead, 4), 600)
    return {"first_ok": first_ok, "failover": failover, "failed": float(len(fails))}


def latency(node: Connection, server: str, n: int = 40) -> float:
    """Median milliseconds of ``/readyz`` requests to ``server`` (kubectl's own timing)."""
    out = node.run(
        f"for i in $(seq {n}); do {NODE_KUBECTL} --server {server} get --raw /readyz -v=6 "
        "2>&1 | grep -E 'OK in [0-9]+ milliseconds|milliseconds=[0-9]+'; done; true"
    ).stdout
    ms = [int(a or b) for a, b in re.findall(r"OK in (\d+) milliseconds|milliseconds=(\d+)", out)]
    if len(ms) < n // 2:
        raise SystemExit(f"too few timed requests to {server}: {out[-500:]}")
    return statistics.median(ms)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image", default="kubernetes:v1.37.2")
    ap.add_argument("--store", default=str(CACHE / "store"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default=str(REPO / "benchmarks/results/ha_failover.md"))
    args = ap.parse_args()
    name = f"kbha-{secrets.token_hex(3)}"
    names = ["m0", "m1", "m2", "n0"]
    with tempfile.TemporaryDirectory(prefix="kbha-") as tmp:
        try:
            hosts, cf, env = bench_hosts(name, args.image, names, 3, tmp, args.store)
            ips = [h.ip for h in hosts]
            kbuild(env, "run", "-f", str(cf), "--progress", "plain")
            node = Connection(ips[3], hosts[3].credentials, known_hosts=Path(tmp) / "kh")
            lead = Connection(ips[1], hosts[1].credentials, known_hosts=Path(tmp) / "kh")
            wait("all nodes Ready", lambda: ready(lead, 4), 300)
            print("cluster Ready", file=sys.stderr)
            wait("the VIP over 3 masters", lambda: programmed(node) == sorted(ips[:3]), 120)
            vip_ms = latency(node, "https://apiserver.cluster.local:6443")
            direct_ms = latency(node, f"https://{ips[1]}:6443")
            rounds = []
            for i in range(args.rounds):
                r = one_round(node, lead, hosts[0], ips[:3])
                print(f"round {i + 1}: {r}", file=sys.stderr)
                rounds.append(r)
                node.close()
                node = Connection(ips[3], hosts[3].credentials, known_hosts=Path(tmp) / "kh")
            node.close()
            lead.close()
            kbuild(env, "delete", "--all", "--cluster-name", name, "--progress", "plain")
        finally:
            podman.delete_cluster(name)

    def med(key: str) -> float:
        return statistics.median(r[key] for r in rounds)

    lines = [
        "# HA: failover through the VIP, and the VIP's cost",
        "",
        f"Image `{args.image}`, 3 masters + 1 node, podman hosts on an `--internal` network.",
        f"Machine: {machine()}. The hosts share the machine's cores with kbuild and the loop.",
        "",
        "Failover: master0's host frozen (`podman pause`: nothing in it answers) while the node",
        "asks `/readyz` through the VIP 5×/s (2 s timeout per request). The loop is",
        "sequential: a request in flight to master0 at the cut times out (2 s) before the",
        "next one starts, so the first success cannot come sooner than that.",
        "",
        "| round | first success after the cut | failover (end of the last failed request) "
        "| failed requests |",
        "|---|---|---|---|",
    ]
    for i, r in enumerate(rounds, 1):
        lines.append(f"| {i} | {r['first_ok']:.2f} s | {r['failover']:.2f} s | {r['failed']:.0f} |")
    lines += [
        f"| **median of {len(rounds)}** | **{med('first_ok'):.2f} s** | "
        f"**{med('failover'):.2f} s** | **{med('failed'):.0f}** |",
        "",
        "Steady state (median of 40 `/readyz` requests from the node, kubectl's own timing):",
        "",
        "| path | median |",
        "|---|---|",
        f"| through the VIP (nftables DNAT) | {vip_ms:.0f} ms |",
        f"| a master's address directly | {direct_ms:.0f} ms |",
        f"| VIP ÷ direct | {vip_ms / max(direct_ms, 1):.2f}× |",
        "",
        "No peer tool ran: sealer/sealos use IPVS (lvscare), which this kernel does not have.",
    ]
    out = Path(args.out)
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
