"""The image state a stage carries from instruction to instruction, and the config it becomes."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from kbuild.layerstore import ImageMeta, Platform


def platform_args(platform: Platform) -> dict[str, str]:
    """Docker's automatic platform ARGs (used when a stage declares them)."""
    host = Platform.host()
    return {
        "TARGETPLATFORM": str(platform),
        "TARGETOS": platform.os,
        "TARGETARCH": platform.architecture,
        "TARGETVARIANT": platform.variant or "",
        "BUILDPLATFORM": str(host),
        "BUILDOS": host.os,
        "BUILDARCH": host.architecture,
        "BUILDVARIANT": host.variant or "",
    }


def created_time() -> str:
    """RFC 3339 time of the build: ``SOURCE_DATE_EPOCH`` when set, else now."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch and epoch.strip().isdigit():
        moment = datetime.fromtimestamp(int(epoch), UTC)
    else:
        moment = datetime.now(UTC).replace(microsecond=0)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def digest_of(*parts: Any) -> str:
    """``sha256:`` of the canonical JSON of ``parts`` (cache keys)."""
    data = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return "sha256:" + hashlib.sha256(data.encode("utf-8", "surrogateescape")).hexdigest()


@dataclass
class BaseLayer:
    """A layer of the image being built (inherited or new)."""

    digest: str
    diff_id: str
    size: int
    uncompressed_size: int
    media_type: str


@dataclass
class ImageState:
    """Config and filesystem (as layers) of a stage after some instructions."""

    platform: Platform
    key: str  # cache key of the filesystem so far
    layers: list[BaseLayer] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    entrypoint: list[str] | None = None
    cmd: list[str] | None = None
    workdir: str = ""
    user: str = ""
    exposed_ports: dict[str, Any] = field(default_factory=dict)
    volumes: dict[str, Any] = field(default_factory=dict)
    stop_signal: str | None = None
    shell: list[str] = field(default_factory=lambda: ["/bin/sh", "-c"])
    meta: ImageMeta = field(default_factory=ImageMeta)
    args: dict[str, str] = field(default_factory=dict)  # ARGs in scope (build-time only)
    author: str | None = None
    #: Index of the first layer this build adds (those before come from a base image).
    own_from: int = 0
    #: Images the Kubefile lists with IMAGE (``kbuild.builder.collect.Found``).
    declared: list[Any] = field(default_factory=list)

    @classmethod
    def scratch(cls, platform: Platform) -> ImageState:
        """The empty image."""
        return cls(platform=platform, key=digest_of("scratch", str(platform)))

    @classmethod
    def from_config(cls, platform: Platform, key: str, config: dict[str, Any],
                    layers: list[BaseLayer]) -> ImageState:
        """Continue from a base image's config (apps inherited, launch not)."""
        c = config.get("config") or {}
        env: dict[str, str] = {}
        for item in c.get("Env") or []:
            k, _, v = str(item).partition("=")
            env[k] = v
        labels = {str(k): str(v) for k, v in (c.get("Labels") or {}).items()}
        meta = ImageMeta.from_labels(labels).inherited()
        history = [dict(h) for h in config.get("history") or []]
        missing = len(layers) - sum(1 for h in history if not h.get("empty_layer"))
        if missing > 0:
            # keep "the n-th non-empty history entry made the n-th layer" true
            filler = {"created_by": "(layer of the base image without history)"}
            history = [dict(filler) for _ in range(missing)] + history
        return cls(
            platform=platform,
            key=key,
            layers=list(layers),
            history=history,
            env=env,
            labels=labels,
            entrypoint=list(c["Entrypoint"]) if c.get("Entrypoint") else None,
            cmd=list(c["Cmd"]) if c.get("Cmd") else None,
            workdir=str(c.get("WorkingDir") or ""),
            user=str(c.get("User") or ""),
            exposed_ports=dict(c.get("ExposedPorts") or {}),
            volumes=dict(c.get("Volumes") or {}),
            stop_signal=c.get("StopSignal"),
            meta=meta,
            author=config.get("author"),
            own_from=len(layers),
        )

    def scope(self) -> dict[str, str]:
        """Variables for expansion: ARGs, overridden by ENV (as in a Dockerfile)."""
        return {**self.args, **self.env}

    def add_history(self, created_by: str, created: str, *, empty_layer: bool) -> None:
        """Append one history entry (``created_by`` is the instruction as written)."""
        entry: dict[str, Any] = {"created": created, "created_by": created_by}
        if empty_layer:
            entry["empty_layer"] = True
        self.history.append(entry)

    def config(self, created: str) -> dict[str, Any]:
        """The OCI image config of this state."""
        labels = {k: v for k, v in self.labels.items() if not k.startswith("io.kbuild.")}
        labels.update(self.meta.labels())
        c: dict[str, Any] = {}
        if self.env:
            c["Env"] = [f"{k}={v}" for k, v in self.env.items()]
        if self.entrypoint is not None:
            c["Entrypoint"] = self.entrypoint
        if self.cmd is not None:
            c["Cmd"] = self.cmd
        if self.workdir:
            c["WorkingDir"] = self.workdir
        if self.user:
            c["User"] = self.user
        if self.exposed_ports:
            c["ExposedPorts"] = self.exposed_ports
        if self.volumes:
            c["Volumes"] = self.volumes
        if self.stop_signal:
            c["StopSignal"] = self.stop_signal
        if labels:
            c["Labels"] = labels
        out: dict[str, Any] = {
            "created": created,
            "architecture": self.platform.architecture,
            "os": self.platform.os,
            "config": c,
            "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in self.layers]},
            "history": self.history,
        }
        if self.platform.variant:
            out["variant"] = self.platform.variant
        if self.author:
            out["author"] = self.author
        return out
