#!/usr/bin/env python3
"""Benchmark: collecting the container images of an app image at build (issue 9).

Set-up per round (not timed), in a fresh kbuild store and a fresh Debian
``docker-registry`` on 127.0.0.1:

* a shared 30 MB layer ("distroless base") that every image below starts with;
* a base cluster image carrying 8 component images (each the shared layer
  plus 10 MB of its own), listed in its ``manifests/imageList``;
* 10 app images (the shared layer plus 8 MB of their own): 6 in the local
  store, 4 only in the registry;
* an app image ``FROM`` the base with 20 manifests (a Deployment with two
  containers and a Service each, naming the app images and two of the base's)
  and 2 helm charts (one with a subchart), installed by APPCMDS with
  ``--set`` from APPENV.

Measured, in process (``kbuild.builder.build`` with the registry's fetch):
the collection step of the app image cold (scan, 2 helm renders, 4 fetches
from the registry, the registry/ layer), rebuilt with nothing changed (must be
cache hits, well under a second), and rebuilt after a manifest changed without
changing an image (scan and renders again, the layer reused); the bytes the
app image adds over the base in its registry/ layer, against its own images'
blobs and against every blob of every image it names.

Prints a markdown table and writes ``benchmarks/results/collect.md``.
Usage: ``PYTHONPATH=. python benchmarks/collect.py [--runs N]`` (as root, helm from
``images/kubernetes/build-helm.sh``'s cache).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _sysinfo import cpu_model, memory_gib, write_results

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from kbuild.builder import BuildOptions, StepDone, build  # noqa: E402
from kbuild.layerstore import (  # noqa: E402
    ImageMeta,
    LayerInfo,
    Platform,
    Store,
    TarEntry,
    pack_layer,
)
from kbuild.registry import fetch_image, push_image  # noqa: E402
from tests.fixtures.registry import RegistryServer, free_port  # noqa: E402

BENCH_DIR = Path("/var/tmp/kbuild-bench")
RESULTS = REPO / "benchmarks" / "results" / "collect.md"
MB = 1 << 20
SHARED_MB, BASE_OWN_MB, APP_OWN_MB = 30, 10, 8
BASE_IMAGES = [f"registry.k8s.io/component-{i}:v1" for i in range(8)]
APP_LOCAL = [f"docker.io/shop/svc-{i}:1.0" for i in range(6)]
REGISTRY_ONLY = [f"team/remote-{i}:2.0" for i in range(4)]  # prefixed with the registry

DEPLOY = """apiVersion: apps/v1
kind: Deployment
metadata: {{name: m{n}}}
spec:
  template:
    spec:
      containers:
      - {{name: app, image: "{app}"}}
      - {{name: side, image: "{side}"}}
---
apiVersion: v1
kind: Service
metadata: {{name: m{n}}}
spec: {{ports: [{{port: 80}}]}}
"""
CHART_DEPLOY = """apiVersion: apps/v1
kind: Deployment
metadata: {name: {{ .Release.Name }}-{{ .Chart.Name }}}
spec:
  template:
    spec:
      containers:
      - name: main
        image: "{{ .Values.image.repository }}:{{ .Values.image.tag }}"
