"""Benchmark: the client's link to N hosts, relay vs direct sends vs SFTP.

The 500 MB image of ``benchmarks/distribute.py`` (158 MB as zstd blobs) to
N podman hosts, with the CLIENT's egress shaped: ``tc tbf`` on the podman
network's bridge device on this machine, which carries what this machine
sends to the hosts and nothing the hosts send each other (bridged between
their veths); a host-to-host transfer is measured to show it. Methods, same
hosts, one after the other, each from empty data roots:

- **relay**: :func:`kbuild.runtime.relay.relay_layers` (the client sends each
  layer to one host; hosts pass it on to ``fanout`` others while receiving),
  then whatever a host still lacks from the client (nothing, when it works);
- **direct**: today's ``send_missing`` to every host in parallel;
- **SFTP file by file**: sealer's way (the unpacked tree, each file ``put``).

Reported: time, ratio to N=1, bytes over the client link (the bridge
qdisc's byte counter, so SSH framing included), CPU seconds per host. Run as
root: ``python benchmarks/relay.py``; writes ``benchmarks/results/relay.md``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from distribute import (
    DATA_ROOT,
    MB,
    Bench,
    host_cpu,
    machine,
    make_image,
    make_trees,
    place_data,
    start_hosts,
    unplace_data,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kbuild.layerstore import Store
from kbuild.runtime.clusterfile import Distribution
from kbuild.runtime.distribute import host_layers, send_missing
from kbuild.runtime.layers import scan_image
from kbuild.runtime.pool import run_on_hosts
from kbuild.runtime.preflight import gather_facts
from kbuild.runtime.providers import podman
from kbuild.runtime.relay import RelayHost, relay_layers
from kbuild.runtime.ssh import Connection


def bridge_of(network: str) -> str:
    """The podman network's bridge device on this machine."""
    out = subprocess.run(["podman", "network", "inspect", network, "-f",
                          "{{.NetworkInterface}}"], capture_output=True, text=True,
                         check=True).stdout.strip()  # fmt: skip
    if not out:
        raise RuntimeError(f"no bridge device for network {network}")
    return out


def shape_client(bridge: str, rate: str | None) -> None:
    """The client's egress to the hosts: a tbf on the bridge device (None: removed)."""
    subprocess.run(["tc", "qdisc", "del", "dev", bridge, "root"], capture_output=True,
                   check=False)  # fmt: skip
    if rate:
        subprocess.run(["tc", "qdisc", "add", "dev", bridge, "root", "tbf", "rate", rate,
                        "burst", "256kb", "latency", "50ms"], check=True)  # fmt: skip


def link_bytes(bridge: str) -> int:
    """Bytes the bridge sent so far (what left this machine toward the hosts)."""
    return int(Path(f"/sys/class/net/{bridge}/statistics/tx_bytes").read_text())


def ssh_rate(src: podman.PodmanHost | None, dst: podman.PodmanHost, key: Path,
             mb: int = 200) -> float:  # fmt: skip
    """MB/s of ``mb`` MB over OpenSSH from ``src`` (None: this machine) to ``dst``."""
    opts = (f"-i {{key}} -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null "
            f"-o BatchMode=yes -o LogLevel=ERROR root@{dst.ip} 'cat >/dev/null'")  # fmt: skip
    cmd = f"head -c {mb * MB} /dev/zero | ssh {opts}"
    start = time.monotonic()
    if src is None:
        subprocess.run(["sh", "-c", cmd.format(key=key)], check=True, timeout=600)
    else:
        subprocess.run(["podman", "cp", str(key), f"{src.container}:/tmp/bench-key"], check=True)
        subprocess.run(["podman", "exec", src.container, "sh", "-c",
                        cmd.format(key="/tmp/bench-key") + "; rm -f /tmp/bench-key"],
                       check=True, timeout=600)  # fmt: skip
    return mb / (time.monotonic() - start)


