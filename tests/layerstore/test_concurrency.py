"""Two kbuild processes on one store; memory stays flat for a large layer."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from kbuild.layerstore import Store

WORKER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from kbuild.layerstore import Store, TarEntry, pack_layer
    root, me, go = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    store = Store(root)
    shared = pack_layer(store, [TarEntry("shared", "file", data=b"s" * 300000)])
    deadline = time.time() + 30
    while not go.exists() and time.time() < deadline:
        time.sleep(0.001)
    for i in range(60):
        layer = pack_layer(store, [TarEntry("f", "file", data=f"{me}-{i}".encode())])
        desc = store.write_image({"os": "linux", "architecture": "amd64"}, [shared, layer])
        store.tag(f"proc{me}/img:{i}", desc)
        store.put_bytes(b"same blob from both processes" * 1000)
    """
)


GC_LOOP = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from kbuild.layerstore import Store
    store, go, stop = Store(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    deadline = time.time() + 60
    while not go.exists() and time.time() < deadline:
        time.sleep(0.001)
    runs = 0
    while not stop.exists() and time.time() < deadline:
        store.gc()
        runs += 1
    print(runs)
    """
)


def test_two_processes_tag_into_one_store(tmp_path: Path) -> None:
    root = tmp_path / "root"
    go = tmp_path / "go"
    stop = tmp_path / "stop"
    Store(root)
    gc = subprocess.Popen([sys.executable, "-c", GC_LOOP, str(root), str(go), str(stop)],
                          stdout=subprocess.PIPE, text=True)
    procs = [
        subprocess.Popen([sys.executable, "-c", WORKER, str(root), str(n), str(go)])
        for n in (1, 2)
    ]
    try:
        go.touch()
        for p in procs:
            assert p.wait(timeout=120) == 0
        stop.touch()
        out, _ = gc.communicate(timeout=60)
        assert gc.returncode == 0 and int(out) > 0  # prune ran alongside the builds
    finally:
        for p in [*procs, gc]:
            if p.poll() is None:
                p.kill()
                p.wait()
    store = Store(root)
    names = sorted(r.familiar for r, _ in store.images())
    assert len(names) == 120  # no lost index.json update
    assert names[0] == "proc1/img:0"
    assert store.fsck() == []  # nothing an image needs was collected
    assert list(store.tmp_dir.iterdir()) == []


SNAPSHOT = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from kbuild.layerstore import Store
    store, go = Store(sys.argv[1]), Path(sys.argv[2])
    deadline = time.time() + 30
    while not go.exists() and time.time() < deadline:
        time.sleep(0.001)
    print(store.snapshot(sys.argv[3], sys.argv[4]))
    """
)


def test_two_processes_snapshot_one_layer(tmp_path: Path) -> None:
    from kbuild.layerstore import TarEntry, pack_layer

    store = Store(tmp_path / "root")
    entries = [TarEntry(f"d{i}/f{j}", "file", data=b"x" * 1000)
               for i in range(20) for j in range(50)]
    layer = pack_layer(store, entries)
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", SNAPSHOT, str(store.root), str(go),
                               layer.diff_id, layer.digest], stdout=subprocess.PIPE, text=True)
             for _ in range(2)]
    go.touch()
    outs = [p.communicate(timeout=60)[0].strip() for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert outs[0] == outs[1] == str(store.snapshots_dir / layer.diff_id[7:])
    assert len(list(Path(outs[0]).rglob("f*"))) == 1000
    assert [p.name for p in store.snapshots_dir.iterdir() if p.name.startswith(".tmp")] == []


MEMORY = textwrap.dedent(
    """
    import json, os, sys
    from kbuild.layerstore import Store, TarEntry, pack_layer

    def peak_kb():
        # VmHWM belongs to this process's own address space; ru_maxrss would
        # carry the parent's (pytest's) peak across fork + exec.
        with open("/proc/self/status") as f:
            return next(int(l.split()[1]) for l in f if l.startswith("VmHWM:"))

    root, big = sys.argv[1], sys.argv[2]
    with open(big, "wb") as f:  # 1 GiB: sparse zeros with some data blocks
        for i in range(0, 1 << 30, 64 << 20):
            f.seek(i)
            f.write(os.urandom(1 << 20))
        f.truncate(1 << 30)
    before = peak_kb()
    info = pack_layer(Store(root), [TarEntry("big", "file", source=big)])
    after = peak_kb()
    print(json.dumps({"before_kb": before, "after_kb": after, "tar": info.uncompressed_size}))
    """
)


def test_memory_stays_flat_for_a_1gib_layer(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-c", MEMORY, str(tmp_path / "root"), str(tmp_path / "big")],
        check=True, capture_output=True, text=True, timeout=300,
    )
    result = json.loads(out.stdout)
    assert result["tar"] > 1 << 30
    grown_mb = (result["after_kb"] - result["before_kb"]) / 1024
    assert result["after_kb"] / 1024 < 200, result
    assert grown_mb < 150, result
