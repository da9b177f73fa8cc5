"""Upgrade without hosts: the version skew policy (the CLI: tests/cli/test_day2.py;
the flow: phases/cases/upgrade*.yaml; on real hosts: tests/kubernetes/test_upgrade_e2e.py)."""

from __future__ import annotations

import pytest

from kbuild.errors import ClusterError
from kbuild.runtime.drivers.kubernetes.versions import Version, check_upgrade


@pytest.mark.parametrize(("running", "target"), [
    ("v1.36.3", "v1.37.2"), ("v1.36.3", "v1.36.4"), ("v1.36.3", "v1.37.0"),
])  # fmt: skip
def test_allowed(running: str, target: str) -> None:
    check_upgrade(running, target)


@pytest.mark.parametrize(("running", "target", "fragment"), [
    ("v1.37.2", "v1.37.2", "runs Kubernetes v1.37.2 already"),
    ("v1.37.2", "v1.36.9", "kbuild does not downgrade"),
    ("v1.37.2", "v1.37.1", "kbuild does not downgrade"),
    ("v1.35.0", "v1.37.2", "skips a minor version"),
    ("v1.37.2", "v2.0.0", "a major version is not an upgrade"),
    ("v1.37.2", "latest", "'latest' is not a Kubernetes version"),
])  # fmt: skip
def test_refused(running: str, target: str, fragment: str) -> None:
    with pytest.raises(ClusterError, match=fragment) as info:
        check_upgrade(running, target)
    if "skips" in fragment:
        assert info.value.hint is not None and "v1.36.x first" in info.value.hint


def test_version_order() -> None:
    assert Version.parse("v1.37.10") > Version.parse("v1.37.9") > Version.parse("v1.36.99")
    assert str(Version.parse("v1.37.2-rc.1")) == "v1.37.2"
