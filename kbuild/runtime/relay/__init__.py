"""Relay: the client sends each missing layer about once; hosts pass it on
to each other over SSH while they receive it (:mod:`.plan` decides who
sends to whom, :mod:`.keys` makes the run's credentials, :mod:`.session`
runs it and removes every trace)."""

from kbuild.runtime.relay.keys import RUN_BASE, RelayKey, authorized_line, new_run_id, run_dir
from kbuild.runtime.relay.plan import LayerTree, RelayPlan, plan_relay, tree
from kbuild.runtime.relay.session import relay_layers
from kbuild.runtime.relay.types import RelayHost, RelayResult

__all__ = [
    "RUN_BASE",
    "LayerTree",
    "RelayHost",
    "RelayKey",
    "RelayPlan",
    "RelayResult",
    "authorized_line",
    "new_run_id",
    "plan_relay",
    "relay_layers",
    "run_dir",
    "tree",
]
