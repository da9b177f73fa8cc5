"""Fixtures shared across the test packages (real registries, real podman hosts).

With ``KBUILD_TESTS_NO_SKIP=1`` (set by ``scripts/test.sh``, the test command)
a skipped test counts as failed: setup.sh installs everything the skips wait
for, so a skip there means a part of the suite did not run.
"""

from __future__ import annotations

import os
from collections.abc import Generator

import pytest

pytest_plugins = ["tests.fixtures.hosts", "tests.fixtures.registry", "tests.fixtures.helm"]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if report.skipped and os.environ.get("KBUILD_TESTS_NO_SKIP") == "1":
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"skipped in the test command (KBUILD_TESTS_NO_SKIP=1): {reason}"
