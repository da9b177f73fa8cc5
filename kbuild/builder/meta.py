"""Cluster-image metadata: apps, launch, commands, CNI/CSI, Kubernetes range.

What a Kubefile says that is not a file lives in the image in two forms:

* one JSON document (``ImageMeta.to_json``), stored as the config label
  ``io.kbuild.image.v1`` and, with the same text, as the manifest annotation
  ``io.kbuild.image.v1``;
* a few flat labels for tools that only show labels: ``io.kbuild.apps``
  (comma-separated app names), ``io.kbuild.launch`` (comma-separated launched
  apps), ``io.kbuild.cni``, ``io.kbuild.csi``, ``io.kbuild.kubeversion``.

The JSON schema (version 1)::

    {
      "schemaVersion": 1,
      "apps": [                                   # in declaration order
        {"name": "nginx", "kind": "app|cni|csi",
         "type": "helm|kube|shell|unknown",
         "path": "application/apps/nginx",        # in the rootfs
         "files": ["nginx-chart"],                # entries directly in path
         "cmds": ["helm install nginx nginx-chart"],  # run in path at launch
         "appCmds": false,                        # true when APPCMDS set cmds
         "env": {"K": "V"}}                       # APPENV
      ],
      "launch": ["nginx"] | null,                 # LAUNCH (not inherited)
      "cmds": ["kubectl apply -f x"] | null,      # CMDS (not inherited)
      "cmd": ["..."],                             # CMD lines, appended (not inherited)
      "cni": "calico" | null, "csi": "openebs" | null,
      "kubeVersion": ">=1.28" | null,
      "images": []                                # container images carried in registry/
    }

Apps are inherited from the base image (a later APP of the same name
replaces one); launch, cmds and cmd are not.
"""

from __future__ import annotations

import json
import posixpath
import shlex
from dataclasses import dataclass, field
from typing import Any

META_KEY = "io.kbuild.image.v1"
LABEL_APPS = "io.kbuild.apps"
LABEL_LAUNCH = "io.kbuild.launch"
LABEL_CNI = "io.kbuild.cni"
LABEL_CSI = "io.kbuild.csi"
LABEL_KUBEVERSION = "io.kbuild.kubeversion"
APPS_DIR = "application/apps"


