"""The in-process CLI runner shared by the CLI tests."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from kbuild.cli.main import main


@dataclass
class Outcome:
    """Exit status and output of one in-process CLI call."""

    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> Callable[..., Outcome]:  # fmt: skip
    """Run ``kbuild ARGS`` in this process (as the entry point does) and capture it."""
    monkeypatch.setenv("KBUILD_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("KBUILD_ROOT", str(tmp_path / "store"))

    def run(*args: str) -> Outcome:
        capsys.readouterr()
        code = 0
        try:
            main(list(args))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        out = capsys.readouterr()
        return Outcome(code, out.out, out.err)

    return run
