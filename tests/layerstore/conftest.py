"""Fixtures of the layer store tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from kbuild.layerstore import Store


@pytest.fixture
def store(tmp_path: Path) -> Store:
    """An empty store under the test's temp dir."""
    return Store(tmp_path / "root")
