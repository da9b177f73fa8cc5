"""Every phase as data: ``cases/*.yaml`` give a Clusterfile, the recorded state
and what the hosts answer; the test runs the named phases of a flow's list on
recording hosts and compares the commands each host got, the state recorded
and the error with the case. A changed phase shows up as a diff of its
commands (``KBUILD_UPDATE_CASES=1`` rewrites the expectations; review them)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kbuild.errors import KbuildError
from kbuild.runtime.driver import CONVERGE
from kbuild.runtime.drivers.kubernetes import KubernetesDriver, nodes
from kbuild.runtime.phases.lists import start_converge
from kbuild.runtime.phases.manager import Manager
from tests.runtime.phases.harness import (
    CASES,
    UPDATE,
    flow_list,
    load_case,
    save_case,
    scenario,
    write_case_archive,
)
from tests.runtime.recording import Facts


def _observe(sc: Any, error: str | None) -> dict[str, Any]:
    state = sc.ctx.state
    return {
        "commands": {ip: cmds for ip, cmds in sorted(sc.commands.items())},
        "recorded": {
            "cluster": list(state.cluster_steps),
            **{ip: list(rec.steps) for ip, rec in sorted(state.hosts.items()) if rec.steps},
        },
        "error": error,
    }


@pytest.mark.parametrize("path", sorted(CASES.glob("*.yaml")), ids=lambda p: p.stem)
def test_phase_case(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nodes, "STEADY", 0.0)  # one answer is the hosts' whole story
    case = load_case(path)
    drivers = (KubernetesDriver,) if case.get("driver") == "kubernetes" else ()
    sc = scenario(
        tmp_path, case["clusterfile"], Facts.from_data(case.get("facts") or {}),
        state=case.get("state"), drivers=drivers, image_labels=case.get("labels"),
        arches=case.get("platforms") or (),
    )  # fmt: skip
    ctx = sc.ctx
    hosts = ctx.cf.cluster.all_hosts()
    wanted = case.get("targets", "all")
    targets = hosts if wanted == "all" else [h for h in hosts if h.ip in wanted]
    if case.get("flow", CONVERGE) == CONVERGE:
        start_converge(ctx, targets)
    else:
        ctx.targets = targets
    ctx.params = {k: v.replace("{tmp}", str(tmp_path)) if isinstance(v, str) else v
                  for k, v in (case.get("params") or {}).items()}  # fmt: skip
    if "archive" in case:
        write_case_archive(tmp_path / "backup.kbk", case["archive"])
    if case.get("load_image", True):
        ctx.load_image(None)
    full = flow_list(case.get("flow", "converge"), ctx)
    only = case.get("phases")
    mgr = (
        Manager([p for p in full.phases if p.title in only], keep_going=full.keep_going)
        if only
        else full
    )
    error = None
    try:
        mgr.run(ctx)
    except KbuildError as exc:
        error = str(exc).replace(str(tmp_path), "{tmp}")
    observed = _observe(sc, error)
    if "params" in case:  # a driver's flow: which archives it left here
        observed["archives"] = sorted(p.name for p in tmp_path.glob("*.kbk"))
    if UPDATE:
        case["expect"] = observed
        save_case(path, case)
    assert observed == case["expect"]
