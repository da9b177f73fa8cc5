"""Cluster-image metadata: apps, launch, commands, CNI/CSI, Kubernetes range.

The format both sides share: the builder writes it (``ImageMeta.labels`` and
``to_json``), the runtime reads it back (``ImageMeta.read``) to know what to
run at launch. Which apps a build finds and how it types them is build logic
and stays in ``kbuild.builder.meta``.

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
      "images": [{"name": …, "digest": …, …}]     # container images carried in registry/
    }                                             # (one entry: see ``_carried.py``)

Apps are inherited from the base image (a later APP of the same name
replaces one); launch, cmds and cmd are not. An app's ``cmds`` are empty only
for an ``unknown`` type without APPCMDS; readers fall back to
``default_cmds`` for older images that left them out.
"""

from __future__ import annotations

import json
import posixpath
import shlex
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kbuild.errors import StoreError

from ._carried import CarriedImage, find_carried
from ._platform import Platform, index_platforms, pick_manifest
from ._schema import load_json
from ._types import Descriptor, MediaType

if TYPE_CHECKING:
    from ._store import Store

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
            files=[str(f) for f in data.get("files") or []],
            cmds=[str(c) for c in data.get("cmds") or []],
            app_cmds=bool(data.get("appCmds", False)),
            env={str(k): str(v) for k, v in (data.get("env") or {}).items()},
        )


def default_cmds(app: AppInfo) -> list[str]:
    """The launch commands sealer derives from an app's type (run in the app's dir).

    A helm app whose directory is the chart (it holds ``Chart.yaml``, as sealer
    copies a chart directory's contents) installs ``.``; a packed chart or an
    older image's nested chart directory installs that entry. ``helm upgrade
    --install`` (sealer: ``helm install``): the same command installs the app
    and, for a newer image on a running cluster, upgrades it.
    """
    if app.type == "helm" and app.files:
        chart = "." if "Chart.yaml" in app.files else app.files[0]
        return [f"helm upgrade --install {shlex.quote(app.name)} {shlex.quote(chart)}"]
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
    images: list[CarriedImage] = field(default_factory=list)

    def inherited(self) -> ImageMeta:
        """What a child image starts from: apps and the rest, but no launch/cmds/cmd."""
        return ImageMeta(
            apps={k: AppInfo.from_dict(v.to_dict()) for k, v in self.apps.items()},
            cni=self.cni,
            csi=self.csi,
            kube_version=self.kube_version,
            images=[CarriedImage.from_dict(c.to_dict()) for c in self.images],
        )

    def carried(self, image: str) -> CarriedImage | None:
        """The carried image a pod asking for ``image`` is served (None: not carried)."""
        return find_carried(self.images, image)

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
            "images": [c.to_dict() for c in self.images],
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
            images=[CarriedImage.from_dict(x) for x in data.get("images") or []],
        )

    @classmethod
    def from_labels(cls, labels: dict[str, str] | None) -> ImageMeta:
        """Read the metadata from an image config's labels leniently (empty when absent or bad).

        For a build's base image, which need not be a kbuild image; see ``read``
        for the strict form.
        """
        try:
            return cls.read(labels)
        except StoreError:
            return cls()

    @classmethod
    def read(cls, labels: dict[str, str] | None, annotations: dict[str, str] | None = None,
             *, what: str = "image") -> ImageMeta:
        """Read the metadata strictly: config label first, else manifest annotation.

        Empty when neither carries it; ``StoreError`` (naming ``what``) when the
        text is not a JSON object of this schema.
        """
        source, text = "label", (labels or {}).get(META_KEY)
        if not text:
            source, text = "manifest annotation", (annotations or {}).get(META_KEY)
        if not text:
            return cls()
        data = load_json(text, what=f"{what}: {source} {META_KEY}")
        if not isinstance(data, dict):
            raise StoreError(f"{what}: {source} {META_KEY} is not a JSON object")
        try:
            return cls.from_dict(data)
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise StoreError(f"{what}: {source} {META_KEY} does not follow schema version 1",
                             hint=f"{type(exc).__name__}: {exc}") from None

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


def carried_images(store: Store, name: str, platform: Platform | str | None = None
                   ) -> list[CarriedImage]:
    """The container images the cluster image ``name`` of ``store`` carries in ``registry/``.

    Read from the image metadata (config label, else manifest annotation);
    for an image index the manifest of ``platform`` (default: this machine).
    Raises ``ImageNotFound``, or ``StoreError`` when the metadata is bad.
    """
    desc = store.resolve(name)
    if desc.media_type in MediaType.INDEXES:
        wanted = platform if isinstance(platform, Platform) else Platform.parse(platform)
        index = store.read_json(desc.digest)
        entry = pick_manifest(index, wanted)
        if entry is None:
            raise StoreError(f"image {name} has no manifest for {wanted}",
                             hint=f"it has: {', '.join(index_platforms(index)) or 'none'}")
        desc = Descriptor.from_dict(entry)
    manifest = store.read_manifest(desc)
    labels = (store.read_config(manifest).get("config") or {}).get("Labels")
    meta = ImageMeta.read(labels, manifest.get("annotations"), what=f"image {name}")
    return meta.images
