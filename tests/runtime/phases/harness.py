"""Phase tests without hosts: a context over recording executors, a small image
in a temporary store, and the case files of ``cases/`` (facts in, commands out)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from kbuild.layerstore import (
    AppInfo,
    CarriedImage,
    Descriptor,
    ImageMeta,
    Store,
    TarEntry,
    pack_layer,
)
from kbuild.runtime import clusterfile as cfmod
from kbuild.runtime.driver import CONVERGE, DELETE_CLUSTER, DELETE_HOSTS, UPGRADE, ClusterDriver
from kbuild.runtime.drivers.kubernetes.archive import Manifest, write_archive
from kbuild.runtime.phases.context import Context, Options
from kbuild.runtime.phases.lists import converge_list, delete_cluster_list, delete_hosts_list
from kbuild.runtime.phases.manager import Manager
from kbuild.runtime.phases.preflight import PreflightPhase
from kbuild.runtime.runevents import Event
from kbuild.runtime.state import ClusterState
from tests.runtime.recording import Facts, RecordingPool

CASES = Path(__file__).with_name("cases")
DEMO_CF = """\
apiVersion: sealer.io/v2
kind: Cluster
metadata: {name: demo}
spec:
  image: demo:1
  ssh: {passwd: pw}
  hosts:
    - {ips: [10.0.0.2], roles: [master]}
    - {ips: [10.0.0.3, 10.0.0.4], roles: [node]}
"""
"""The demo image on a master and two nodes."""
UPDATE = os.environ.get("KBUILD_UPDATE_CASES") == "1"

IMAGE_FILES: dict[str, bytes] = {
    "scripts/init-host.sh": b"#!/bin/sh\necho init-host\n",
    "scripts/init-cluster.sh": b"#!/bin/sh\necho init-cluster\n",
    "scripts/join-cluster.sh": b"#!/bin/sh\necho kbuild-export: TOKEN=t0k3n\n",
    "scripts/join-host.sh": b"#!/bin/sh\necho join $TOKEN\n",
    "scripts/clean-host.sh": b"#!/bin/sh\necho clean\n",
    "etc/app.conf.tmpl": b"name={{ .KBUILD_CLUSTER }} port={{ .Port | default \"80\" }}\n",
    "plugins/image.yaml": (
        b"kind: Plugin\nmetadata: {name: from-image}\n"
        b"spec: {action: post-install, data: 'echo image plugin'}\n"
    ),
    "application/apps/web/web.yaml": b"kind: ConfigMap\n",
}


def carried_image(name: str) -> CarriedImage:
    """A carried-image entry for ``name`` (``host/repo:tag``) with a made-up digest."""
    return CarriedImage(name=name, repository=name.split("/", 1)[1].rsplit(":", 1)[0],
                        tag=name.rsplit(":", 1)[1], digest="sha256:" + "cd" * 32,
                        media_type="application/vnd.oci.image.manifest.v1+json")


def build_image(store: Store, ref: str = "demo:1", *,
                labels: dict[str, str] | None = None, carried: Sequence[str] = (),
                arches: Sequence[str] = ()) -> str:  # fmt: skip
    """A one-layer cluster image with scripts, a template, a plugin and an app
    (its metadata listing the container images ``carried``); with ``arches``,
    an index of one such image per architecture (each layer also holds
    ``bin/arch``, so their digests differ)."""
    platforms = [
        _platform_image(store, arch, labels, carried, {"bin/arch": arch.encode() + b"\n"})
        for arch in arches
    ]
    store.tag(ref, store.write_index(platforms) if platforms
              else _platform_image(store, "amd64", labels, carried, {}))  # fmt: skip
    return ref


def _platform_image(store: Store, arch: str, labels: dict[str, str] | None,
                    carried: Sequence[str], extra: dict[str, bytes]) -> Descriptor:  # fmt: skip
    files = {**IMAGE_FILES, **extra}
    entries = [TarEntry(p, "file", data=d, size=len(d), mode=0o755) for p, d in files.items()]
    layer = pack_layer(store, entries)
    images = [carried_image(n) for n in carried]
    meta = ImageMeta(apps={"web": AppInfo(name="web", type="kube", files=["web.yaml"])},
                     launch=["web"], images=images)  # fmt: skip
    config = {
        "architecture": arch,
        "os": "linux",
        "config": {"Env": ["Port=8080"], "Labels": {**meta.labels(), **(labels or {})}},
    }
    desc = store.write_image(config, [layer])
    return Descriptor(desc.media_type, desc.digest, desc.size,
                      platform={"architecture": arch, "os": "linux"})  # fmt: skip


@dataclass
class Scenario:
    """A context whose hosts are data, and what they were asked."""

    ctx: Context
    pool: RecordingPool
    events: list[Event] = field(default_factory=list)

    @property
    def commands(self) -> dict[str, list[str]]:
        """Commands per host."""
        return self.pool.log.commands


def scenario(
    tmp_path: Path,
    clusterfile: str,
    facts: Facts,
    *,
    state: dict[str, Any] | None = None,
    drivers: Sequence[type[ClusterDriver]] = (),
    image_labels: dict[str, str] | None = None,
    arches: Sequence[str] = (),
) -> Scenario:
    """A Context over recording hosts, with the demo image in a fresh store."""
    store = Store(tmp_path / "store")
    build_image(store, labels=image_labels, arches=arches)
    events: list[Event] = []
    opts = Options(store=store, progress=events.append, state_root=tmp_path / "state",
                   drivers=drivers)  # fmt: skip
    cf = cfmod.loads(clusterfile, source="case")
    ctx = Context(cf, opts)
    ctx.sd.ensure()
    if state is not None:
        ctx.state = ClusterState.from_json({"name": cf.cluster.name, **state})
    pool = RecordingPool(facts)
    ctx.pool = pool  # type: ignore[assignment]
    return Scenario(ctx, pool, events)


def flow_list(flow: str, ctx: Context) -> Manager:
    """The flow's phase list, as lifecycle builds it."""
    if flow == CONVERGE:
        return converge_list(ctx.driver)
    if flow == DELETE_HOSTS:
        return delete_hosts_list(ctx.driver, ctx.targets, forget_unreachable=False)
    if flow == DELETE_CLUSTER:
        return delete_cluster_list(ctx.driver)
    if flow == UPGRADE:  # lifecycle.run_flow(image=…)
        mgr = Manager([PreflightPhase()])
        ctx.driver.extend(UPGRADE, mgr)
        return mgr
    mgr = Manager()
    ctx.driver.extend(flow, mgr)  # a driver's flow (backup, restore, cert-check…)
    if not mgr.phases:
        raise ValueError(flow)
    return mgr