"""


def _layer(store: Store, name: str, mb: int, tmp: Path) -> LayerInfo:
    path = tmp / name
    with open(path, "wb") as f:
        for _ in range(mb):
            f.write(os.urandom(MB))
    info = pack_layer(store, [TarEntry(path=f"data/{name}", kind="file", source=path,
                                       size=mb * MB)], compression="zstd", level=1)
    path.unlink()
    return info


def _image(store: Store, name: str, shared: LayerInfo, own_mb: int, tmp: Path) -> None:
    own = _layer(store, name.replace("/", "_"), own_mb, tmp)
    desc = store.write_image({"architecture": Platform.host().architecture, "os": "linux",
                              "config": {}}, [shared, own])
    store.tag(name, desc)


def _chart(root: Path, name: str, repo: str, tag: str, sub: str | None = None) -> None:
    (root / "templates").mkdir(parents=True)
    (root / "Chart.yaml").write_text(f"apiVersion: v2\nname: {name}\nversion: 0.1.0\n")
    (root / "values.yaml").write_text(f"image: {{repository: {repo}, tag: \"{tag}\"}}\n")
    (root / "templates" / "deployment.yaml").write_text(CHART_DEPLOY)
    if sub:
        _chart(root / "charts" / sub, sub, repo.rsplit("/", 1)[0] + f"/{sub}", "1.0")


def setup(work: Path, reg: RegistryServer) -> tuple[Store, Path, Path, list[str]]:
    """The store, the base and app contexts, and the registry-only references."""
    store = Store(work / "store")
    other = Store(work / "elsewhere")
    tmp = work / "gen"
    tmp.mkdir()
    shared = _layer(store, "shared", SHARED_MB, tmp)
    for name in BASE_IMAGES:
        _image(store, name, shared, BASE_OWN_MB, tmp)
    for name in APP_LOCAL:
        _image(store, name, shared, APP_OWN_MB, tmp)
    with open(store.blob_path(shared.digest), "rb") as src, \
            other.blob_writer(shared.digest) as out:
        shutil.copyfileobj(src, out, MB)  # the registry's images share the base's layer too
    remote = [f"{reg.host}/{r}" for r in REGISTRY_ONLY]
    for ref in remote:
        _image(other, "x:1", shared, APP_OWN_MB, tmp)
        push_image(other, "x:1", ref)
    base = work / "base"
    (base / "bin").mkdir(parents=True)
    (base / "manifests").mkdir()
    (base / "bin" / "kubelet").write_bytes(os.urandom(40 * MB))
    (base / "manifests" / "imageList").write_text("\n".join(BASE_IMAGES) + "\n")
    (base / "Kubefile").write_text("FROM scratch\nCOPY bin bin\nCOPY manifests manifests\n")
    app = work / "app"
    names = APP_LOCAL + remote
    for n in range(20):
        side = BASE_IMAGES[n % 2] if n % 5 == 0 else names[(n + 3) % len(names)]
        (app / "manifests").mkdir(parents=True, exist_ok=True)
        (app / "manifests" / f"m{n:02d}.yaml").write_text(
            DEPLOY.format(n=n, app=names[n % len(names)], side=side))
    _chart(app / "charts" / "shop", "shop", "docker.io/shop/svc-0", "from-values", sub="cache")
    _chart(app / "charts" / "admin", "admin", "docker.io/shop/svc-5", "1.0")
    (app / "Kubefile").write_text(
        "FROM base:1\nCOPY manifests manifests\n"
        "APP shop local://charts/shop\nAPPENV shop TAG=1.0\n"
        'APPCMDS shop ["helm install shop . --set image.tag=$TAG"]\n'
        "APP admin local://charts/admin\n"
        'CMDS ["kubectl apply -f manifests/"]\n')
    # the subchart's image (docker.io/shop/cache:1.0) is one more local image
    _image(store, "docker.io/shop/cache:1.0", shared, APP_OWN_MB, tmp)
    return store, base, app, remote


def fetcher() -> Any:
    def fetch(store: Store, ref: str, *, platforms: list[Platform], quick: bool = False) -> Any:
        return fetch_image(store, ref, platforms=platforms, quick=quick)
    return fetch


def timed_build(store: Store, ctx: Path, tag: str) -> dict[str, Any]:
    events: list[Any] = []
    t0 = time.perf_counter()
    result = build(store, BuildOptions(context=ctx, tags=[tag]), progress=events.append,
                   fetch=fetcher())
    wall = time.perf_counter() - t0
    step = next(e for e in events if isinstance(e, StepDone) and e.step_id == "images")
    return {"wall": wall, "step": step.seconds, "cached": step.cached, "result": result}


def one_round(work: Path) -> dict[str, Any]:
    reg = RegistryServer(work / "registry", free_port())
    reg.workdir.mkdir()
    reg.start()
    try:
        store, base_ctx, app_ctx, remote = setup(work, reg)
        base = timed_build(store, base_ctx, "base:1")
        cold = timed_build(store, app_ctx, "app:1")
        requests = len(reg.access_log())
        warm = timed_build(store, app_ctx, "app:1")
        assert warm["cached"] and len(reg.access_log()) == requests, "rebuild was not cached"
        path = app_ctx / "manifests" / "m07.yaml"
        path.write_text(path.read_text().replace("port: 80", "port: 8080"))
        touched = timed_build(store, app_ctx, "app:1")
        assert len(reg.access_log()) == requests
        manifest = store.read_manifest(cold["result"].manifest)
        meta = ImageMeta.read(store.read_config(manifest)["config"]["Labels"])
        base_names = set(BASE_IMAGES)
        own = {m.name: m for m in meta.images if m.name not in base_names}
        named = [m for m in meta.images if m.sources and any(
            not s.file.startswith("manifests/imageList") for s in m.sources)]
        return {
            "base_step": base["step"], "cold_step": cold["step"], "cold_wall": cold["wall"],
            "warm_step": warm["step"], "warm_wall": warm["wall"],
            "touched_step": touched["step"], "touched_cached": touched["cached"],
            "added": int(manifest["layers"][-1]["size"]),
            "own_sizes": sum(m.size for m in own.values()),
            "own_unique": len(own) * APP_OWN_MB * MB,
            "named_sizes": sum(m.size for m in named),
            "images": len(own), "named": len(named), "remote": len(remote),
        }
    finally:
        reg.stop()


def machine() -> str:
    helm = os.environ.get("KBUILD_HELM", "")
    version = subprocess.run([helm, "version", "--short"], capture_output=True, text=True,
                             check=False).stdout.strip() if helm else "?"
    return "\n".join([
        f"- CPU: {cpu_model()}, `nproc` = {os.cpu_count()}",
        f"- Memory: {memory_gib():.1f} GiB",
        f"- Kernel: {platform.release()}",
        f"- Python {platform.python_version()}, helm {version}, "
        f"registry: Debian docker-registry on 127.0.0.1",
        "- Load average when the run ended (the machine is shared): "
        + ", ".join(f"{x:.2f}" for x in os.getloadavg()),
    ])


def main() -> None:
    """Run the rounds and write the results file."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    if not os.environ.get("KBUILD_HELM"):
        out = subprocess.run([str(REPO / "images/kubernetes/build-helm.sh")],
                             capture_output=True, text=True, check=True, timeout=3600)
        os.environ["KBUILD_HELM"] = out.stdout.strip().splitlines()[-1]
    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    rounds = []
    for _ in range(args.runs):
        work = Path(tempfile.mkdtemp(prefix="collect-", dir=BENCH_DIR))
        try:
            rounds.append(one_round(work))
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def med(key: str) -> float:
        return statistics.median(r[key] for r in rounds)

    r0 = rounds[0]
    rows = [
        ("base image: collect its 8 component images (imageList, local store)",
         f"{med('base_step'):.2f} s"),
        (f"app image, cold: scan 20 manifests + render 2 charts, resolve {r0['images']} new "
         f"images ({r0['remote']} fetched from the registry), write registry/ layer",
         f"{med('cold_step'):.2f} s (whole build {med('cold_wall'):.2f} s)"),
        ("app image rebuilt, nothing changed (cache hits, no helm, no registry request)",
         f"{med('warm_step') * 1000:.0f} ms (whole build {med('warm_wall'):.2f} s)"),
        ("app image rebuilt after a manifest changed, no image changed (scan + renders "
         "again, registry/ layer reused)",
         f"{med('touched_step'):.2f} s, layer cached: {r0['touched_cached']}"),
        ("bytes the app image adds in registry/ (its layer, zstd)", f"{med('added') / MB:.1f} MB"),
        (f"blobs of the {r0['images']} images only the app carries (each {SHARED_MB} MB shared "
         f"with the base + {APP_OWN_MB} MB own)", f"{med('own_sizes') / MB:.1f} MB"),
        (f"blobs of every image the app's files name ({r0['named']}, base's included): "
         "what a copy of each image would add", f"{med('named_sizes') / MB:.1f} MB"),
    ]
    text = "\n".join([
        "# Image collection benchmark", "",
        f"Generated by `python benchmarks/collect.py --runs {args.runs}` on "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; medians of {args.runs} rounds.",
        "", "## Machine", "", machine(), "", "## Results", "",
        "| measurement | result |", "|---|---|",
        *[f"| {a} | {b} |" for a, b in rows], "",
        f"The app's own images need {r0['images']} × {APP_OWN_MB} MB = "
        f"{r0['own_unique'] / MB:.0f} MB of new data: the layer holds that (random data does "
        "not compress) plus manifests, configs and links; the shared layer and the base's "
        "images are not written again.", "",
    ])
    print(text)
    write_results(RESULTS, text)


if __name__ == "__main__":
    main()