class RelayBench(Bench):
    def relay(self, hosts: Sequence[podman.PodmanHost], fanout: int) -> float:
        start = time.monotonic()
        with self.pool() as pool:

            def look(h: podman.PodmanHost) -> tuple[RelayHost, list]:
                conn = pool.get(h.ip, h.credentials, name=h.name)
                assert isinstance(conn, Connection)
                facts = gather_facts(conn, DATA_ROOT)
                lines = tuple(conn.known_hosts.lines(h.ip, 22))
                missing = host_layers(conn, DATA_ROOT, self.image).missing
                return RelayHost(h.ip, conn, 22, facts.tools, lines), missing

            found = run_on_hosts(hosts, look).results
            res = relay_layers([x[0] for x in found.values()],
                               {x[0].ip: x[1] for x in found.values()}, store=self.store,
                               data_root=DATA_ROOT, settings=Distribution(fanout=fanout))
            self.failed = {**res.failed, **res.probe_failed}

            def rest(h: podman.PodmanHost) -> int:
                conn = pool.get(h.ip, h.credentials, name=h.name)
                facts = gather_facts(conn, DATA_ROOT)
                todo = host_layers(conn, DATA_ROOT, self.image)
                return send_missing(conn, self.store, DATA_ROOT, todo, host_tools=facts.tools)

            self.direct_after = sum(run_on_hosts(hosts, rest).results.values())
        return time.monotonic() - start


def measure(b: RelayBench, bridge: str, hs: Sequence[podman.PodmanHost], name: str,
            fn: Callable[[], float], log: Callable[[str], None]) -> dict[str, float]:  # fmt: skip
    b.clean(hs)
    n0, c0 = link_bytes(bridge), host_cpu(hs)
    t = fn()
    r = {"t": t, "mb": (link_bytes(bridge) - n0) / MB, "cpu": (host_cpu(hs) - c0) / len(hs)}
    log(f"  {name} N={len(hs)}: {t:.1f} s, {r['mb']:.0f} MB over the client link, "
        f"{r['cpu']:.1f} CPU-s per host")  # fmt: skip
    return r


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", default="1,2,4,8,16")
    ap.add_argument("--rate", action="append", help="client link, e.g. 100mbit (repeatable)")
    ap.add_argument("--direct-max", default="16,2",
                    help="largest N for direct sends, per --rate (time: N copies)")
    ap.add_argument("--sftp-max", default="4,0", help="largest N for SFTP, per --rate")
    ap.add_argument("--fanout", type=int, default=4)
    ap.add_argument("--work", default="/var/tmp/kbuild-bench-distribute")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "relay.md"))
    args = ap.parse_args()
    rates = args.rate or ["100mbit", "25mbit"]
    counts = [int(x) for x in args.hosts.split(",")]

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    l1, l2, files, total = make_trees(Path(args.work), 500)
    store = Store(Path(args.work) / "store")
    image = make_image(store, l1, l2)
    scan_image(store, image)
    blob = sum(x.size for x in image.layers)
    cluster = f"relay{os.getpid()}"
    tmp = Path(tempfile.mkdtemp(prefix="kbuild-bench-"))
    key = tmp / "id"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    inotify = Path("/proc/sys/fs/inotify/max_user_instances")
    inotify_before = inotify.read_text().strip()
    rows: dict[str, dict[str, dict[int, dict[str, float]]]] = {}
    notes: list[str] = []
    hosts: list[podman.PodmanHost] = []
    bridge = ""
    try:
        if max(counts) > 8:
            inotify.write_text("1024\n")
        log(f"starting {max(counts)} hosts ...")
        hosts = start_hosts(cluster, max(counts), tmp / "id.pub")
        for h in hosts:
            place_data(h.container, "volume")
        bridge = bridge_of(hosts[0].network)
        b = RelayBench(store, image, hosts, l1, l2, key, tmp / "known_hosts")
        b.clean(hosts)
        b.kbuild(hosts[:2])  # warm-up: connections, known_hosts, page cache
        direct_max = [int(x) for x in args.direct_max.split(",")]
        sftp_max = [int(x) for x in args.sftp_max.split(",")]
        for ri, rate in enumerate(rates):
            dmax = direct_max[min(ri, len(direct_max) - 1)]
            smax = sftp_max[min(ri, len(sftp_max) - 1)]
            shape_client(bridge, rate)
            c2h = ssh_rate(None, hosts[0], key, 50)
            h2h = ssh_rate(hosts[1], hosts[0], key, 200) if len(hosts) > 1 else 0.0
            notes.append(f"{rate}: client → host {c2h:.1f} MB/s, host → host {h2h:.1f} MB/s "
                         "(OpenSSH, zeros)")  # fmt: skip
            log(notes[-1])
            rows[rate] = {"relay": {}, "direct": {}, "sftp": {}}
            for n in counts:
                hs = hosts[:n]
                rows[rate]["relay"][n] = measure(
                    b, bridge, hs, "relay", lambda hs=hs: b.relay(hs, args.fanout), log)
                rows[rate]["relay"][n]["fallback_mb"] = b.direct_after / MB
                if b.failed:
                    notes.append(f"{rate} N={n}: left the relay: {b.failed}")
                if n <= dmax:
                    rows[rate]["direct"][n] = measure(b, bridge, hs, "direct",
                                                      lambda hs=hs: b.kbuild(hs), log)
                if n <= smax:
                    rows[rate]["sftp"][n] = measure(b, bridge, hs, "SFTP",
                                                    lambda hs=hs: b.sftp(hs), log)
                b.clean(hs)
            shape_client(bridge, None)
    finally:
        if bridge:
            shape_client(bridge, None)
        for h in hosts:
            unplace_data(h.container)
        podman.delete_cluster(cluster)
        inotify.write_text(inotify_before + "\n")
        subprocess.run(["rm", "-rf", str(tmp)], check=False)
    Path(args.out).write_text(report(args, rows, notes, files, total, blob))
    return 0


