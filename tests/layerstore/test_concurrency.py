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


def test_two_processes_tag_into_one_store(tmp_path: Path) -> None:
    root = tmp_path / "root"
    go = tmp_path / "go"
    procs = [
        subprocess.Popen([sys.executable, "-c", WORKER, str(root), str(n), str(go)])
        for n in (1, 2)
    ]
    try:
        go.touch()
        for p in procs:
            assert p.wait(timeout=120) == 0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    store = Store(root)
    names = sorted(r.familiar for r, _ in store.images())
    assert len(names) == 120  # no lost index.json update
    assert names[0] == "proc1/img:0"
    assert store.fsck() == []
    assert list(store.tmp_dir.iterdir()) == []


MEMORY = textwrap.dedent(
    """
    import json, os, resource, sys
    from kbuild.layerstore import Store, TarEntry, pack_layer
    root, big = sys.argv[1], sys.argv[2]
    with open(big, "wb") as f:  # 1 GiB: sparse zeros with some data blocks
        for i in range(0, 1 << 30, 64 << 20):
            f.seek(i)
            f.write(os.urandom(1 << 20))
        f.truncate(1 << 30)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    info = pack_layer(Store(root), [TarEntry("big", "file", source=big)])
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
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
