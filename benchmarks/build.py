#!/usr/bin/env python3
"""Benchmark: ``kbuild build`` against ``buildah bud --layers`` on the same ~1 GB context.

The context (generated once, cached under /var/tmp/kbuild-bench) is shaped
like a cluster base image: a few large binary-like files under ``bin/``,
~10,000 small text-like files under ``share/``, and a handful of config files
under ``etc/``. The Kubefile (used by buildah as its Containerfile) is
``FROM scratch`` plus one COPY per directory. In the same run, each tool:

1. cold build (empty kbuild store and stat cache / empty buildah storage),
   kbuild at zstd level 3;
2. rebuild with nothing changed;
3. rebuild after changing one small file in ``etc/`` (a small layer);
4. rebuild after changing one small file in ``share/`` (the 10,000-file layer).

buildah runs with its own ``--root``/``--runroot`` (overlay driver) in a temp
dir that is removed afterwards, ``--isolation chroot``. buildah stores layers
uncompressed and compresses only when pushing; kbuild's times include zstd
compression and both digests. Times are wall-clock of the whole command
(``kbuild`` process start to exit); for kbuild the time the build itself took
(without Python start-up and imports) is shown too. Peak RSS of each kbuild
run is recorded.

Prints a markdown table and writes ``benchmarks/results/build.md``.
Usage: ``python benchmarks/build.py [--runs N]``.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _sysinfo import cpu_model, memory_gib, tree_bytes

BENCH_DIR = Path("/var/tmp/kbuild-bench")
RESULTS = Path(__file__).resolve().parent / "results" / "build.md"
VERSION = 1
BIG_FILES = (220, 200, 160, 120)  # MB
SMALL_FILES = 10_000
KUBEFILE = """FROM scratch
COPY bin /usr/bin
COPY share /usr/share
COPY etc /etc
"""
_WORDS = (b"apiVersion kind metadata name namespace spec replicas selector template "
          b"containers image ports volumeMounts labels annotations configMap data "
          b"serviceAccount rbac role binding deployment daemonset kubelet kubeadm "
          b"etcd apiserver scheduler controller proxy coredns pause cni calico ").split()


def _binary_chunk(rng: random.Random, size: int) -> bytes:
    """Like an executable: half incompressible, half repetitive structure."""
    half = size // 2
    pattern = rng.randbytes(256) * (half // 256 + 1)
    return rng.randbytes(half) + pattern[: size - half]


def _text(rng: random.Random, size: int) -> bytes:
    out = bytearray()
    while len(out) < size:
        out += b"  " + b" ".join(rng.choices(_WORDS, k=8)) + b": " + str(
            rng.randrange(10**6)).encode() + b"\n"
    return bytes(out[:size])


def generate() -> Path:
    """The context (generated once; a marker file says it is complete)."""
    ctx = BENCH_DIR / f"build-context-v{VERSION}"
    marker = ctx.with_suffix(".done")
    if marker.exists() and ctx.is_dir():
        return ctx
    shutil.rmtree(ctx, ignore_errors=True)
    rng = random.Random(20261128)
    (ctx / "bin").mkdir(parents=True)
    for n, mb in enumerate(BIG_FILES):
        path = ctx / "bin" / f"tool{n}"
        with open(path, "wb") as f:
            for _ in range(mb):
                f.write(_binary_chunk(rng, 1 << 20))
        path.chmod(0o755)
    for i in range(SMALL_FILES):
        d = ctx / "share" / f"pkg{i // 100:03d}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"file{i:05d}.yaml").write_bytes(_text(rng, rng.randrange(512, 48 * 1024)))
    (ctx / "etc").mkdir()
    for i in range(20):
        (ctx / "etc" / f"conf{i:02d}.yaml").write_bytes(_text(rng, 2048))
    (ctx / "Kubefile").write_text(KUBEFILE)
    (ctx / "Containerfile").write_text(KUBEFILE)
    marker.write_text("ok\n")
    return ctx


def machine() -> str:
    """nproc, memory, kernel, CPU model."""
    cpu = cpu_model()
    disk = subprocess.run(["df", "-hT", str(BENCH_DIR)], capture_output=True, text=True).stdout
    fs = disk.splitlines()[-1].split()[1] if disk else "?"
    return (f"{os.cpu_count()} CPUs ({cpu}), {memory_gib():.1f} GiB RAM, "
            f"kernel {platform.release()}, {fs} file system, Python {platform.python_version()}")


def _tool_version(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def run_kbuild(root: Path, ctx: Path, tag: str) -> dict[str, float]:
    """One ``kbuild build``; wall time, the build's own time and peak RSS."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "kbuild.cli.main", "--root", str(root), "build", "-t", tag,
         "--progress", "plain", "--compression", "zstd", "--level", "3", str(ctx)],
        capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"kbuild build failed:\n{proc.stderr}")
    inner = float(re.search(r"time\s+([0-9.]+)s", proc.stdout).group(1))  # type: ignore[union-attr]
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    cached = proc.stderr.count(" CACHED ")
    return {"wall": wall, "inner": inner, "rss_mb": max(rss, before) / 1024, "cached": cached,
            "steps": proc.stderr.count(" DONE ") + cached}


