"""Who passes which layer to whom (no hosts needed: pure functions).

Each layer some hosts lack gets a tree over those hosts: the client sends
the layer to the root only; every host passes it on, while it arrives, to
at most ``fanout`` children (depth log_fanout N, each host sends at most
``fanout`` copies). The hosts of a tree are rotated by the layer's index, so
the root and the inner hosts differ from layer to layer and the sending
load spreads over the hosts. Only hosts with an ``ssh`` client can send
(inner hosts); the others can only be leaves. A host that cannot take part
at all (no usable stream format, a failed probe, ``relay: false``) gets the
layer from the client directly, as without relay.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

__all__ = ["LayerTree", "RelayPlan", "plan_relay", "tree"]


@dataclass
class LayerTree:
    """One layer's tree: the host the client sends to and each host's children."""

    root: str
    children: dict[str, list[str]] = field(default_factory=dict)

    def hosts(self) -> list[str]:
        """Every host of the tree, root first, parents before children."""
        out = [self.root]
        for h in out:
            out.extend(self.children.get(h, []))
        return out

    def edges(self) -> list[tuple[str, str]]:
        """(sender, receiver) pairs."""
        return [(p, c) for p, kids in self.children.items() for c in kids]


@dataclass
class RelayPlan:
    """The trees by layer (hex) and the hosts that get a layer from the client."""

    trees: dict[str, LayerTree] = field(default_factory=dict)
    direct: dict[str, list[str]] = field(default_factory=dict)
    """host → hexes it gets from the client directly."""

    def senders(self) -> set[str]:
        """Hosts that pass at least one layer on."""
        return {p for t in self.trees.values() for p, kids in t.children.items() if kids}

    def parents_of(self, host: str) -> set[str]:
        """Hosts that send to ``host`` in some tree."""
        return {p for t in self.trees.values() for p, c in t.edges() if c == host}


def tree(hosts: Sequence[str], can_send: set[str], fanout: int) -> tuple[LayerTree, list[str]]:
    """A tree over ``hosts`` (senders first, in the given order); returns it
    and the hosts it has no room for (no sender left for them)."""
    order = [h for h in hosts if h in can_send] + [h for h in hosts if h not in can_send]
    t = LayerTree(order[0])
    left: list[str] = []
    placed = [order[0]]
    for h in order[1:]:
        parent = placed[(len(placed) - 1) // fanout]
        if parent not in can_send:
            left.append(h)
            continue
        t.children.setdefault(parent, []).append(h)
        placed.append(h)
    return t, left


def plan_relay(
    missing: Mapping[str, Sequence[str]],
    *,
    eligible: Mapping[str, set[str]],
    can_send: set[str],
    fanout: int,
) -> RelayPlan:
    """The plan for ``missing`` (hex → hosts lacking it, in host order).

    ``eligible[hex]`` are the hosts that may receive that layer by relay
    (the others get it directly); a layer needs at least two eligible hosts
    lacking it for a tree to pay off.
    """
    plan = RelayPlan()

    def direct(host: str, hex_: str) -> None:
        plan.direct.setdefault(host, []).append(hex_)

    for i, (hex_, hosts) in enumerate(missing.items()):
        ok = [h for h in hosts if h in eligible.get(hex_, set())]
        for h in hosts:
            if h not in ok:
                direct(h, hex_)
        if len(ok) < 2 or not can_send & set(ok):
            for h in ok:
                direct(h, hex_)
            continue
        k = i % len(ok)
        t, left = tree(ok[k:] + ok[:k], can_send, max(1, fanout))
        plan.trees[hex_] = t
        for h in left:
            direct(h, hex_)
    return plan
