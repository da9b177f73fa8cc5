"""Benchmark: ``kbuild upgrade`` from kubernetes:v1.36.3 to v1.37.2, 1+1 and 1+2.

Fresh podman hosts on an ``--internal`` network per row: ``kbuild run`` of
the old image to every node Ready (not timed), then ``kbuild upgrade`` of the
new one, its phases timed from ``--progress plain`` as the lines arrive
(``==> PHASE on …``). Bytes per host: what kbuild sent to each host (the
new image's layers the host lacked), read from the store, and the layer
counts kbuild reported (``sent N, M present``) to show only new layers went.

There is no peer tool on this machine (sealer's upgrade needs hook images
and cannot be downloaded here; kubeadm itself is what every peer runs).

    python benchmarks/upgrade.py [--store DIR]
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import sys
import tempfile
import time
from pathlib import Path

from kubernetes_run import bench_hosts, kbuild, machine, ready_nodes, timed_kbuild

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from kbuild.layerstore import Store  # noqa: E402
from kbuild.runtime.image import inspect_image  # noqa: E402
from kbuild.runtime.providers import podman  # noqa: E402

CACHE = Path(os.environ.get("KBUILD_K8S_CACHE", "/var/cache/kbuild/kubernetes"))
OLD, NEW = "kubernetes:v1.36.3", "kubernetes:v1.37.2"
# Spans between the phases kbuild announces (``==> PHASE on``; the quiet ones,
# backup, layers and switch, fall inside the span before the next announced one).
SPANS = (
    ("upgrade-plan", "checks, backup, new layers sent"),
    ("upgrade-apply", "kubeadm plan, every rootfs switched, registries restarted"),
    ("upgrade-nodes", "control plane: drain, kubeadm upgrade apply, kubelet, Ready"),
    ("", "nodes: drain, kubeadm upgrade node, kubelet, Ready"),
)


def new_bytes(store: Store) -> tuple[int, int]:
    """Layers and bytes of NEW that OLD does not have."""
    old = {layer.digest for layer in inspect_image(store, OLD, arch=None).layers}
    new = [x for x in inspect_image(store, NEW, arch=None).layers if x.digest not in old]
    return len(new), sum(layer.size for layer in new)


def one_run(store: str, nodes: int, kubectl: Path) -> dict[str, object]:
    name = f"kbup-{secrets.token_hex(3)}"
    names = ["m0"] + [f"n{i}" for i in range(1, nodes + 1)]
    with tempfile.TemporaryDirectory(prefix="kbup-") as tmp:
        state = Path(tmp) / "state"
        try:
            _, cf, env = bench_hosts(name, OLD, names, 1, tmp, store)
            kbuild(env, "run", "-f", str(cf), "--progress", "plain")
            kubeconfig = state / name / "kubeconfig"
            deadline = time.monotonic() + 300
            while not (len(r := ready_nodes(kubectl, kubeconfig)) == len(names)
                       and all(r.values())):  # fmt: skip
                if time.monotonic() > deadline:
                    raise SystemExit(f"nodes not Ready after 300 s: {r}")
                time.sleep(2)
            marks, total, log = timed_kbuild(env, "upgrade", NEW, "--cluster-name", name,
                                             "--progress", "plain")  # fmt: skip
            sent = re.findall(r"sent (\d+), (\d+) present", log)
            ends = [marks.get(p, total) if p else total for p, _ in SPANS]
            starts = [0.0, *ends[:-1]]
            spans = [end - start for start, end in zip(starts, ends, strict=True)]
            kbuild(env, "delete", "--all", "--cluster-name", name, "--progress", "plain")
            return {"spans": spans, "total": total, "sent": sent}
        finally:
            podman.delete_cluster(name)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", default=str(CACHE / "store"))
    ap.add_argument("--out", default=str(REPO / "benchmarks/results/upgrade.md"))
    args = ap.parse_args()
    kubectl = CACHE / NEW.split(":")[1] / "bin" / "kubectl"
    n_layers, n_bytes = new_bytes(Store(Path(args.store)))
    rows = []
    for nodes in (1, 2):
        r = one_run(args.store, nodes, kubectl)
        print(f"1+{nodes}: {r}", file=sys.stderr)
        rows.append((f"1+{nodes}", r))
    text = report(rows, n_layers, n_bytes)
    Path(args.out).write_text(text)
    print(text)


def report(rows: list[tuple[str, dict[str, object]]], n_layers: int, n_bytes: int) -> str:
    """The results table (markdown)."""
    lines = [
        f"# `kbuild upgrade` {OLD} → {NEW}",
        "",
        "Podman hosts (systemd, sshd) on an `--internal` network, fresh per row; the",
        "cluster runs the old image, Ready, before the clock starts.",
        f"Machine: {machine()}. The hosts share its 2 cores with kbuild.",
        "",
        "| hosts | " + " | ".join(label for _, label in SPANS) + " | **total** |",
        "|---|" + "---|" * len(SPANS) + "---|",
    ]
    for label, r in rows:
        spans = r["spans"]
        assert isinstance(spans, list)
        cells = " | ".join(f"{x:.1f} s" for x in spans)
        lines.append(f"| {label} | {cells} | **{r['total']:.1f} s** |")
    lines += [
        "",
        f"Sent to each host: the {n_layers} layers of {NEW} that {OLD} does not share, "
        f"{n_bytes / 1e6:.1f} MB (zstd); what kbuild reported per host (sent, present).",
        "The two base images share no layer today (each layer mixes version-specific",
        "files), so an upgrade between them sends the whole new image:",
        "",
    ]
    for label, r in rows:
        sent = r["sent"]
        assert isinstance(sent, list)
        lines.append(f"- {label}: " + ", ".join(f"{a} sent / {b} present" for a, b in sent))
    lines += ["", "No peer tool ran here (none is installable on this machine)."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