def run_buildah(base: list[str], ctx: Path, tag: str) -> dict[str, float]:
    """One ``buildah bud --layers``; wall time."""
    t0 = time.perf_counter()
    proc = subprocess.run(
        [*base, "bud", "--layers", "--isolation", "chroot", "-f", str(ctx / "Containerfile"),
         "-t", tag, str(ctx)], capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"buildah bud failed:\n{proc.stderr}")
    return {"wall": wall, "cached": proc.stdout.count("Using cache")}


def touch_content(path: Path, _n: int) -> None:
    """Change one byte of a small file (a real content change)."""
    data = bytearray(path.read_bytes())
    data[0] = ord("a") if data[0] != ord("a") else ord("b")
    path.write_bytes(bytes(data))


def drop_caches() -> None:
    """Flush dirty pages so one tool's writes are not charged to the other."""
    subprocess.run(["sync"], check=False)


def one_round(ctx: Path, work: Path, n: int) -> dict[str, dict[str, float]]:
    """Cold, no-change, small-layer change and big-layer change for both tools."""
    res: dict[str, dict[str, float]] = {}
    kroot = work / "kbuild-root"
    shutil.rmtree(kroot, ignore_errors=True)
    broot = work / "buildah"
    base = ["buildah", "--root", str(broot / "root"), "--runroot", str(broot / "run"),
            "--storage-driver", "overlay"]
    try:
        drop_caches()
        res["k_cold"] = run_kbuild(kroot, ctx, "bench:1")
        drop_caches()
        res["b_cold"] = run_buildah(base, ctx, "bench:1")
        drop_caches()
        # best of three: the no-change rebuild is short enough for other load to dominate
        res["k_nochange"] = min((run_kbuild(kroot, ctx, "bench:1") for _ in range(3)),
                                key=lambda r: r["wall"])
        res["b_nochange"] = min((run_buildah(base, ctx, "bench:1") for _ in range(3)),
                                key=lambda r: r["wall"])
        touch_content(ctx / "etc" / "conf07.yaml", n)
        drop_caches()
        res["k_small"] = run_kbuild(kroot, ctx, "bench:1")
        res["b_small"] = run_buildah(base, ctx, "bench:1")
        touch_content(ctx / "share" / "pkg042" / "file04242.yaml", n)
        drop_caches()
        res["k_share"] = run_kbuild(kroot, ctx, "bench:1")
        res["b_share"] = run_buildah(base, ctx, "bench:1")
    finally:
        subprocess.run([*base, "rmi", "--all", "--force"], capture_output=True, check=False)
        subprocess.run(["umount", "-R", str(broot)], capture_output=True, check=False)
        shutil.rmtree(broot, ignore_errors=True)
        shutil.rmtree(kroot, ignore_errors=True)
    return res


