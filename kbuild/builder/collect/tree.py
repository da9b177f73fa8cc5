"""Scan the files an image adds (extracted under one directory) for the images they name.

What is read, in the extracted tree (paths relative to the image root):

- ``*.tmpl`` files are first rendered as the runtime will render them (image
  ENV, plus APPENV inside an app's directory); a variable without a value
  becomes a marker, so only an image that depends on it fails;
- every ``*.yaml``/``*.yml`` outside a chart (``manifests/``, app
  directories, files launch commands apply), parsed by ``yamlscan``;
- every chart (a directory with ``Chart.yaml``, or a ``.tgz`` under
  ``charts/`` or an app): rendered with ``helm template`` as each launch
  command installs it (its ``--set``/``--values``/``--namespace``, with
  ``$VARS`` from ENV and APPENV), or with its own values when no command
  names it; subcharts come with it; plus its ``helm.sh/images`` annotation;
- every ``imageList`` file (sealer's: one reference per line).
"""

from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass, field
from pathlib import Path

from kbuild.errors import ImageCollectError
from kbuild.layerstore import APPS_DIR, ImageSource, render_template

from .commands import HelmInstall, KubectlApply, parse_command
from .found import UNSET, Found
from .helm import Helm, Render, annotated_images, is_test_hook, render, source_map
from .lists import IMAGE_LIST, scan_image_list
from .yamlscan import scan_yaml

_YAML = (".yaml", ".yml")


@dataclass
class AppPlan:
    """An app whose files this build adds: where they are and how it launches."""

    name: str
    path: str
    cmds: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class ScanPlan:
    """What the scan needs besides the files."""

    apps: list[AppPlan] = field(default_factory=list)
    cmds: list[str] = field(default_factory=list)  # CMDS / CMD, run in the image root
    env: dict[str, str] = field(default_factory=dict)  # image ENV
    kube_version: str | None = None


