"""Fixtures of the builder tests: a fresh store and context per test."""

from __future__ import annotations

from pathlib import Path

import pytest

from kbuild.layerstore import Store


@pytest.fixture()
def store(tmp_path: Path) -> Store:
    """An empty store under the test's temp dir."""
    return Store(tmp_path / "root")


@pytest.fixture()
def ctx(tmp_path: Path) -> Path:
    """An empty build context."""
    path = tmp_path / "ctx"
    path.mkdir()
    return path