@dataclass
class AppInfo:
    """One app of a cluster image."""

    name: str
    kind: str = "app"
    type: str = "unknown"
    files: list[str] = field(default_factory=list)
    cmds: list[str] = field(default_factory=list)
    app_cmds: bool = False
    env: dict[str, str] = field(default_factory=dict)

    @property
    def path(self) -> str:
        """The app's directory in the rootfs."""
        return f"{APPS_DIR}/{self.name}"

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (see the module docstring)."""
        return {
            "name": self.name,
            "kind": self.kind,
            "type": self.type,
            "path": self.path,
            "files": list(self.files),
            "cmds": list(self.cmds),
            "appCmds": self.app_cmds,
            "env": dict(self.env),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AppInfo:
        """Read the JSON form."""
        return cls(
            name=str(data["name"]),
            kind=str(data.get("kind", "app")),
            type=str(data.get("type", "unknown")),
            files=[str(f) for f in data.get("files", [])],
            cmds=[str(c) for c in data.get("cmds", [])],
            app_cmds=bool(data.get("appCmds", False)),
            env={str(k): str(v) for k, v in (data.get("env") or {}).items()},
        )


def detect_type(files: list[tuple[str, bool, bool]]) -> str:
    """sealer's app type from the app's top entries: (name, is_dir, dir_has_chart).

    A directory holding ``Chart.yaml`` (or a ``.tgz`` chart) → ``helm``; only
    ``.yaml``/``.yml`` files (or directories of them) → ``kube``; only ``.sh``
    → ``shell``; anything else → ``unknown`` (APPCMDS must say what to run).
    """
    if not files:
        return "unknown"
    if len(files) == 1:
        name, is_dir, has_chart = files[0]
        if (is_dir and has_chart) or (not is_dir and name.endswith((".tgz", ".tar.gz"))):
            return "helm"
    if all(n.endswith((".yaml", ".yml")) or (d and not c) for n, d, c in files):
        return "kube"
    if all(n.endswith(".sh") and not d for n, d, _ in files):
        return "shell"
    return "unknown"


def default_cmds(app: AppInfo) -> list[str]:
    """The launch commands sealer derives from an app's type (run in the app's dir)."""
    if app.type == "helm":
        return [f"helm install {shlex.quote(app.name)} {shlex.quote(app.files[0])}"]
    if app.type == "kube":
        return [f"kubectl apply -f {shlex.quote(f)}" for f in app.files]
    if app.type == "shell":
        return [f"bash {shlex.quote(f)}" for f in app.files]
    return []


@dataclass
class ImageMeta:
    """The metadata a cluster image carries besides its files."""

    apps: dict[str, AppInfo] = field(default_factory=dict)
    launch: list[str] | None = None
    cmds: list[str] | None = None
    cmd: list[str] = field(default_factory=list)
    cni: str | None = None
    csi: str | None = None
    kube_version: str | None = None
    images: list[str] = field(default_factory=list)

    def inherited(self) -> ImageMeta:
        """What a child image starts from: apps and the rest, but no launch/cmds/cmd."""
        return ImageMeta(
            apps={k: AppInfo.from_dict(v.to_dict()) for k, v in self.apps.items()},
            cni=self.cni,
            csi=self.csi,
            kube_version=self.kube_version,
            images=list(self.images),
        )

    @property
    def empty(self) -> bool:
        """True when there is nothing to record (plain container images)."""
        return not (
            self.apps or self.launch or self.cmds or self.cmd or self.cni or self.csi
            or self.kube_version or self.images
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON document (schema in the module docstring)."""
        return {
            "schemaVersion": 1,
            "apps": [a.to_dict() for a in self.apps.values()],
            "launch": self.launch,
            "cmds": self.cmds,
            "cmd": list(self.cmd),
            "cni": self.cni,
            "csi": self.csi,
            "kubeVersion": self.kube_version,
            "images": list(self.images),
        }

    def to_json(self) -> str:
        """Compact, key-sorted JSON text."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ImageMeta:
        """Read the JSON document."""
        apps = [AppInfo.from_dict(a) for a in data.get("apps") or []]
        launch = data.get("launch")
        cmds = data.get("cmds")
        return cls(
            apps={a.name: a for a in apps},
            launch=[str(x) for x in launch] if launch is not None else None,
            cmds=[str(x) for x in cmds] if cmds is not None else None,
            cmd=[str(x) for x in data.get("cmd") or []],
            cni=data.get("cni"),
            csi=data.get("csi"),
            kube_version=data.get("kubeVersion"),
            images=[str(x) for x in data.get("images") or []],
        )

    @classmethod
    def from_labels(cls, labels: dict[str, str] | None) -> ImageMeta:
        """Read the metadata from an image config's labels (empty when absent)."""
        text = (labels or {}).get(META_KEY)
        if not text:
            return cls()
        try:
            return cls.from_dict(json.loads(text))
        except (ValueError, KeyError, TypeError, AttributeError):
            return cls()

    def labels(self) -> dict[str, str]:
        """The labels that carry this metadata (none for plain container images)."""
        if self.empty:
            return {}
        out = {META_KEY: self.to_json()}
        if self.apps:
            out[LABEL_APPS] = ",".join(self.apps)
        if self.launch:
            out[LABEL_LAUNCH] = ",".join(self.launch)
        if self.cni:
            out[LABEL_CNI] = self.cni
        if self.csi:
            out[LABEL_CSI] = self.csi
        if self.kube_version:
            out[LABEL_KUBEVERSION] = self.kube_version
        return out


def app_relpath(app: str, name: str) -> str:
    """Where a file of an app lands in the rootfs."""
    return posixpath.join(APPS_DIR, app, name)
