"""Hosts of several architectures: the preflight picks each host's platform
from an index, and refuses what the image cannot serve (no hosts needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kbuild.errors import ClusterError, HostError
from kbuild.runtime.phases.manager import Manager
from kbuild.runtime.phases.preflight import PreflightPhase
from tests.runtime.phases.harness import DEMO_CF, scenario
from tests.runtime.recording import Facts


def _facts(master: str, node: str) -> Facts:
    def rule(machine: str) -> list[dict[str, object]]:
        return [{"match": r"^\[preflight.sh\]", "stdout": (
            f"arch={machine}\nuid=0\nsystemd=yes\ntools=sh tar zstd\nmissing=\n"
            "free_kb=99999999\nfstype=ext4\ndata_root_exists=no\noverlay=yes\n")}]
    return Facts.from_data({"10.0.0.2": rule(master), "*": rule(node)})


def _preflight(tmp_path: Path, master: str, node: str, arches: tuple[str, ...]) -> PreflightPhase:
    sc = scenario(tmp_path, DEMO_CF, _facts(master, node), arches=arches)
    sc.ctx.targets = sc.ctx.cf.cluster.all_hosts()
    phase = PreflightPhase()
    Manager([phase]).run(sc.ctx)
    ctx = sc.ctx
    lead, node_host, _ = ctx.cf.cluster.all_hosts()
    assert ctx.image is not None
    assert ctx.image_for(lead).arch == ctx.image.arch
    if ctx.platforms:
        assert ctx.image_for(node_host).manifest_digest != ctx.image.manifest_digest
    return phase


def test_each_host_gets_its_platform_and_the_lead_decides_the_cluster_image(
        tmp_path: Path) -> None:
    phase = _preflight(tmp_path, "aarch64", "x86_64", ("amd64", "arm64"))
    assert {ip: p.arch for ip, p in phase.host_plans.items()} == {
        "10.0.0.2": "arm64", "10.0.0.3": "amd64", "10.0.0.4": "amd64"}
    hexes = {ip: [layer.hex for layer in p.missing] for ip, p in phase.host_plans.items()}
    assert hexes["10.0.0.2"] != hexes["10.0.0.3"] == hexes["10.0.0.4"]


def test_one_architecture_needs_no_second_platform(tmp_path: Path) -> None:
    _preflight(tmp_path, "aarch64", "aarch64", ("amd64", "arm64"))


def test_no_host_of_a_platform_the_index_has(tmp_path: Path) -> None:
    with pytest.raises(ClusterError, match=r"no platform for the hosts: 10.0.0.2 s390x, "
                                           r"10.0.0.3 ppc64le, 10.0.0.4 ppc64le") as info:
        _preflight(tmp_path, "s390x", "ppc64le", ("amd64", "arm64"))
    assert info.value.hint is not None and "linux/amd64, linux/arm64" in info.value.hint


def test_single_platform_image_refuses_the_other_architecture(tmp_path: Path) -> None:
    with pytest.raises(HostError, match=r"10.0.0.3: preflight failed: architecture arm64 "
                                         r"does not match the image's amd64"):
        _preflight(tmp_path, "x86_64", "aarch64", ())