class TreeScan:
    """One scan of an extracted tree."""

    def __init__(self, root: Path, plan: ScanPlan, helm: Helm) -> None:
        self.root = root
        self.plan = plan
        self.helm = helm
        self.origin: dict[str, str] = {}  # rendered file -> its .tmpl
        self.found: list[Found] = []

    def app_of(self, rel: str) -> AppPlan | None:
        """The app whose directory holds ``rel``."""
        return next((a for a in self.plan.apps if rel == a.path or rel.startswith(a.path + "/")),
                    None)

    def env_of(self, rel: str) -> dict[str, str]:
        """Variables for a file at ``rel``: image ENV, then the app's APPENV."""
        app = self.app_of(rel)
        return {**self.plan.env, **(app.env if app else {})}

    def files(self) -> list[str]:
        """Every regular file of the tree, relative, sorted."""
        out = []
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames.sort()
            rel_dir = os.path.relpath(dirpath, self.root)
            for name in sorted(filenames):
                out.append(name if rel_dir == "." else f"{rel_dir}/{name}")
        return out

    def run(self) -> list[Found]:
        """Scan everything (see the module docstring)."""
        self.render_templates()
        files = self.files()
        charts = _charts(files)
        rendered: set[str] = set()
        for job in self.command_jobs(charts):
            self.scan_chart(job)
            rendered.add(_chart_of(job.display, charts) or job.display)
        for chart in charts:
            if chart not in rendered:
                self.scan_chart(self.default_job(chart))
            if not chart.endswith(".tgz"):
                app = self.app_of(chart)
                self.found += annotated_images(self.root / chart, chart, app.name if app else None)
        for rel in files:
            if _chart_of(rel, charts) is not None:
                continue
            if rel.endswith(_YAML):
                self.scan_file(rel)
            elif posixpath.basename(rel) == IMAGE_LIST:
                app = self.app_of(rel)
                text = (self.root / rel).read_text(encoding="utf-8", errors="replace")
                self.found += scan_image_list(text, rel, app.name if app else None)
        return list(dict.fromkeys(self.found))

    def render_templates(self) -> None:
        """Write ``x.tmpl`` rendered as ``x`` (what the runtime will apply)."""
        for rel in self.files():
            if not rel.endswith(".tmpl"):
                continue
            text = (self.root / rel).read_text(encoding="utf-8", errors="replace")
            out = render_template(text, self.env_of(rel), missing=UNSET.format)
            target = rel[: -len(".tmpl")]
            (self.root / target).write_text(out, encoding="utf-8")
            self.origin[target] = rel

    def scan_file(self, rel: str) -> None:
        """The images of one YAML file."""
        shown = self.origin.get(rel, rel)
        app = self.app_of(rel)
        name = app.name if app else None
        text = (self.root / rel).read_text(encoding="utf-8", errors="replace")
        self.found += scan_yaml(text, lambda line, what: ImageSource(shown, line, name, what),
                                name=shown)

    def command_jobs(self, charts: list[str]) -> list[Render]:
        """The charts launch commands install, as they install them."""
        jobs: list[Render] = []
        runs = [(a.path, c, {**self.plan.env, **a.env}) for a in self.plan.apps for c in a.cmds]
        runs += [(".", c, dict(self.plan.env)) for c in self.plan.cmds]
        for cwd, command, env in runs:
            for applied in parse_command(command, cwd, env):
                if isinstance(applied, HelmInstall) and _chart_of(applied.chart, charts):
                    jobs.append(self.helm_job(applied, command))
                elif isinstance(applied, KubectlApply):
                    continue  # the files are scanned with every other YAML file of the tree
        return jobs

    def helm_job(self, install: HelmInstall, command: str) -> Render:
        """A render of ``install``'s chart with its values files and ``--set``s."""
        values = []
        for rel in install.values_files:
            if not (self.root / rel).is_file():
                raise ImageCollectError(
                    f"{install.chart}: the launch command {command!r} uses the values file "
                    f"{rel}, which is not among the files this image adds",
                    hint="add the values file to the image, or render the chart some other way")
            values.append(self.root / rel)
        return Render(self.root / install.chart, install.chart, install.release,
                      install.namespace, values, install.sets, self.plan.kube_version)

    def default_job(self, chart: str) -> Render:
        """A render of ``chart`` with its own values (no command installs it)."""
        app = self.app_of(chart)
        release = app.name if app and app.path == chart else posixpath.basename(chart)
        release = release.removesuffix(".tgz").lower().replace("_", "-") or "release"
        return Render(self.root / chart, chart, release, kube_version=self.plan.kube_version)

    def scan_chart(self, job: Render) -> None:
        """The images of one rendered chart."""
        text = render(self.helm, job)
        template_at = source_map(text)
        app = self.app_of(job.display)
        name = app.name if app else None

        def where(line: int, what: str) -> ImageSource:
            return ImageSource(job.display, 0, name, f"{template_at(line)}: {what}")

        self.found += scan_yaml(text, where, name=f"{job.display} (rendered)",
                                skip_doc=is_test_hook)


def _charts(files: list[str]) -> list[str]:
    """Chart directories (outermost only) and packed charts under ``charts/`` or an app."""
    dirs = sorted({posixpath.dirname(f) for f in files if posixpath.basename(f) == "Chart.yaml"})
    outer: list[str] = []
    for d in dirs:
        if not any(d == o or d.startswith(o + "/") for o in outer):
            outer.append(d)
    packed = [f for f in files if f.endswith(".tgz") and f.startswith(("charts/", APPS_DIR + "/"))
              and not any(f.startswith(o + "/") for o in outer)]
    return outer + packed


def _chart_of(rel: str, charts: list[str]) -> str | None:
    """The chart ``rel`` is (or lies in), if any."""
    return next((c for c in charts if rel == c or rel.startswith(c + "/")), None)


def scan_tree(root: Path, plan: ScanPlan, helm: Helm) -> list[Found]:
    """Every image the files under ``root`` name (see the module docstring)."""
    return TreeScan(root, plan, helm).run()
