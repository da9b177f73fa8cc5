"""A driver's own flows (backup, certificates, upgrade…) through lifecycle.run_flow."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest

from kbuild.errors import ClusterError
from kbuild.layerstore import Store
from kbuild.runtime import clusterfile as cfmod
from kbuild.runtime import lifecycle
from kbuild.runtime.clusterfile import Host
from kbuild.runtime.driver import ClusterDriver, PhaseList
from kbuild.runtime.phases.base import Phase
from kbuild.runtime.phases.context import Context, Options
from kbuild.runtime.state import StateDir
from tests.runtime.phases.harness import build_image


class Say(Phase):
    title = "say"
    scope = "cluster"
    recorded = False

    def run(self, ctx: Context, host: Host) -> None:
        words = str(ctx.params["words"])
        ctx.results["said"] = ctx.conn(host).run(f"echo {words} from $(hostname)").stdout


class Demo(ClusterDriver):
    kind = "demo"

    @classmethod
    def claims(cls, labels: Mapping[str, str]) -> bool:
        return labels.get("org.test.kind") == "demo"

    def extend(self, flow: str, phases: PhaseList) -> None:
        if flow == "say-hello":
            phases.add(Say())


@pytest.fixture
def opts(tmp_path: Path) -> Options:
    store = Store(tmp_path / "store")
    build_image(store, labels={"org.test.kind": "demo"})
    state = tmp_path / "state"
    cf = cfmod.from_flags("demo:1", masters=["127.0.0.1"], cluster_name="local")
    StateDir("local", state).save_clusterfile(cf)
    return Options(store=store, state_root=state, drivers=(Demo,))


def test_a_driver_flow_runs_on_the_lead_master_and_returns_results(opts: Options) -> None:
    result = lifecycle.run_flow("local", "say-hello", opts, params={"words": "hi"})
    assert [p.title for p in result.phases] == ["say"]
    assert str(result.results["said"]).startswith("hi from ")
    planned = lifecycle.run_flow("local", "say-hello", opts, params={"words": "x"}, dry_run=True)
    assert planned.results == {} and [p.hosts for p in planned.phases] == [["127.0.0.1"]]


def test_a_flow_the_kind_lacks_is_an_error(opts: Options) -> None:
    with pytest.raises(ClusterError, match=r"cluster local \(demo\) has no backup"):
        lifecycle.run_flow("local", "backup", opts)
    bare = Options(store=opts.store, state_root=opts.state_root)
    with pytest.raises(ClusterError, match="of no known kind"):
        lifecycle.run_flow("local", "say-hello", bare)
