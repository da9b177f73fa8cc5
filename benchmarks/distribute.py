"""Benchmark: sending a cluster image's layers to 1, 2, 4 and 8 hosts.

Compares, in the same run and on the same podman hosts (systemd + sshd):

- **kbuild**: the runtime's own path (``kbuild.runtime.distribute``): preflight
  facts, which layers the host lacks, then one zstd stream per missing layer
  over an SSH exec channel, verified by sha256 on the host and unpacked
  there; all hosts in parallel over one connection each;
- **kbuild, host without zstd**: the same, but the sender decompresses and
  sends the plain tar (what happens on a host that lacks zstd);
- **SFTP file by file** (sealer's way): the unpacked tree, every directory
  and file over SFTP, all hosts in parallel;
- **scp -r** (OpenSSH) of the unpacked tree, one process per host;
- **re-run**: kbuild again when every host already has every layer.

Then the same with every host's link shaped to 200 Mbit/s with ``tc tbf``.

The image: about 500 MB, one layer of large files and one of 5,000 small
files, cut from this machine's own binaries and libraries (real,
compressible data). Run as root: ``python benchmarks/distribute.py``.
Writes ``benchmarks/results/distribute.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import random
import resource
import stat
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import paramiko
from _sysinfo import cpu_model, memory_gib

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kbuild.layerstore import Store, pack_tree
from kbuild.runtime.distribute import host_layers, send_missing
from kbuild.runtime.image import ImageInfo, inspect_image
from kbuild.runtime.layers import scan_image
from kbuild.runtime.pool import ConnectionPool, run_on_hosts
from kbuild.runtime.preflight import gather_facts
from kbuild.runtime.providers import podman
from kbuild.runtime.ssh import Connection

MB = 1_000_000
DATA_ROOT = "/var/lib/kbuild-bench"
IMAGE_REF = "localhost/bench/distribute:500mb"
SHAPE = "tbf rate 200mbit burst 256kb latency 50ms"
SOURCES = ("/usr/lib/x86_64-linux-gnu", "/usr/bin", "/usr/lib", "/usr/share", "/usr/libexec")


# ---------------------------------------------------------------- data


def _source_files(limit: int) -> Iterator[Path]:
    total = 0
    seen: set[tuple[int, int]] = set()
    for top in SOURCES:
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames.sort()
            for name in sorted(filenames):
                p = Path(dirpath, name)
                try:
                    st = p.lstat()
                except OSError:
                    continue
                if not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) in seen:
                    continue
                seen.add((st.st_dev, st.st_ino))
                yield p
                total += st.st_size
                if total >= limit:
                    return


def _pool_reader(limit: int) -> Iterator[bytes]:
    """Bytes of this machine's own files, in a fixed order, ``limit`` at most."""
    left = limit
    for p in _source_files(limit * 2):
        try:
            data = p.read_bytes()
        except OSError:
            continue
        data = data[:left]
        left -= len(data)
        yield data
        if left <= 0:
            return
    if left > 0:
        yield random.Random(7).randbytes(left)


def make_trees(work: Path, size_mb: int) -> tuple[Path, Path, int, int]:
    """Two layer roots: ``l1/opt/big`` (large files) and ``l2/opt/small``
    (5,000 small files). Returns (l1, l2, files, bytes)."""
    l1, l2 = work / "l1", work / "l2"
    done = work / "trees.done"
    small_total = 50 * MB
    big_total = size_mb * MB - small_total
    if not done.exists():
        for d in (l1, l2):
            subprocess.run(["rm", "-rf", str(d)], check=True)
        big = l1 / "opt" / "big"
        big.mkdir(parents=True)
        chunk = 50 * MB
        gen = _pool_reader(big_total)
        buf = b""
        index = 0
        for data in gen:
            buf += data
            while len(buf) >= chunk:
                (big / f"blob{index:02d}.bin").write_bytes(buf[:chunk])
                buf = buf[chunk:]
                index += 1
        if buf:
            (big / f"blob{index:02d}.bin").write_bytes(buf)
        rng = random.Random(42)
        sizes = [rng.randint(1_000, 19_000) for _ in range(5000)]
        scale = small_total / sum(sizes)
        sizes = [max(1, int(s * scale)) for s in sizes]
        pool = b"".join(_pool_reader(small_total + 1_000_000))
        off = 0
        for i, size in enumerate(sizes):
            d = l2 / "opt" / "small" / f"d{i // 100:02d}"
            d.mkdir(parents=True, exist_ok=True)
            (d / f"f{i:04d}.dat").write_bytes(pool[off : off + size])
            off = (off + size) % (len(pool) - 20_000)
        done.write_text("ok\n")
    files = sum(len(f) for root in (l1, l2) for _, _, f in os.walk(root))
    total = 0
    for root in (l1, l2):
        for dp, _, fs in os.walk(root):
            total += sum((Path(dp) / n).stat().st_size for n in fs)
    return l1, l2, files, total


