"""A pull and a prune on one store: the pull never tags an image whose blobs a prune removed.

docs/layerstore.md: blobs need no lock, and a prune keeps blobs younger than its
grace. A pull that finds a blob already present refreshes it, and the tag is
written (under the store lock GC also holds) only when every blob of the image
is there; a blob removed in between is fetched again.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from kbuild.layerstore import Store
from kbuild.registry import BlobDone, ClientOptions, pull_image, push_image
from tests.fixtures.registry import CutProxy, RegistryServer

from .images import make_image, pushed_and_pulled, random_bytes

pytestmark = pytest.mark.integration
MB = 1 << 20


def _age(store: Store, seconds: float = 3600) -> None:
    old = time.time() - seconds
    for blob in store.blob_dir.iterdir():
        os.utime(blob, (old, old))


def _pulled_then_removed(reg: RegistryServer, tmp_path: Path) -> tuple[Store, str]:
    """A store that pulled ``ref`` and untagged it long ago: its blobs are present but old."""
    dst, ref = pushed_and_pulled(reg.host, tmp_path, 64 << 10)
    dst.untag(ref)
    _age(dst)
    return dst, ref


@pytest.mark.parametrize("grace", [60.0, 0.0], ids=["prune", "prune-grace-0"])
def test_prune_right_after_a_blob_is_found_present(open_registry: RegistryServer,
                                                   tmp_path: Path, grace: float) -> None:
    dst, ref = _pulled_then_removed(open_registry, tmp_path)
    reports = []

    def prune_now(event: object) -> None:  # runs between "blob present" and "image tagged"
        if isinstance(event, BlobDone) and event.how == "present" and not reports:
            reports.append(dst.gc(blob_grace=grace))

    pull_image(dst, ref, progress=prune_now, options=ClientOptions(jobs=1))
    assert reports, "no blob was found present"
    assert dst.fsck() == []
    desc = dst.resolve(ref)
    assert dst.missing_blobs(desc.digest) == []
    if grace:  # the blob found present was refreshed: the prune kept it
        manifest = dst.read_manifest(desc)
        assert manifest["config"]["digest"] not in reports[0].blobs_removed


def test_kbuild_prune_during_kbuild_pull(open_registry: RegistryServer, tmp_path: Path,
                                         cut_proxy_factory: Callable[[int], CutProxy]) -> None:
    src = Store(tmp_path / "src")
    small = {"small": random_bytes(32 << 10)}
    make_image(src, "one:1", [small])
    make_image(src, "two:1", [small, {"big": random_bytes(6 * MB)}])
    proxy = cut_proxy_factory(open_registry.port)
    for name in ("one", "two"):
        push_image(src, f"{name}:1", f"{proxy.host}/race/{name}:1")
    root = tmp_path / "root"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}

    def kbuild(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "kbuild.cli.main", "--root", str(root),
                               *args], capture_output=True, text=True, env=env,
                              timeout=timeout, check=False)

    assert kbuild("pull", f"{proxy.host}/race/one:1").returncode == 0
    assert kbuild("rmi", f"{proxy.host}/race/one:1").returncode == 0
    _age(Store(root))  # its small layer is now an old, unreferenced blob
    proxy.rate = 2 * MB  # the big layer takes ~3 s
    start = proxy.down_bytes
    pruned: list[subprocess.CompletedProcess[str]] = []

    def prune_mid_pull() -> None:
        deadline = time.monotonic() + 30
        while proxy.down_bytes - start < 2 * MB and time.monotonic() < deadline:
            time.sleep(0.02)
        pruned.append(kbuild("prune", "--grace", "0"))

    pruner = threading.Thread(target=prune_mid_pull)
    pruner.start()
    pull = kbuild("pull", f"{proxy.host}/race/two:1", timeout=120)
    pruner.join(timeout=60)
    assert pull.returncode == 0, pull.stderr
    assert pruned and pruned[0].returncode == 0, pruned
    assert "deleted: sha256:" in pruned[0].stdout  # the prune did remove blobs mid-pull
    fsck = kbuild("fsck")
    assert fsck.returncode == 0 and fsck.stdout.startswith("ok:"), fsck.stdout + fsck.stderr
