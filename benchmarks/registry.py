#!/usr/bin/env python3
"""Benchmark: ``kbuild push``/``pull`` against ``skopeo copy`` on the same 1 GB image.

Generates (once, cached under /var/tmp/kbuild-bench/registry-store) an image of
four 256 MiB layers of incompressible data, zstd-packed into a kbuild store
(an OCI layout, so skopeo reads it as ``oci:STORE/oci:NAME``). Then, in the
same run, for each of ``--runs`` rounds and against a fresh Debian
``docker-registry`` (distribution 2.8) on 127.0.0.1 per tool:

* push: ``kbuild push`` vs ``skopeo copy oci:… docker://127.0.0.1:PORT/…``;
* re-push of the unchanged image (the registry has every blob);
* pull: ``kbuild pull`` into an empty store vs ``skopeo copy docker://… oci:DIR``;

each as a child process, with wall time and peak RSS (``/usr/bin/time``). The
in-process time of a re-push (``push_image``, without interpreter start-up)
is measured too. Prints a markdown table and writes
``benchmarks/results/registry.md``.
Usage: ``PYTHONPATH=. python benchmarks/registry.py [--runs N] [--layers N] [--layer-mb N]``.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _sysinfo import cpu_model, memory_gib

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from kbuild.layerstore import Reference, Store, TarEntry, pack_layer  # noqa: E402
from kbuild.registry import ClientOptions, push_image  # noqa: E402
from tests.fixtures.registry import RegistryServer, free_port  # noqa: E402

BENCH_DIR = Path("/var/tmp/kbuild-bench")
RESULTS = REPO / "benchmarks" / "results" / "registry.md"
IMAGE = "bench/registry:1"


def make_image(store: Store, layers: int, layer_mb: int) -> None:
    """Generate the image (random data, zstd level 1) unless it is cached."""
    try:
        store.resolve(IMAGE)
        return
    except Exception:
        pass
    infos = []
    with tempfile.TemporaryDirectory(dir=BENCH_DIR) as tmp:
        for i in range(layers):
            path = Path(tmp) / f"data{i}"
            with open(path, "wb") as f:
                for _ in range(layer_mb):
                    f.write(os.urandom(1 << 20))
            entry = TarEntry(path=f"data/{i}.bin", kind="file", source=path,
                             size=layer_mb << 20)
            infos.append(pack_layer(store, [entry], compression="zstd", level=1))
            path.unlink()
    desc = store.write_image({"architecture": "amd64", "os": "linux", "config": {}}, infos)
    store.tag(IMAGE, desc)


def run(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, float, float]:
    """Run ``cmd`` under ``/usr/bin/time``: (wall seconds, CPU seconds, peak RSS MiB).

    (``wait4`` on a child of this process would report at least this
    process's own RSS: Linux carries the high-water mark across fork+exec.)
    """
    with tempfile.NamedTemporaryFile("r", suffix=".time") as out:
        t0 = time.perf_counter()
        proc = subprocess.run(["/usr/bin/time", "-f", "%U %S %M", "-o", out.name, *cmd],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
                              check=False)
        seconds = time.perf_counter() - t0
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr.decode()}")
        user, system, rss_kb = out.read().strip().splitlines()[-1].split()
    return seconds, float(user) + float(system), float(rss_kb) / 1024


def kbuild(*args: str) -> list[str]:
    """The kbuild CLI as a child process."""
    return [sys.executable, "-m", "kbuild.cli.main", *args]


def fresh_registry(work: Path) -> RegistryServer:
    """A new, empty registry on a free port."""
    directory = Path(tempfile.mkdtemp(prefix="registry-", dir=work))
    reg = RegistryServer(directory, free_port())
    reg.start()
    return reg


def machine() -> str:
    """nproc, memory, kernel and CPU model."""
    cpu = cpu_model()
    mem = memory_gib()
    load = os.getloadavg()[0]
    return (f"nproc {os.cpu_count()}, {mem:.0f} GiB RAM, kernel {platform.release()}, "
            f"CPU {cpu}, load average at start {load:.1f} (the machine is shared)")


def main() -> None:
    """Run the benchmark and write the results file."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--layer-mb", type=int, default=256)
    args = parser.parse_args()
    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    store_root = BENCH_DIR / f"registry-store-{args.layers}x{args.layer_mb}"
    store = Store(store_root)
    t0 = time.perf_counter()
    make_image(store, args.layers, args.layer_mb)
    gen = time.perf_counter() - t0
    desc = store.resolve(IMAGE)
    manifest = store.read_manifest(desc)
    total = sum(int(layer["size"]) for layer in manifest["layers"])
    name = str(Reference.parse(IMAGE))
    env = {k: v for k, v in os.environ.items() if k not in ("KBUILD_ROOT",)}
    env["PYTHONPATH"] = str(REPO)

    rows: dict[str, list[tuple[float, float, float]]] = {}

    def add(key: str, value: tuple[float, float, float]) -> None:
        rows.setdefault(key, []).append(value)

    work = Path(tempfile.mkdtemp(prefix="registry-bench-", dir=BENCH_DIR))
    src = f"oci:{store_root / 'oci'}:{name}"
    try:
        for round_ in range(args.runs):
            kreg, sreg = fresh_registry(work), fresh_registry(work)
            try:
                kref = f"{kreg.host}/bench/app:1"
                sref = f"docker://{sreg.host}/bench/app:1"
                pushes: list[tuple[str, list[str], dict[str, str] | None]] = [
                    ("kbuild push", kbuild("--root", str(store_root), "push", "-q", IMAGE,
                                           kref), env),
                    ("skopeo push", ["skopeo", "copy", "-q", "--dest-tls-verify=false", src,
                                     sref], None),
                ]
                for key, cmd, cmd_env in pushes if round_ % 2 == 0 else pushes[::-1]:
                    add(key, run(cmd, cmd_env))
                add("kbuild re-push", run(kbuild("--root", str(store_root), "push", "-q",
                                                 IMAGE, kref), env))
                t1 = time.perf_counter()
                push_image(store, IMAGE, kref, options=ClientOptions())
                add("kbuild re-push (in-process)", (time.perf_counter() - t1, 0.0, 0.0))
                add("skopeo re-push", run(["skopeo", "copy", "-q", "--dest-tls-verify=false",
                                           src, sref]))
                # both tools pull the same repository (what kbuild pushed)
                kdst, sdst = work / "kbuild-pull", work / "skopeo-pull"
                pulls: list[tuple[str, list[str], dict[str, str] | None]] = [
                    ("kbuild pull", kbuild("--root", str(kdst), "pull", "-q", kref), env),
                    ("skopeo pull", ["skopeo", "copy", "-q", "--src-tls-verify=false",
                                     f"docker://{kref}", f"oci:{sdst}:x"], None),
                ]
                for key, cmd, cmd_env in pulls if round_ % 2 == 0 else pulls[::-1]:
                    add(key, run(cmd, cmd_env))
                shutil.rmtree(kdst)
                shutil.rmtree(sdst)
            finally:
                for reg in (kreg, sreg):
                    reg.stop()
                    shutil.rmtree(reg.workdir, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    def best(key: str) -> tuple[float, float, float]:
        values = rows[key]
        return (min(v[0] for v in values), statistics.median(v[1] for v in values),
                max(v[2] for v in values))

    mb = total / 1e6
    lines = [
        "# Registry push/pull: kbuild vs skopeo",
        "",
        f"Machine: {machine()}.",
        f"Image: {len(manifest['layers'])} layers, {total / (1 << 20):.0f} MiB of zstd blobs "
        f"(incompressible data; generated in {gen:.1f} s or cached). Registry: Debian "
        "docker-registry (distribution 2.8), filesystem storage, plain HTTP on 127.0.0.1, "
        f"a fresh one per tool and round; both tools pull what kbuild pushed; the order of "
        f"the tools alternates per round. Best of {args.runs} rounds (wall time), median CPU "
        "time (user+sys), worst peak RSS. Every number is a child process (interpreter "
        "start-up included) unless marked in-process. The 2-core machine is shared with "
        "other work, so wall times are noisy; CPU time is the steadier figure.",
        "",
        "| operation | kbuild s | skopeo s | kbuild MB/s | skopeo MB/s | throughput ratio "
        "kbuild/skopeo | kbuild CPU s | skopeo CPU s | kbuild peak RSS MiB | "
        "skopeo peak RSS MiB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for op in ("push", "pull", "re-push"):
        k, s = best(f"kbuild {op}"), best(f"skopeo {op}")
        ratio = s[0] / k[0]
        rate_k = f"{mb / k[0]:.0f}" if op != "re-push" else "-"
        rate_s = f"{mb / s[0]:.0f}" if op != "re-push" else "-"
        lines.append(f"| {op} | {k[0]:.2f} | {s[0]:.2f} | {rate_k} | {rate_s} | "
                     f"{ratio:.2f}x | {k[1]:.2f} | {s[1]:.2f} | {k[2]:.0f} | {s[2]:.0f} |")
    inproc = best("kbuild re-push (in-process)")[0]
    lines += [
        "",
        f"Re-push of the unchanged image inside one process (`push_image`, what `kbuild "
        f"build && kbuild push` pays): {inproc:.3f} s (goal < 1 s). Per round, all "
        "numbers (s, MiB):",
        "",
    ]
    for key, values in rows.items():
        if "in-process" in key:
            lines.append(f"- {key}: " + ", ".join(f"{t:.3f} s wall" for t, _, _ in values))
            continue
        lines.append(f"- {key}: " + ", ".join(f"{t:.2f} s wall / {c:.2f} s CPU / {r:.0f} MiB"
                                              for t, c, r in values))
    medians = ", ".join(
        f"{tool} {op} {statistics.median(v[0] for v in rows[f'{tool} {op}']):.2f} s"
        for op in ("push", "pull") for tool in ("kbuild", "skopeo"))
    lines += ["", f"Median wall times: {medians}.", ""]
    text = "\n".join(lines)
    print(text)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text)


if __name__ == "__main__":
    main()