def main() -> None:
    """Run the benchmark and write the results file."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root (buildah's overlay storage needs it)")
    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    ctx = generate()
    gen = time.perf_counter() - t0
    size = tree_bytes(ctx)
    subprocess.run(["bash", "-c", f"tar -C {ctx} -cf - . > /dev/null"], check=True)  # warm
    load_before = os.getloadavg()[0]
    rounds = []
    with tempfile.TemporaryDirectory(dir=BENCH_DIR, prefix="build-") as tmp:
        for n in range(args.runs):
            rounds.append(one_round(ctx, Path(tmp), n))

    load_after = os.getloadavg()[0]

    def med(key: str, field: str = "wall") -> float:
        return statistics.median(r[key][field] for r in rounds)

    rows = [
        ("cold build", "k_cold", "b_cold"),
        ("rebuild, nothing changed (best of 3)", "k_nochange", "b_nochange"),
        ("rebuild, 1 small file changed in etc/ (20-file layer)", "k_small", "b_small"),
        ("rebuild, 1 small file changed in share/ (10,000-file layer)", "k_share", "b_share"),
    ]
    lines = [
        "# Benchmark: kbuild build vs buildah bud --layers",
        "",
        f"Machine: {machine()}.",
        f"Tools: kbuild (this tree), {_tool_version(['buildah', '--version'])} "
        "(overlay storage driver, `--isolation chroot`).",
        f"Context: {size / 1e6:.0f} MB — {len(BIG_FILES)} binary-like files "
        f"({sum(BIG_FILES)} MB) in `bin/`, {SMALL_FILES:,} text files in `share/`, "
        "20 config files in `etc/`; Kubefile `FROM scratch` + `COPY bin /usr/bin`, "
        "`COPY share /usr/share`, `COPY etc /etc` (the same file is buildah's Containerfile). "
        f"Median of {args.runs} run(s). Load average (1 min) {load_before:.1f} at the start, "
        f"{load_after:.1f} at the end: the CPU is shared with other work, so expect noise "
        "(on a loaded machine most of kbuild's wall time is Python start-up).",
        "",
        "| case | kbuild wall (s) | kbuild build work (s) | buildah wall (s) | "
        "buildah / kbuild (wall) | layers reused, kbuild / buildah |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for label, k, b in rows:
        kw, ki, bw = med(k), med(k, "inner"), med(b)
        reused = f"{rounds[0][k]['cached']:.0f} / {rounds[0][b]['cached']:.0f} of 3"
        lines.append(f"| {label} | {kw:.2f} | {ki:.2f} | {bw:.2f} | {bw / kw:.1f}× | "
                     f"{reused} |")
    lines += [
        "",
        "- *kbuild build work* is the time `kbuild build` reports for the build itself "
        "(Kubefile to tagged image), without the Python interpreter's start-up and imports.",
        f"- kbuild cold build: {size / 1e6 / med('k_cold', 'inner'):.0f} MB/s of context "
        "packed to zstd level 3 with both digests; buildah's cold build stores layers "
        "uncompressed (it compresses at push time).",
        f"- Peak RSS of a kbuild build: {max(r['k_cold']['rss_mb'] for r in rounds):.0f} MB "
        "(cold).",
        "- Goals (issue 2): no-change rebuild ≤ 0.2 s of work and ≥ 10× faster than "
        "buildah's; a small change costs the changed layer, not the context. "
        f"Here: {med('k_nochange', 'inner'):.2f} s of work, "
        f"{med('b_nochange') / med('k_nochange'):.0f}× faster (wall) than buildah.",
        f"- Context generation (once, cached in {BENCH_DIR}): {gen:.0f} s in this run.",
        "",
        "Reproduce: `sudo python benchmarks/build.py --runs 1`.",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = RESULTS.with_suffix(".tmp")
    tmp_out.write_text(text)
    os.replace(tmp_out, RESULTS)


if __name__ == "__main__":
    main()
