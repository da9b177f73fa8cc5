"""Test images made with the layer store API."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from kbuild.layerstore import Descriptor, LayerInfo, Store, TarEntry, pack_layer
from kbuild.registry import pull_image, push_image

SKOPEO_TESTS = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("skopeo") is None, reason="skopeo not installed"),
]


def skopeo(*args: str) -> str:
    """Run skopeo; its stdout (the test fails with its stderr)."""
    proc = subprocess.run(["skopeo", *args], capture_output=True, text=True, timeout=300,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def make_layer(store: Store, files: dict[str, bytes], *, compression: str = "zstd") -> LayerInfo:
    """One layer holding ``files``."""
    entries = [TarEntry(path=p, kind="file", data=d, size=len(d)) for p, d in files.items()]
    return pack_layer(store, entries, compression=compression, level=1)


def make_image(store: Store, name: str | None, layers: list[dict[str, bytes]], *,
               arch: str = "amd64", compression: str = "zstd") -> Descriptor:
    """An image of ``layers`` for ``linux/arch``, tagged ``name`` when given."""
    infos = [make_layer(store, files, compression=compression) for files in layers]
    config = {"architecture": arch, "os": "linux",
              "config": {"Env": ["PATH=/usr/bin:/bin"], "Labels": {"test": name or ""}}}
    desc = store.write_image(config, infos)
    if name:
        store.tag(name, desc)
    return desc


def pushed_and_pulled(reg_host: str, tmp_path: Path, size: int) -> tuple[Store, str]:
    """A one-layer image pushed to ``reg_host`` and pulled into a fresh store ``tmp_path/dst``."""
    src = Store(tmp_path / "src")
    make_image(src, "app:1", [{"a": os.urandom(size)}])
    ref = f"{reg_host}/s/app:1"
    push_image(src, "app:1", ref)
    dst = Store(tmp_path / "dst")
    pull_image(dst, ref)
    return dst, ref


def random_bytes(n: int, seed: int = 0) -> bytes:
    """``n`` incompressible bytes (fresh each call: ``seed`` only labels the caller)."""
    del seed
    return os.urandom(n)


def store_at(path: Path) -> Store:
    """A fresh store under ``path``."""
    return Store(path)
