"""``kbuild upgrade`` refusals before any host, and ``kbuild status`` of a
recorded cluster."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from kbuild.layerstore import Store
from kbuild.runtime import clusterfile as cfmod
from kbuild.runtime.state import ClusterState, HostRecord, StateDir
from tests.cli.conftest import Outcome
from tests.runtime.phases.harness import build_image


def _record(tmp_path: Path) -> tuple[str, str]:
    store = Store(tmp_path / "store")
    build_image(store, "k:1", carried=["docker.io/team/old:1"])
    build_image(store, "k:2", labels={"org.kbuild.kubernetes": "v1.37.2"},
                carried=["docker.io/team/new:2"])
    old, new = store.resolve("k:1").digest, store.resolve("k:2").digest
    sd = StateDir("c1", tmp_path / "state")
    sd.ensure()
    cf = cfmod.from_flags("k:2", masters=["10.0.0.1"], nodes=["10.0.0.2"], cluster_name="c1")
    sd.save_clusterfile(cf)
    state = ClusterState(name="c1", image="k:2", manifest=new, version="v1.37.2",
                         status="done", driver="kubernetes", images=[old, new])  # fmt: skip
    state.hosts["10.0.0.1"] = HostRecord(roles=["master"], image=new, version="v1.37.2")
    state.hosts["10.0.0.2"] = HostRecord(roles=["node"], image=old, version="v1.36.3")
    sd.save_state(state)
    return old, new


def test_status_names_images_and_versions(cli: Callable[..., Outcome], tmp_path: Path) -> None:
    _record(tmp_path)
    out = cli("status", "--format", "json")
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    assert info["version"] == "v1.37.2" and info["image"] == "k:2"
    assert [i["names"] for i in info["images"]] == [["k:1"], ["k:2"]]
    assert {h["ip"]: h["version"] for h in info["hosts"]} == {
        "10.0.0.1": "v1.37.2", "10.0.0.2": "v1.36.3"}  # fmt: skip
    # what the hosts serve: the current image's and what the earlier one carried
    assert info["carried"] == ["docker.io/team/new:2", "docker.io/team/old:1"]
    table = cli("status").stdout
    assert "10.0.0.2" in table and "v1.36.3" in table and "k:1" in table


def test_upgrade_refusals_before_any_host(cli: Callable[..., Outcome], tmp_path: Path) -> None:
    out = cli("upgrade", "k:9", "--cluster-name", "nope")
    assert out.returncode == 1 and "no cluster named 'nope' is recorded" in out.stderr
    _record(tmp_path)
    out = cli("upgrade", "missing:1")
    assert out.returncode == 1 and "missing:1" in out.stderr and "Traceback" not in out.stderr
    # an image of another kind is not an upgrade of a Kubernetes cluster
    out = cli("upgrade", "k:1")
    assert out.returncode == 1
    assert "is a kubernetes cluster" in out.stderr and "k:1 is a none image" in out.stderr
