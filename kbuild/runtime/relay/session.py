"""One relay run: set up the hosts, probe the edges, send each layer to its
tree's root, and remove every trace again (whatever happened).

On each host taking part, ``/run/kbuild-relay/RUNID/`` (0700) holds the
run's files (:func:`host_files`); ``scripts/relay-setup.sh`` makes and ends
it. Failures here never stop the run: a host the relay did not reach keeps
lacking the layer and gets it from the client afterwards (the provision
phase sends what is still missing and names a host that cannot be reached).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from kbuild.errors import KbuildError
from kbuild.layerstore import Store
from kbuild.runtime.clusterfile import Distribution
from kbuild.runtime.executor import FileSpec
from kbuild.runtime.image import Layer
from kbuild.runtime.layers import open_tar, scan_layer
from kbuild.runtime.pool import run_on_hosts
from kbuild.runtime.relay.keys import RelayKey, authorized_line, new_run_id, run_dir
from kbuild.runtime.relay.plan import RelayPlan, plan_relay
from kbuild.runtime.relay.repair import repair_plan, resend_all
from kbuild.runtime.relay.types import RelayHost, RelayResult, Stream
from kbuild.runtime.remote import remote_script, script_text
from kbuild.runtime.runevents import BytesSent, HostStatus, Progress, emit

__all__ = ["RelayHost", "RelayResult", "Session", "relay_layers"]

KEY_LIFETIME = 2 * 3600
"""Seconds the keys stay valid; the hosts' timers clean up then."""

SETUP_WORKERS = 32
"""Hosts set up, probed and cleaned at the same time."""


def choose_stream(store: Store, layer: Layer, tools: Sequence[frozenset[str]]) -> Stream:
    """The blob as stored when every host has its decompressor, else the tar
    (decompressed once here; every hop then checks the diffID). Either way the
    client checked the blob holds a safe tar with the layer's diffID."""
    if layer.compression == "none":
        return Stream(layer, "none", layer.hex, layer.size)
    scan = scan_layer(store, layer)
    if all(layer.compression in t for t in tools):
        return Stream(layer, layer.compression, layer.digest.removeprefix("sha256:"), layer.size)
    return Stream(layer, "none", layer.hex, scan.size)


def relay_layers(
    hosts: Sequence[RelayHost],
    missing: dict[str, list[Layer]],
    *,
    store: Store,
    data_root: str,
    settings: Distribution,
    progress: Progress | None = None,
) -> RelayResult:
    """Relay the layers ``missing`` (host ip → layers it lacks) between ``hosts``."""
    by_ip = {h.ip: h for h in hosts}
    layers: dict[str, Layer] = {}
    lacking: dict[str, list[str]] = {}
    for h in hosts:
        for layer in missing.get(h.ip, []):
            layers.setdefault(layer.hex, layer)
            lacking.setdefault(layer.hex, []).append(h.ip)
    result = RelayResult(run_id=new_run_id())

    def eligible(excluded: set[str]) -> dict[str, set[str]]:
        return {
            hex_: {ip for ip in ips if ip not in excluded and by_ip[ip].key_lines}
            for hex_, ips in lacking.items()
        }

    can_send = {h.ip for h in hosts if "ssh" in h.tools}
    plan = plan_relay(lacking, eligible=eligible(set()), can_send=can_send,
                      fanout=settings.fanout)  # fmt: skip
    if not plan.trees:
        result.plan = plan
        return result
    touched = {ip for t in plan.trees.values() for ip in t.hosts()}
    streams = {
        hex_: choose_stream(store, layers[hex_], [by_ip[ip].tools for ip in t.hosts()])
        for hex_, t in plan.trees.items()
    }
    session = Session(result.run_id, by_ip, streams, data_root, settings, {})
    try:
        dead = session.begin(sorted(touched))
        result.failed.update(dead)
        plan = session.configure(plan, exclude=set(dead))
        failed_edges = session.probe(plan)
        result.probe_failed = failed_edges
        if failed_edges or dead:
            gone = set(dead) | set(failed_edges)
            plan = plan_relay(lacking, eligible=eligible(gone), can_send=can_send - gone,
                              fanout=settings.fanout)  # fmt: skip
            plan = session.configure(plan, exclude=gone)
        result.plan = plan
        _send_all(session, plan, store, result, progress)
        repair = repair_plan(session, plan, result, can_send)
        if repair.trees:
            result.repair = session.configure(repair, exclude=set(result.failed))
            resend_all(session, repair, result, progress)
    finally:
        session.end(sorted(touched), progress)
    return result