def make_image(store: Store, l1: Path, l2: Path) -> ImageInfo:
    """The two-layer image in a kbuild store (packed once)."""
    try:
        return inspect_image(store, IMAGE_REF)
    except Exception:
        pass
    layers = [pack_tree(store, l1), pack_tree(store, l2)]
    config = {
        "architecture": "amd64",
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [x.diff_id for x in layers]},
        "config": {"Labels": {}},
    }
    desc = store.write_image(config, layers)
    with store.lock():
        store.tag(IMAGE_REF, desc)
    return inspect_image(store, IMAGE_REF)


# ---------------------------------------------------------------- hosts


def _veth_of(container: str) -> str:
    idx = subprocess.run(
        ["podman", "exec", container, "cat", "/sys/class/net/eth0/iflink"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    for line in subprocess.run(["ip", "-o", "link"], capture_output=True, text=True,
                               check=True).stdout.splitlines():  # fmt: skip
        num, name = line.split(":")[0:2]
        if num.strip() == idx:
            return name.strip().split("@")[0]
    raise RuntimeError(f"no veth for {container}")


def shape(hosts: Sequence[podman.PodmanHost], on: bool) -> None:
    """200 Mbit/s each way on every host's link (host's eth0 and its veth here)."""
    for h in hosts:
        veth = _veth_of(h.container)
        if on:
            subprocess.run(["tc", "qdisc", "replace", "dev", veth, "root", *SHAPE.split()],
                           check=True)  # fmt: skip
            subprocess.run(["podman", "exec", h.container, "tc", "qdisc", "replace", "dev",
                            "eth0", "root", *SHAPE.split()], check=True)  # fmt: skip
        else:
            subprocess.run(["tc", "qdisc", "del", "dev", veth, "root"], check=False,
                           capture_output=True)  # fmt: skip
            subprocess.run(["podman", "exec", h.container, "tc", "qdisc", "del", "dev", "eth0",
                            "root"], check=False, capture_output=True)  # fmt: skip


PLACES = {
    "ext4": "a fresh ext4 file system (mkfs.ext4 defaults, so journaled, as on a server) on "
    "a loop device backed by a file on the host's data volume, bind-mounted on the data "
    "root and on /bench",
    "volume": "the host's own podman volume (`/var/lib/kbuild`, this machine's filesystem; "
    "where `kbuild run --provider podman` puts the data root), bind-mounted on the data "
    "root and on /bench",
    "overlay": "the container's own root filesystem (overlay on this machine's filesystem)",
    "tmpfs": "a tmpfs mounted on the data root and on /bench",
}


def start_hosts(cluster: str, n: int, pub: Path) -> list[podman.PodmanHost]:
    """``n`` podman hosts of ``cluster`` letting in the key ``pub``, with this
    machine's zstd and openssl commands: the base host image has neither
    (it has libssl, for sshd); most servers have both."""
    hosts = podman.create_hosts(
        cluster, [f"h{i}" for i in range(n)],
        root_password="bench-" + os.urandom(6).hex(), authorized_keys=[pub.read_text()],
    )  # fmt: skip
    for h in hosts:
        for tool in ("zstd", "openssl"):
            subprocess.run(["podman", "cp", f"/usr/bin/{tool}",
                            f"{h.container}:/usr/local/bin/{tool}"], check=True)  # fmt: skip
    return hosts


def place_data(container: str, where: str) -> None:
    """Put the host's data root and /bench (the SFTP and scp target) on ``where``."""
    if where == "overlay":
        return
    if where == "tmpfs":
        script = f"mount -t tmpfs tmpfs {DATA_ROOT} && mount -t tmpfs tmpfs /bench"
    else:
        vol = f"{podman.DATA_MOUNT}/bench"
        if where == "ext4":
            # Blocks allocated and inode tables written now, not during the
            # first method timed on a host.
            script = (f"fallocate -l 4G {vol}.img && mkfs.ext4 -q -F -E "
                      f"lazy_itable_init=0,lazy_journal_init=0 {vol}.img && mkdir -p {vol} "
                      f"&& mount -o loop {vol}.img {vol} && ")  # fmt: skip
        else:
            script = ""
        script += (f"mkdir -p {vol}/data {vol}/tree && mount --bind {vol}/data {DATA_ROOT} "
                   f"&& mount --bind {vol}/tree /bench")  # fmt: skip
    subprocess.run(["podman", "exec", container, "sh", "-c",
                    f"mkdir -p {DATA_ROOT} /bench && {script}"], check=True)  # fmt: skip


def unplace_data(container: str) -> None:
    """Undo :func:`place_data` (a loop device is the machine's, not the container's)."""
    vol = f"{podman.DATA_MOUNT}/bench"
    subprocess.run(["podman", "exec", container, "sh", "-c",
                    f"umount /bench {DATA_ROOT} 2>/dev/null; umount {vol} 2>/dev/null; true"],
                   check=False)  # fmt: skip


LOAD_EVERY = 15


class LoadSampler:
    """The 1-minute load average every :data:`LOAD_EVERY` s, in a thread."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0 if not self.samples else LOAD_EVERY):
            self.samples.append(os.getloadavg()[0])

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def summary(self) -> str:
        s = sorted(self.samples) or [0.0]
        return f"min {s[0]:.1f}, median {s[len(s) // 2]:.1f}, max {s[-1]:.1f}"


# ---------------------------------------------------------------- methods


class Bench:
    def __init__(self, store: Store, image: ImageInfo, hosts: list[podman.PodmanHost],
                 l1: Path, l2: Path, key: Path, kh: Path) -> None:  # fmt: skip
        self.store, self.image, self.hosts = store, image, hosts
        self.l1, self.l2, self.key, self.kh = l1, l2, key, kh
        self.sent: dict[str, int] = {}

    def pool(self) -> ConnectionPool:
        return ConnectionPool(known_hosts=self.kh, local="never")

    def clean(self, hosts: Sequence[podman.PodmanHost]) -> None:
        with self.pool() as pool:
            run_on_hosts(hosts, lambda h: pool.get(h.ip, h.credentials, name=h.name).run(
                f"rm -rf {DATA_ROOT} /bench; sync"))  # fmt: skip

    def kbuild(self, hosts: Sequence[podman.PodmanHost], *, zstd: bool = True) -> float:
        start = time.monotonic()
        with self.pool() as pool:

            def one(h: podman.PodmanHost) -> int:
                conn = pool.get(h.ip, h.credentials, name=h.name)
                facts = gather_facts(conn, DATA_ROOT)
                tools = facts.tools if zstd else facts.tools - {"zstd", "gzip"}
                todo = host_layers(conn, DATA_ROOT, self.image)
                return send_missing(conn, self.store, DATA_ROOT, todo, host_tools=tools)

            res = run_on_hosts(hosts, one)
        took = time.monotonic() - start
        self.sent = res.results
        return took

    def one_round(self, hs: Sequence[podman.PodmanHost], files: int, total: int,
                  log: Callable[[str], None]) -> dict[str, float]:  # fmt: skip
        """Every method once on ``hs``, each from an empty target."""
        n = len(hs)
        r: dict[str, float] = {"n": n}
        self.clean(hs)
        timed(lambda: self.kbuild(hs), "kbuild", log, r, "kbuild", hs)
        r["sent_mb"] = sum(self.sent.values()) / n / MB
        self.verify_kbuild(hs, files)
        timed(lambda: self.kbuild(hs), "kbuild re-run", log, r, "rerun", hs)
        assert sum(self.sent.values()) == 0
        self.clean(hs)
        timed(lambda: self.kbuild(hs, zstd=False), "kbuild, host without zstd", log, r,
              "kbuild_nozstd", hs)  # fmt: skip
        self.verify_kbuild(hs, files)
        self.clean(hs)
        timed(lambda: self.sftp(hs), "SFTP file by file", log, r, "sftp", hs)
        self.verify_tree(hs, "sftp", files, total)
        self.clean(hs)
        timed(lambda: self.scp(hs), "scp -r", log, r, "scp", hs)
        self.verify_tree(hs, "scp", files, total)
        self.clean(hs)
        return r

    def verify_kbuild(self, hosts: Sequence[podman.PodmanHost], files: int) -> None:
        hexes = " ".join(layer.hex for layer in self.image.layers)
        cmd = (f"cd {DATA_ROOT}/layers && for h in {hexes}; do test -f $h/verified || exit 9; "
               f"done; find . -path '*/fs/*' -type f | wc -l")  # fmt: skip
        with self.pool() as pool:
            res = run_on_hosts(hosts, lambda h: pool.get(h.ip, h.credentials).run(cmd).stdout)
        for name, out in res.results.items():
            assert int(out) == files, (name, out, files)

    def sftp(self, hosts: Sequence[podman.PodmanHost]) -> float:
        start = time.monotonic()
        with self.pool() as pool:

            def one(h: podman.PodmanHost) -> None:
                conn = pool.get(h.ip, h.credentials, name=h.name)
                assert isinstance(conn, Connection) and conn._transport is not None
                sftp = paramiko.SFTPClient.from_transport(conn._transport)
                assert sftp is not None
                with contextlib.closing(sftp):
                    made: set[str] = set()
                    for root in (self.l1, self.l2):
                        for dirpath, dirnames, filenames in os.walk(root):
                            dirnames.sort()
                            rel = os.path.relpath(dirpath, root)
                            remote = "/bench/sftp" if rel == "." else f"/bench/sftp/{rel}"
                            parts = remote.strip("/").split("/")
                            for i in range(1, len(parts) + 1):
                                d = "/" + "/".join(parts[:i])
                                if d not in made:
                                    with contextlib.suppress(OSError):
                                        sftp.mkdir(d)
                                    made.add(d)
                            for name in sorted(filenames):
                                sftp.put(os.path.join(dirpath, name), f"{remote}/{name}")

            run_on_hosts(hosts, one)
        return time.monotonic() - start

    def scp(self, hosts: Sequence[podman.PodmanHost]) -> float:
        start = time.monotonic()
        with self.pool() as pool:
            run_on_hosts(hosts, lambda h: pool.get(h.ip, h.credentials).run("mkdir -p /bench/scp"))
        opts = ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                "-o", "BatchMode=yes", "-o", "LogLevel=ERROR", "-i", str(self.key)]  # fmt: skip

        def one(h: podman.PodmanHost) -> None:
            subprocess.run(["scp", "-r", "-q", *opts, str(self.l1 / "opt"), str(self.l2 / "opt"),
                            f"root@{h.ip}:/bench/scp/"], check=True, timeout=1800)  # fmt: skip

        run_on_hosts(hosts, one)
        return time.monotonic() - start

    def verify_tree(self, hosts: Sequence[podman.PodmanHost], where: str, files: int,
                    total: int) -> None:  # fmt: skip
        cmd = f"find /bench/{where} -type f | wc -l; du -sb --apparent-size /bench/{where}/opt"
        with self.pool() as pool:
            res = run_on_hosts(hosts, lambda h: pool.get(h.ip, h.credentials).run(cmd).stdout)
        for name, out in res.results.items():
            n, size = out.split()[0], out.split()[1]
            assert int(n) == files, (name, where, n)
            assert int(size) >= total, (name, where, size, total)


# ---------------------------------------------------------------- run


def machine() -> str:
    cpu = cpu_model()
    ssh_v = subprocess.run(["ssh", "-V"], capture_output=True, text=True).stderr.strip()
    return (f"- nproc: {os.cpu_count()}\n- memory: {memory_gib():.1f} GiB\n"
            f"- kernel: {platform.release()}\n- CPU: {cpu}\n"
            f"- Python {platform.python_version()}, paramiko {paramiko.__version__}, {ssh_v}\n"
            f"- hosts: podman {podman.HostImage().tag} containers (systemd + sshd, plus this "
            f"machine's zstd and openssl commands) on this machine, sharing its "
            f"{os.cpu_count()} cores with the sender")  # fmt: skip


def sender_cpu() -> float:
    """CPU seconds of this process and its finished children (scp)."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


_CGROUPS: dict[str, Path] = {}


def host_cpu(hosts: Sequence[podman.PodmanHost]) -> float:
    """CPU seconds the hosts' containers used so far (cgroup v1 cpuacct)."""
    total = 0
    for h in hosts:
        path = _CGROUPS.get(h.container)
        if path is None:
            pid = subprocess.run(["podman", "inspect", "-f", "{{.State.Pid}}", h.container],
                                 capture_output=True, text=True, check=True).stdout.strip()
            line = next(x for x in Path(f"/proc/{pid}/cgroup").read_text().splitlines()
                        if ":cpuacct" in x or ",cpuacct" in x)  # fmt: skip
            path = Path("/sys/fs/cgroup/cpuacct" + line.split(":", 2)[2]) / "cpuacct.usage"
            _CGROUPS[h.container] = path
        total += int(path.read_text())
    return total / 1e9


def timed(fn: Callable[[], float], label: str, log: Callable[[str], None],
          r: dict[str, float], key: str, hosts: Sequence[podman.PodmanHost]) -> None:  # fmt: skip
    c0, h0 = sender_cpu(), host_cpu(hosts)
    t = fn()
    r[key] = t
    r[key + "_cpu"] = sender_cpu() - c0
    r[key + "_hcpu"] = host_cpu(hosts) - h0
    log(f"  {label}: {t:.2f} s (sender CPU {r[key + '_cpu']:.1f} s, "
        f"hosts CPU {r[key + '_hcpu']:.1f} s)")  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", default="1,2,4,8")
    ap.add_argument("--size-mb", type=int, default=500)
    ap.add_argument("--work", default="/var/tmp/kbuild-bench-distribute")
    ap.add_argument("--no-shaped", action="store_true")
    ap.add_argument("--runs", type=int, default=3, help="rounds per host count (medians)")
    ap.add_argument("--data-on", choices=tuple(PLACES), default="ext4",
                    help="where the hosts write: a fresh journaled ext4 (the default), their "
                         "data volume (where `kbuild run --provider podman` puts the data "
                         "root), their container root (overlay) or a tmpfs")  # fmt: skip
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "distribute.md"))
    args = ap.parse_args()
    counts = [int(x) for x in args.hosts.split(",")]
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    load_before = os.getloadavg()
    loads = LoadSampler()
    log("preparing trees and image ...")
    l1, l2, files, total = make_trees(work, args.size_mb)
    store = Store(work / "store")
    image = make_image(store, l1, l2)
    blob_total = sum(layer.size for layer in image.layers)
    # `kbuild apply` validates and scans the layers once at plan time (a cached
    # store record) before it sends anything; do the same outside the timing.
    scan_image(store, image)
    log(f"  {files} files, {total / MB:.0f} MB unpacked, {blob_total / MB:.0f} MB as zstd blobs")

    cluster = f"bench{os.getpid()}"
    tmp = Path(tempfile.mkdtemp(prefix="kbuild-bench-"))
    key = tmp / "id"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    rows: dict[str, list[dict[str, float]]] = {}
    hosts: list[podman.PodmanHost] = []
    try:
        log(f"starting {max(counts)} hosts ...")
        hosts = start_hosts(cluster, max(counts), tmp / "id.pub")
        b = Bench(store, image, hosts, l1, l2, key, tmp / "known_hosts")
        for h in hosts:
            place_data(h.container, args.data_on)
        # Warm-up, not timed: every host receives the image once by each way,
        # so the first method timed on a host pays no first-write costs.
        log("warm-up ...")
        for method in (b.kbuild, b.sftp):
            b.clean(hosts)
            method(hosts)
        b.clean(hosts)
        modes = [("unshaped", False)] + ([] if args.no_shaped else [("200 Mbit/s", True)])
        for mode, shaped in modes:
            shape(hosts, shaped)
            rows[mode] = []
            for n in counts:
                hs = hosts[:n]
                samples = []
                for run in range(args.runs):
                    log(f"[{mode}] {n} host(s), run {run + 1}/{args.runs}")
                    samples.append(b.one_round(hs, files, total, log))
                r = {k: statistics.median(x[k] for x in samples) for k in samples[0]}
                ratios = [x["sftp"] / x["kbuild"] for x in samples]
                r["ratio_min"], r["ratio_max"] = min(ratios), max(ratios)
                rows[mode].append(r)
            shape(hosts, False)
    finally:
        loads.stop()
        for h in hosts:
            unplace_data(h.container)
        podman.delete_cluster(cluster)
        subprocess.run(["rm", "-rf", str(tmp)], check=False)

    out = [
        "# Benchmark: layers to hosts",
        "",
        f"Image: {total / MB:.0f} MB unpacked in {files} files — one layer of "
        f"{len(list((l1 / 'opt' / 'big').iterdir()))} large files, one of 5,000 small files "
        f"(this machine's own binaries and libraries, so real, compressible data); "
        f"{blob_total / MB:.0f} MB as zstd-3 layer blobs.",
        "",
        "Methods, all in the same run, all hosts in parallel:",
        "",
        "- **kbuild**: `kbuild.runtime.distribute` (preflight facts, missing layers, one "
        "zstd stream per layer over an SSH exec channel, sha256-checked and unpacked on "
        "the host); one paramiko connection per host.",
        "- **kbuild, no zstd on host**: same, the sender decompresses and sends the tar.",
        "- **SFTP file by file**: sealer's way — the unpacked tree, each file `put` over "
        "paramiko SFTP.",
        "- **scp -r**: OpenSSH scp of the unpacked tree (OpenSSH 9 scp speaks SFTP).",
        "- **re-run**: kbuild again with every layer present on every host (new "
        "connections, preflight, layer check; nothing sent).",
        "",
        f"Times in seconds (wall clock), each the median of {args.runs} rounds; in a round "
        "every method runs once, one after the other. Ratios: how many times faster kbuild "
        "is (of the medians, and the lowest–highest of the rounds). Before the "
        "timings every host received the image once by kbuild and once by SFTP, untimed "
        "(warm-up), and every timing starts from an empty target on the host.",
        "",
        f"Where the hosts write, for every method: {PLACES[args.data_on]}.",
        "",
    ]
    for mode, rs in rows.items():
        out += [f"## Links {mode}", ""]
        out += ["| hosts | kbuild | kbuild, no zstd on host | SFTP file by file | scp -r | "
                "SFTP ÷ kbuild | SFTP ÷ kbuild, each round | scp ÷ kbuild | "
                "re-run (all present) | MB sent per host |",
                "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
        for r in rs:
            out.append(
                f"| {int(r['n'])} | {r['kbuild']:.1f} | {r['kbuild_nozstd']:.1f} | "
                f"{r['sftp']:.1f} | {r['scp']:.1f} | {r['sftp'] / r['kbuild']:.1f}× | "
                f"{r['ratio_min']:.1f}–{r['ratio_max']:.1f}× | "
                f"{r['scp'] / r['kbuild']:.1f}× | {r['rerun']:.2f} | {r['sent_mb']:.0f} |"
            )
        out += ["", "CPU seconds (medians) spent by the sender (this process and its scp "
                "children) / by all the hosts together:", "",
                "| hosts | kbuild | kbuild, no zstd on host | SFTP file by file | scp -r | "
                "re-run |", "|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
        for r in rs:
            cells = [f"{r[k + '_cpu']:.1f} / {r[k + '_hcpu']:.1f}"
                     for k in ("kbuild", "kbuild_nozstd", "sftp", "scp", "rerun")]  # fmt: skip
            out.append(f"| {int(r['n'])} | " + " | ".join(cells) + " |")
        last = rs[-1]
        n_last = int(last["n"])
        out += ["", f"Per host at N={n_last}: sender CPU kbuild "
                f"{last['kbuild_cpu'] / n_last:.2f} s, SFTP {last['sftp_cpu'] / n_last:.2f} s "
                f"({last['sftp_cpu'] / max(last['kbuild_cpu'], 1e-9):.1f}× more), scp "
                f"{last['scp_cpu'] / n_last:.2f} s; hosts CPU kbuild "
                f"{last['kbuild_hcpu'] / n_last:.2f} s, SFTP {last['sftp_hcpu'] / n_last:.2f} s."]
        base = rs[0]["kbuild"]
        growth = ", ".join(f"N={int(r['n'])}: {r['kbuild'] / base:.2f}" for r in rs)
        out += ["", f"Growth with N (kbuild time ÷ time for 1 host): {growth}", ""]
    out += [
        "## Machine",
        "",
        machine(),
        "",
        f"Load average (1 min) at start {load_before[0]:.1f}, at end {os.getloadavg()[0]:.1f}; "
        f"sampled every {LOAD_EVERY} s during the run: {loads.summary()}. The methods run "
        "interleaved in the same run, so their ratios are comparable even when other work "
        "shares the machine.",
        "",
        "Sender, hosts, sshd, zstd and tar on the hosts all share the same cores, so the "
        "unshaped numbers are CPU-bound (paramiko's AES-GCM and the Python GIL on the "
        "sender side). Shaping: `tc qdisc replace dev IFACE root "
        f"{SHAPE}` on each host's eth0 and on its veth on this machine (both directions).",
        "",
        f"Command: `python benchmarks/distribute.py --hosts {args.hosts} --size-mb "
        f"{args.size_mb}" + (" --no-shaped" if args.no_shaped else "")
        + (f" --runs {args.runs}" if args.runs != 3 else "")
        + (f" --data-on {args.data_on}" if args.data_on != "ext4" else "") + "`",
        "",
    ]
    text = "\n".join(out)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    threading.stack_size(4 * 1024 * 1024)
    raise SystemExit(main())
