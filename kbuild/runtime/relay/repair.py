"""After the trees ran: hosts below a host that failed get the layer again
from the tree's root, which kept the stream (``hop.sh … keep``), in a new
tree over them; the client sends nothing for it. What is still missing
then (the root failed too, a host is down) comes from the client directly
(provision's ``send_layers``)."""

from __future__ import annotations

import shlex
import threading
from concurrent.futures import ThreadPoolExecutor

from kbuild.errors import KbuildError
from kbuild.runtime.distribute import present_layers
from kbuild.runtime.relay.plan import LayerTree, RelayPlan, tree
from kbuild.runtime.relay.types import RelayResult, RelaySession
from kbuild.runtime.runevents import HostStatus, Progress, emit

__all__ = ["repair_plan", "resend_all"]


def repair_plan(
    session: RelaySession, plan: RelayPlan, result: RelayResult, can_send: set[str]
) -> RelayPlan:
    """Trees from each complete root over the live hosts of its tree that lack the layer."""
    ips = sorted({ip for t in plan.trees.values() for ip in t.hosts()} - set(result.failed))
    have: dict[str, set[str]] = {}
    lock = threading.Lock()

    def look(ip: str) -> None:
        h = session.hosts[ip]
        layers = [session.streams[x].layer for x, t in plan.trees.items() if ip in t.hosts()]
        try:
            got = present_layers(h.conn, session.data_root, layers)
        except KbuildError as exc:
            with lock:
                result.failed.setdefault(ip, str(exc))
            return
        with lock:
            have[ip] = got

    with ThreadPoolExecutor(max_workers=max(1, min(32, len(ips)))) as pool:
        list(pool.map(look, ips))
    out = RelayPlan()
    for hex_, t in plan.trees.items():
        if hex_ not in have.get(t.root, set()):
            continue  # the root has no complete copy: the client sends it
        orphans = [ip for ip in t.hosts()[1:] if ip in have and hex_ not in have[ip]]
        if orphans:
            senders = (can_send & set(have)) | {t.root}
            out.trees[hex_], left = tree([t.root, *orphans], senders, session.settings.fanout)
            for ip in left:
                out.direct.setdefault(ip, []).append(hex_)
    return out


def resend_all(
    session: RelaySession, repair: RelayPlan, result: RelayResult, progress: Progress | None
) -> None:
    """Each repair tree's root passes its kept copy on (no bytes from the client)."""

    def one(item: tuple[str, LayerTree]) -> None:
        hex_, t = item
        root = session.hosts[t.root]
        kept = f"{session.data_root}/layers/.relay-{session.run_id}-{hex_}"
        emit(progress, HostStatus(root.ip, "relay", f"layer {hex_[:12]} again to "
                                  f"{len(t.hosts()) - 1} hosts from its copy"))  # fmt: skip
        cmd = (f"sh {shlex.quote(session.dir + '/hop.sh')} {shlex.quote(session.dir)} "
               f"{shlex.quote(hex_)} <{shlex.quote(kept)}")  # fmt: skip
        try:
            root.conn.run(cmd, timeout=session.settings.stall_timeout * 10 + 60)
        except KbuildError as exc:
            result.failed.setdefault(root.ip, str(exc))

    items = list(repair.trees.items())
    with ThreadPoolExecutor(max_workers=max(1, min(session.settings.streams, len(items)))) as p:
        list(p.map(one, items))
