"""Model: time to get an image's layers onto 100 and 1,000 hosts, relay vs
the client sending to every host, from parameters measured on this machine
(``benchmarks/results/relay.md``; pass your own with the options).

    direct(N) = N * B / C                      the client's link carries N copies
    relay(N)  = B / min(C, L / f, R)           one copy through the slowest hop rate
              + depth(N, f) * hop              start-up per tree level (ssh, buffers)
              + ceil(N / W) * setup            begin/configure/probe/end, W hosts at a time

B: blob bytes, C: client link, L: a host's LAN link (it feeds f children
at once), R: what one host sustains while receiving, verifying, unpacking
and passing on (CPU), hop: seconds a tree level adds, setup: seconds of the
relay's setup/cleanup per batch of W hosts. Print: ``python benchmarks/relay_model.py``.
"""

from __future__ import annotations

import argparse
import math


def depth(n: int, f: int) -> int:
    """Levels below the root of a heap-ordered tree of n hosts with fanout f."""
    d, reach, width = 0, 1, 1
    while reach < n:
        width *= f
        reach += width
        d += 1
    return d


def relay_time(n: int, a: argparse.Namespace) -> float:
    if n < 2:
        return direct_time(n, a)  # one host: nothing to relay, kbuild sends directly
    rate = min(a.client, a.lan / a.fanout, a.host_rate)
    return a.blob / rate + depth(n, a.fanout) * a.hop + math.ceil(n / a.workers) * a.setup


def direct_time(n: int, a: argparse.Namespace) -> float:
    return n * a.blob / a.client


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--blob", type=float, default=158.0, help="MB of layer blobs (measured)")
    ap.add_argument("--client", type=float, default=12.5, help="client link MB/s (100 Mbit/s)")
    ap.add_argument("--lan", type=float, default=125.0, help="host link MB/s (1 Gbit/s)")
    ap.add_argument("--fanout", type=int, default=4)
    ap.add_argument("--host-rate", type=float, default=24.7,
                    help="MB/s one host sustains receiving + passing on: 158 MB / 6.4 CPU-s "
                         "per relaying host (measured), i.e. all its work on one core")
    ap.add_argument("--hop", type=float, default=0.9,
                    help="s per tree level: relay N=2 minus N=1 at 25 Mbit/s (measured)")
    ap.add_argument("--setup", type=float, default=1.8,
                    help="s of relay setup+cleanup per batch of --workers hosts: relay N=4 "
                         "minus N=1 at 25 Mbit/s (measured)")
    ap.add_argument("--workers", type=int, default=32, help="hosts set up at a time")
    ap.add_argument("--hosts", default="1,16,100,1000")
    a = ap.parse_args()
    print("| hosts | client sends all | relay | relay ÷ direct | tree depth |")
    print("|---:|---:|---:|---:|---:|")
    for n in (int(x) for x in a.hosts.split(",")):
        d, r = direct_time(n, a), relay_time(n, a)
        print(f"| {n} | {d:,.0f} s | {r:,.0f} s | {r / d:.3f} | {depth(n, a.fanout)} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