def write_case_archive(path: Path, spec: dict[str, Any]) -> None:
    """A backup archive a case names: ``members`` (name → text), ``cluster``,
    ``kubernetes``, ``passphrase``; its CA sum is that of ``kubeadm/pki/ca.crt``."""
    src = path.parent / "archive-members"
    files: dict[str, Path] = {}
    for name, text in spec["members"].items():
        files[name] = src / name
        files[name].parent.mkdir(parents=True, exist_ok=True)
        files[name].write_text(text)
    ca = hashlib.sha256(spec["members"]["kubeadm/pki/ca.crt"].encode()).hexdigest()
    manifest = Manifest(spec["cluster"], spec["kubernetes"], ca, "2026-12-04T00:00:00Z")
    write_archive(path, manifest, files, passphrase=spec.get("passphrase"))


def load_case(path: Path) -> dict[str, Any]:
    """One case file."""
    return yaml.safe_load(path.read_text())


class _Dumper(yaml.SafeDumper):
    """Multi-line strings as literal blocks, so case files read like the Clusterfile."""


_Dumper.add_representer(
    str,
    lambda d, s: d.represent_scalar("tag:yaml.org,2002:str", s, style="|" if "\n" in s else None),
)


def save_case(path: Path, case: dict[str, Any]) -> None:
    """Rewrite a case file with the observed results (KBUILD_UPDATE_CASES=1)."""
    path.write_text(
        yaml.dump(case, Dumper=_Dumper, sort_keys=False, width=100, allow_unicode=True)
    )