class Session:
    """The hosts' side of one run."""

    def __init__(
        self,
        run_id: str,
        hosts: dict[str, RelayHost],
        streams: dict[str, Stream],
        data_root: str,
        settings: Distribution,
        keys: dict[str, RelayKey],
    ) -> None:
        self.run_id, self.hosts, self.streams = run_id, hosts, streams
        self.data_root, self.settings, self.keys = data_root, settings, keys
        self.dir = run_dir(run_id)
        self.expires = time.time() + KEY_LIFETIME
        self.ready: set[str] = set()

    def _each(self, ips: Sequence[str], fn: Callable[[RelayHost], None]) -> dict[str, str]:
        res = run_on_hosts(
            [self.hosts[ip] for ip in ips], fn, max_workers=SETUP_WORKERS,
            name=lambda h: h.ip, check=False,
        )  # fmt: skip
        return {ip: str(e) for ip, e in res.errors.items()}

    def begin(self, ips: Sequence[str]) -> dict[str, str]:
        """Claim leftovers, make the run dir, start the cleanup timer."""

        def one(h: RelayHost) -> None:
            h.conn.run(remote_script("relay-setup.sh", "begin", self.run_id,
                                     str(int(self.expires))))  # fmt: skip
            self.ready.add(h.ip)

        return self._each(ips, one)

    def configure(self, plan: RelayPlan, *, exclude: set[str]) -> RelayPlan:
        """Write each host's files for ``plan`` and authorize its senders' keys."""
        for ip in plan.senders():
            self.keys.setdefault(ip, RelayKey.generate())
        for t in plan.trees.values():
            for p in list(t.children):
                t.children[p] = [c for c in t.children[p] if c not in exclude]

        def one(h: RelayHost) -> None:
            h.conn.put_files(self.host_files(plan, h.ip))
            h.conn.run(remote_script("relay-setup.sh", "authorize", self.run_id))

        self._each(sorted(self.ready - exclude), one)
        return plan

    def host_files(self, plan: RelayPlan, ip: str) -> dict[str, bytes | FileSpec]:
        """The run's files for one host (scripts, its list, its key, the keys it trusts)."""
        rows, known = [], []
        for hex_, t in plan.trees.items():
            if ip not in t.hosts():
                continue
            kids = t.children.get(ip, [])
            st = self.streams[hex_]
            spec = ",".join(f"{c}:{self.hosts[c].port}" for c in kids) or "-"
            rows.append(f"{hex_} {st.mode} {st.sha256} {st.size} {spec}\n")
            known += [line + "\n" for c in kids for line in self.hosts[c].key_lines]
        auth = [
            authorized_line(self.keys[p], p, self.run_id, self.expires)
            for p in sorted(plan.parents_of(ip))
        ]
        d = self.dir
        files: dict[str, bytes | FileSpec] = {
            f"{d}/layers": "".join(rows).encode(),
            f"{d}/store": f"{self.data_root}/layers\n".encode(),
            f"{d}/alive": f"{max(1, int(self.settings.stall_timeout // 3))}\n".encode(),
            f"{d}/authorized": "".join(auth).encode(),
            f"{d}/known_hosts": "".join(sorted(set(known))).encode(),
            f"{d}/gate": FileSpec(script_text("relay-gate.sh").encode(), 0o700),
            f"{d}/hop.sh": FileSpec(script_text("relay-hop.sh").encode(), 0o700),
            f"{d}/receive-layer.sh": FileSpec(script_text("receive-layer.sh").encode(), 0o700),
            f"{d}/cleanup.sh": FileSpec(script_text("relay-cleanup.sh").encode(), 0o700),
        }
        if ip in self.keys:
            files[f"{d}/key"] = FileSpec(self.keys[ip].private, 0o600)
        return files

    def probe(self, plan: RelayPlan) -> dict[str, str]:
        """Each sender tries its children; returns the receivers that failed."""
        failed: dict[str, str] = {}
        lock = threading.Lock()

        def one(h: RelayHost) -> None:
            out = h.conn.run(remote_script("relay-setup.sh", "probe", self.run_id)).stdout
            with lock:
                for line in out.splitlines():
                    word, _, rest = line.partition(" ")
                    if word == "fail":
                        ip, _, why = rest.partition(" ")
                        failed[ip] = f"probe from {h.ip} failed: {why.strip()}"

        senders = sorted(plan.senders() & self.ready)
        for ip, err in self._each(senders, one).items():
            for t in plan.trees.values():
                for c in t.children.get(ip, []):
                    failed.setdefault(c, f"probe from {ip} failed: {err}")
        return failed

    def end(self, ips: Sequence[str], progress: Progress | None) -> None:
        """Every key line, file, process and timer of the run, on every host."""

        def one(h: RelayHost) -> None:
            h.conn.run(remote_script("relay-setup.sh", "end", self.run_id))

        for ip, err in self._each([ip for ip in ips if ip in self.ready], one).items():
            emit(progress, HostStatus(ip, "relay", f"cleanup failed (its timer retries): {err}"))