def report(args: argparse.Namespace, rows: dict, notes: list[str], files: int, total: int,
           blob: int) -> str:  # fmt: skip
    out = ["# Benchmark: relay between hosts (the client's link shaped)", "",
           f"Image: {total / MB:.0f} MB unpacked in {files} files, {blob / MB:.0f} MB as zstd "
           "blobs (the image of `benchmarks/distribute.py`). Hosts write to their podman data "
           f"volume. Relay fanout {args.fanout}. One round per cell (time was short).", ""]
    for rate, methods in rows.items():
        out += [f"## Client link {rate}", "",
                "| hosts | relay s | ÷ N=1 | MB over client link | CPU-s/host | "
                "direct s | ÷ N=1 | MB over client link | CPU-s/host | "
                "SFTP s | ÷ N=1 | MB over client link | CPU-s/host |",
                "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
        for n in sorted(methods["relay"]):
            cells = []
            for m in ("relay", "direct", "sftp"):
                r, base = methods[m].get(n), methods[m].get(min(methods[m] or [n]))
                if r is None or base is None:
                    cells += ["—"] * 4
                    continue
                cells += [f"{r['t']:.1f}", f"{r['t'] / base['t']:.2f}", f"{r['mb']:.0f}",
                          f"{r['cpu']:.1f}"]  # fmt: skip
            out.append(f"| {n} | " + " | ".join(cells) + " |")
        fb = {n: round(r["fallback_mb"]) for n, r in methods["relay"].items()
              if r["fallback_mb"] and n > 1}  # fmt: skip
        out += ["", "MB the client sent directly after the relay (hosts it did not reach; "
                f"N=1 has nothing to relay and is always direct): {fb or 'none'}.", ""]
    out += ["## Links measured", "", *[f"- {x}" for x in notes], "", "## Machine", "",
            machine(), "", f"Command: `python benchmarks/relay.py --hosts {args.hosts} "
            + " ".join(f"--rate {r}" for r in rows) + f" --direct-max {args.direct_max} "
            f"--sftp-max {args.sftp_max}`", ""]  # fmt: skip
    return "\n".join(out)


if __name__ == "__main__":
    threading.stack_size(4 * 1024 * 1024)
    raise SystemExit(main())
