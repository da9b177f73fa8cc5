"""Broken connections and dying registries: retries, resume, clear failures."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from kbuild.errors import RegistryError
from kbuild.layerstore import Store
from kbuild.registry import (
    BlobStarted,
    ClientOptions,
    Retrying,
    RetryPolicy,
    pull_image,
    push_image,
)
from tests.fixtures.registry import CutProxy, RegistryServer

from .images import make_image, random_bytes

pytestmark = pytest.mark.integration
MB = 1 << 20


def _wait_for(cond: Callable[[], bool], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.02)


def test_registry_dies_mid_push_is_retried_then_reported_then_resumed(
        open_registry: RegistryServer, cut_proxy_factory: Callable[[int], CutProxy],
        tmp_path: Path) -> None:
    store = Store(tmp_path / "s")
    desc = make_image(store, "app:1", [{"big": random_bytes(6 * MB)}])
    proxy = cut_proxy_factory(open_registry.port)
    proxy.rate = 3 * MB
    events: list[object] = []
    killer = threading.Thread(target=lambda: (_wait_for(lambda: proxy.up_bytes > MB),
                                              open_registry.kill()))
    killer.start()
    opts = ClientOptions(retry=RetryPolicy(attempts=3, max_time=4, base=0.2), chunk_size=2 * MB)
    started = time.monotonic()
    with pytest.raises(RegistryError, match=r"gave up after \d attempts") as info:
        push_image(store, "app:1", f"{proxy.host}/r/app:1", progress=events.append,
                   options=opts)
    killer.join()
    assert time.monotonic() - started < 30
    assert f"{proxy.host}/r" in str(info.value)
    assert [e for e in events if isinstance(e, Retrying)], "no retry before giving up"

    # the registry comes back while the next push is retrying: it resumes and completes
    open_registry.kill()
    events.clear()
    proxy.rate = None
    restarter = threading.Timer(1.0, open_registry.start)
    restarter.start()
    try:
        got = push_image(store, "app:1", f"{proxy.host}/r/app:1", progress=events.append,
                         options=ClientOptions(retry=RetryPolicy(attempts=10, max_time=30,
                                                                 base=0.3),
                                               chunk_size=2 * MB))
    finally:
        restarter.join()
    assert got.digest == desc.digest
    assert [e for e in events if isinstance(e, Retrying)]
    assert pull_image(Store(tmp_path / "p"), f"{open_registry.host}/r/app:1").digest \
        == desc.digest


def test_chunked_upload_resumes_at_the_registry_offset(
        open_registry: RegistryServer, cut_proxy_factory: Callable[[int], CutProxy],
        tmp_path: Path) -> None:
    """The connection drops as the 3rd PATCH goes out: GET the upload, go on at its Range."""
    store = Store(tmp_path / "s")
    size = 5 * MB
    desc = make_image(store, "app:1", [{"big": random_bytes(size)}])
    proxy = cut_proxy_factory(open_registry.port)
    proxy.cut_on = (b"PATCH ", 3)
    events: list[object] = []
    got = push_image(store, "app:1", f"{proxy.host}/c/app:1", progress=events.append,
                     options=ClientOptions(chunk_size=MB,
                                           retry=RetryPolicy(base=0.05, max_time=20)))
    assert got.digest == desc.digest
    assert proxy.cuts == 1
    log = open_registry.access_log()
    status = [line for line in log if line.startswith("GET") and "/blobs/uploads/" in line]
    assert len(status) == 1, "the client did not ask the registry for the upload offset"
    # one session for the big blob (no restart) and one for the small config blob
    assert len([line for line in log if line.startswith("POST")]) == 2
    layer_size = store.read_manifest(desc)["layers"][0]["size"]
    assert len([line for line in log if line.startswith("PATCH")]) == -(-layer_size // MB)
    assert proxy.up_bytes < size + MB
    assert pull_image(Store(tmp_path / "p"), f"{open_registry.host}/c/app:1").digest \
        == desc.digest


def test_chunked_upload_cut_mid_chunk_starts_a_new_session(
        open_registry: RegistryServer, cut_proxy_factory: Callable[[int], CutProxy],
        tmp_path: Path) -> None:
    """distribution 2.8 invalidates an upload whose PATCH broke mid-body: start over, finish."""
    store = Store(tmp_path / "s")
    size = 5 * MB
    desc = make_image(store, "app:1", [{"big": random_bytes(size)}])
    proxy = cut_proxy_factory(open_registry.port)
    proxy.cut_after = int(2.5 * MB)
    got = push_image(store, "app:1", f"{proxy.host}/c/app:1",
                     options=ClientOptions(chunk_size=MB,
                                           retry=RetryPolicy(base=0.05, max_time=20)))
    assert got.digest == desc.digest and proxy.cuts == 1
    log = open_registry.access_log()
    assert [line for line in log if line.startswith("GET") and "/blobs/uploads/" in line]
    assert len([line for line in log if line.startswith("POST")]) == 3
    assert pull_image(Store(tmp_path / "p"), f"{open_registry.host}/c/app:1").digest \
        == desc.digest


def test_download_resumes_with_range(open_registry: RegistryServer,
                                     cut_proxy_factory: Callable[[int], CutProxy],
                                     tmp_path: Path) -> None:
    src = Store(tmp_path / "s")
    size = 4 * MB
    desc = make_image(src, "app:1", [{"big": random_bytes(size)}])
    push_image(src, "app:1", f"{open_registry.host}/d/app:1")
    proxy = cut_proxy_factory(open_registry.port)
    proxy.cut_down_after = 2 * MB
    events: list[object] = []
    dst = Store(tmp_path / "d")
    got = pull_image(dst, f"{proxy.host}/d/app:1", progress=events.append,
                     options=ClientOptions(retry=RetryPolicy(base=0.05, max_time=20)))
    assert got.digest == desc.digest
    assert proxy.cuts == 1
    assert [e for e in events if isinstance(e, Retrying)]
    layer_size = src.read_manifest(desc)["layers"][0]["size"]
    assert proxy.down_bytes < layer_size + 256 * 1024, "the download did not resume"
    layer = dst.read_manifest(got)["layers"][0]["digest"]
    assert dst.has_blob(layer)


def test_pull_from_dead_registry_fails_bounded(open_registry: RegistryServer,
                                               tmp_path: Path) -> None:
    open_registry.kill()
    started = time.monotonic()
    with pytest.raises(RegistryError, match="cannot reach the registry"):
        pull_image(Store(tmp_path / "d"), f"{open_registry.host}/x/app:1",
                   options=ClientOptions(retry=RetryPolicy(attempts=3, max_time=3, base=0.1)))
    assert time.monotonic() - started < 10


def test_next_push_continues_a_recorded_upload(open_registry: RegistryServer,
                                               cut_proxy_factory: Callable[[int], CutProxy],
                                               tmp_path: Path) -> None:
    """A push that died between chunks: the next one (a new client) resumes the session."""
    store = Store(tmp_path / "s")
    desc = make_image(store, "app:1", [{"big": random_bytes(4 * MB)}])
    proxy = cut_proxy_factory(open_registry.port)
    proxy.cut_on = (b"PATCH ", 3)
    with pytest.raises(RegistryError):
        push_image(store, "app:1", f"{proxy.host}/n/app:1",
                   options=ClientOptions(chunk_size=MB, retry=RetryPolicy(attempts=1)))
    first_up = proxy.up_bytes
    events: list[object] = []
    got = push_image(store, "app:1", f"{proxy.host}/n/app:1", progress=events.append,
                     options=ClientOptions(chunk_size=MB))
    assert got.digest == desc.digest
    layer = store.read_manifest(desc)["layers"][0]["digest"]
    resumed = [e for e in events if isinstance(e, BlobStarted) and e.digest == layer
               and e.offset > 0]
    assert resumed and resumed[0].offset == 2 * MB
    assert proxy.up_bytes - first_up < 3 * MB
    posts = [line for line in open_registry.access_log() if line.startswith("POST")]
    assert len(posts) == 2  # the big blob's one session + the config blob