def _send_all(
    session: Session, plan: RelayPlan, store: Store, result: RelayResult,
    progress: Progress | None,
) -> None:  # fmt: skip
    """Each tree's layer from the client to its root, ``streams`` at a time."""
    items = list(plan.trees.items())

    def one(item: tuple[str, object]) -> None:
        hex_ = item[0]
        t = plan.trees[hex_]
        root = session.hosts[t.root]
        emit(progress, HostStatus(root.ip, "relay",
                                  f"layer {hex_[:12]} to {len(t.hosts())} hosts"))  # fmt: skip
        try:
            result.sent[hex_] = _send_root(session, root, session.streams[hex_], store, progress)
        except KbuildError as exc:
            result.failed.setdefault(root.ip, str(exc))

    workers = max(1, min(session.settings.streams, len(items)))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(one, items))


def _send_root(
    session: Session, root: RelayHost, st: Stream, store: Store, progress: Progress | None
) -> int:
    """Send the blob to the tree's root; a stall longer than ``stallTimeout`` gives up."""
    layer = st.layer
    cmd = remote_script("relay-hop.sh", session.dir, layer.hex, "keep")
    stall = session.settings.stall_timeout
    last = [time.monotonic()]
    done = threading.Event()
    sent = 0
    proc = root.conn.open_exec(cmd)

    def watch() -> None:
        while not done.wait(1.0):
            if time.monotonic() - last[0] > stall:
                proc.kill()
                return

    threading.Thread(target=watch, daemon=True).start()
    try:
        opened = open_tar(store, layer) if st.mode != layer.compression else None
        with proc, opened or store.open_blob(layer.digest) as blob:
            while chunk := blob.read(1 << 20):
                proc.write(chunk)
                sent += len(chunk)
                last[0] = time.monotonic()
                emit(progress, BytesSent(root.ip, layer.digest, sent, st.size))
            proc.close_stdin()
            done.set()
            proc.wait(timeout=stall * 4 + 60)
    finally:
        done.set()
    return sent
