"""The scan half of the collection: which images the files this build adds ask for (cached).

The files are read from the layers the build adds (everything after the
base image's layers), so COPY, ADD, APP and RUN results count alike; only
``manifests/``, ``charts/``, ``application/apps/`` and the files launch
commands name are extracted. The result is a ``build`` record keyed by
those layers' diffIDs, the launch commands, the env and the helm binary:
a rebuild with nothing changed neither extracts nor renders.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from kbuild.layerstore import APPS_DIR, ImageSource

from ..state import ImageState, digest_of
from .commands import HelmInstall, parse_command
from .found import Found, check_reference
from .helm import Helm
from .layers import extract_matching, prefix_filter
from .lists import list_lines, read_list_file
from .tree import AppPlan, ScanPlan, scan_tree

if TYPE_CHECKING:
    from ..session import Session

SCAN_VERSION = 1
"""Part of the scan's cache key: raise it when what a scan finds changes."""
KUBERNETES_LABEL = "org.kbuild.kubernetes"
SCANNED_DIRS = ["manifests", "charts", APPS_DIR]


def scan_plan(state: ImageState) -> ScanPlan:
    """What the scan needs to know of the image besides its files."""
    meta = state.meta
    kube = state.labels.get(KUBERNETES_LABEL, "")
    return ScanPlan(
        apps=[AppPlan(a.name, a.path, list(a.cmds), dict(a.env)) for a in meta.apps.values()],
        cmds=list(meta.cmds or []) + list(meta.cmd),
        env=dict(state.env),
        kube_version=kube if kube.startswith("v") else None,
    )


def named_paths(plan: ScanPlan) -> set[str]:
    """Paths (relative to the image root) the launch commands apply or install."""
    runs = [(a.path, c, {**plan.env, **a.env}) for a in plan.apps for c in a.cmds]
    runs += [(".", c, plan.env) for c in plan.cmds]
    out: set[str] = set()
    for cwd, command, env in runs:
        for applied in parse_command(command, cwd, env):
            if isinstance(applied, HelmInstall):
                out.update([applied.chart, *applied.values_files])
            else:
                out.update(applied.paths)
    return out


def _helm_identity(session: Session, helm: Helm) -> str:
    path = helm.locate()
    return session.file_digest(str(path), path.stat()) if path is not None else "none"


def scan_layers(session: Session, state: ImageState, helm: Helm) -> tuple[list[Found], bool]:
    """(images the added layers' files name, whether the scan came from the cache)."""
    own = state.layers[state.own_from:]
    plan = scan_plan(state)
    key = "collect-scan:" + digest_of(SCAN_VERSION, [layer.diff_id for layer in own],
                                      dataclasses.asdict(plan), _helm_identity(session, helm))
    if not session.no_cache:
        record = session.store.get_record("build", key)
        if record is not None and isinstance(record.get("found"), list):
            return [Found.from_dict(f) for f in record["found"]], True
    found: list[Found] = []
    if own:
        root = Path(tempfile.mkdtemp(prefix="collect-", dir=session.tmp_dir))
        try:
            extract_matching(session.store, own, root,
                             prefix_filter(SCANNED_DIRS, named_paths(plan)))
            found = scan_tree(root, plan, helm)
        finally:
            shutil.rmtree(root, ignore_errors=True)
    session.store.put_record("build", key, {"found": [f.to_dict() for f in found],
                                            "blobs": []})
    return found, False


def listed_images(files: list[Path]) -> list[Found]:
    """The references of ``--image-list`` files (sealer's flag)."""
    found = []
    for path in files:
        text = read_list_file(path, "--image-list")
        for n, entry in list_lines(text):
            source = ImageSource(str(path), n, None, "--image-list")
            found.append(Found(check_reference(entry, source), source))
    return found
