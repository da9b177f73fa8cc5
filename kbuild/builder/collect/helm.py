"""Helm charts: render them with ``helm template`` and read their ``helm.sh/images`` annotation.

The helm binary is the one the Kubernetes base image carries in ``bin/``
(``images/kubernetes/build-helm.sh`` builds it): ``kbuild build --helm PATH``,
else ``$KBUILD_HELM``, else ``helm`` on ``PATH``. It runs with its own empty
config, cache and data directories and no kubeconfig, so rendering reads
nothing but the chart and fetches nothing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from yaml.nodes import Node

from kbuild.errors import BuildError, ImageCollectError
from kbuild.layerstore import ImageSource

from .found import Found, check_reference

HELM_ENV = "KBUILD_HELM"
TIMEOUT = 300.0
_TAIL = 1500


@dataclass
class Helm:
    """The helm binary, found when a chart first needs it."""

    explicit: str | None = None
    _path: Path | None = field(default=None, init=False)

    def locate(self) -> Path | None:
        """The binary, or None when there is none."""
        if self._path is None:
            for cand in (self.explicit, os.environ.get(HELM_ENV), shutil.which("helm")):
                if cand and os.path.isfile(cand) and os.access(cand, os.X_OK):
                    self._path = Path(cand)
                    break
        return self._path

    def path(self, chart: str) -> Path:
        """The binary; ``BuildError`` naming ``chart`` when there is none."""
        found = self.locate()
        if found is None:
            wanted = self.explicit or os.environ.get(HELM_ENV)
            raise BuildError(
                f"{chart}: rendering this chart to find its images needs helm"
                + (f", and {wanted} is not an executable file" if wanted else
                   ", which is not on PATH"),
                hint="build it with images/kubernetes/build-helm.sh (it prints the path) and "
                     f"give it with --helm PATH or {HELM_ENV}=PATH")
        return found


@dataclass
class Render:
    """One ``helm template`` of a chart (paths are on this machine)."""

    chart: Path
    display: str  # the chart's path in the image, for messages
    release: str
    namespace: str | None = None
    values: list[Path] = field(default_factory=list)
    sets: list[tuple[str, str]] = field(default_factory=list)
    kube_version: str | None = None


def render(helm: Helm, job: Render) -> str:
    """The manifests ``job`` renders to; ``ImageCollectError`` with helm's message on failure."""
    binary = helm.path(job.display)
    argv = [str(binary), "template", job.release, str(job.chart), "--skip-tests"]
    if job.namespace:
        argv += ["--namespace", job.namespace]
    for values in job.values:
        argv += ["--values", str(values)]
    for flag, value in job.sets:
        argv += [flag, value]
    if job.kube_version:
        argv += ["--kube-version", job.kube_version]
    with tempfile.TemporaryDirectory(prefix="kbuild-helm-") as home:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": home,
               "HELM_CONFIG_HOME": f"{home}/config", "HELM_CACHE_HOME": f"{home}/cache",
               "HELM_DATA_HOME": f"{home}/data", "KUBECONFIG": os.devnull}
        try:
            proc = subprocess.run(argv, capture_output=True, env=env, timeout=TIMEOUT,
                                  stdin=subprocess.DEVNULL, check=False)
        except subprocess.TimeoutExpired:
            raise ImageCollectError(f"{job.display}: helm template took more than "
                                    f"{TIMEOUT:.0f} s") from None
    if proc.returncode != 0:
        message = proc.stderr.decode("utf-8", "replace").strip()[-_TAIL:]
        raise ImageCollectError(
            f"{job.display}: helm template cannot render the chart (release {job.release}):\n"
            f"  {message}",
            hint="kbuild renders every chart to find its images; vendor its dependencies "
                 "into charts/ (helm dependency build) and check the values")
    return proc.stdout.decode("utf-8", "replace")


def source_map(rendered: str) -> Callable[[int], str]:
    """Maps a line of ``helm template`` output to the template it came from (``# Source:``)."""
    starts: list[tuple[int, str]] = []
    for n, line in enumerate(rendered.splitlines(), start=1):
        if line.startswith("# Source: "):
            starts.append((n, line[len("# Source: "):].strip()))

    def lookup(line: int) -> str:
        current = ""
        for start, name in starts:
            if start > line:
                break
            current = name
        return current

    return lookup


def is_test_hook(obj: Node) -> bool:
    """A helm test hook (``helm.sh/hook: test…``): never run by an install."""
    annotations = _get(_get(obj, "metadata"), "annotations")
    hook = _get(annotations, "helm.sh/hook")
    value = getattr(hook, "value", "")
    return isinstance(value, str) and "test" in value


def _get(node: Node | None, key: str) -> Node | None:
    for k, v in getattr(node, "value", None) or []:
        if getattr(k, "value", None) == key:
            return v
    return None


def annotated_images(chart_dir: Path, display: str, app: str | None) -> list[Found]:
    """The ``helm.sh/images`` annotation of a chart and of the subcharts under its ``charts/``."""
    found: list[Found] = []
    files = [chart_dir / "Chart.yaml", *sorted(chart_dir.glob("charts/*/Chart.yaml"))]
    for chart_yaml in files:
        if not chart_yaml.is_file():
            continue
        shown = f"{display}/{chart_yaml.relative_to(chart_dir)}"
        try:
            doc = yaml.compose(chart_yaml.read_text(encoding="utf-8"), Loader=yaml.SafeLoader)
            node = _get(_get(doc, "annotations"), "helm.sh/images")
            if node is None:
                continue
            line = int(node.start_mark.line) + 1
            entries = yaml.safe_load(str(node.value)) or []
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise ImageCollectError(f"{shown}: cannot read the helm.sh/images annotation: "
                                    f"{str(exc).splitlines()[0]}") from None
        for entry in entries if isinstance(entries, list) else []:
            image = entry.get("image") if isinstance(entry, dict) else None
            if isinstance(image, str):
                source = ImageSource(shown, line, app, "helm.sh/images annotation")
                found.append(Found(check_reference(image.strip(), source), source))
    return found
