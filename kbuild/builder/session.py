"""What the stages of one build share: options, the store, the context, caches, pulls.

A :class:`Session` lives for one ``build()``; each stage's ``StageRunner``
gets it to resolve images and stages, reuse cached content digests, run a
step once when two stages need it, and report progress.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from kbuild.errors import BuildError, ImageNotFound, KbuildError
from kbuild.kubefile import expand
from kbuild.kubefile import instructions as ins
from kbuild.layerstore import (
    Descriptor,
    MediaType,
    Platform,
    Reference,
    StatCache,
    Store,
    index_platforms,
    pick_manifest,
    unpack_layer,
)

from .collect import FetchFunc
from .collect.helm import Helm
from .collect.lists import Exclusions
from .context import SourceTree
from .copy import CopyPlanner
from .events import BytesDone, Event, Progress
from .ignore import load_ignore
from .state import BaseLayer, ImageState, platform_args

CREATED_PLACEHOLDER = "\x00created\x00"


def where(inst: ins.Instruction) -> str:
    """``Kubefile:LINE`` of an instruction, for error messages."""
    return f"{inst.pos.filename}:{inst.pos.line}"


def step_id(stage: ins.Stage, n: int, single: bool) -> str:
    """How a step is named in progress output: ``2/5``, ``build 2/5`` or ``#1 2/5``."""
    total = len(stage.instructions) + 1
    if stage.base.alias:
        return f"{stage.base.alias} {n}/{total}"
    return f"{n}/{total}" if single else f"#{stage.index} {n}/{total}"


class Cancelled(Exception):
    """Another stage failed; this one stops between steps."""


class PullFunc(Protocol):
    """``kbuild.registry.pull_image``'s shape."""

    def __call__(self, store: Store, ref: str, *, platform: str | None = ...,
                 progress: Any = ...) -> Descriptor: ...


@dataclass
class BuildOptions:
    """What ``kbuild build`` was asked for."""

    context: Path
    kubefile: Path | None = None
    tags: list[str] = field(default_factory=list)
    build_args: dict[str, str] = field(default_factory=dict)
    no_cache: bool = False
    platform: str | None = None
    compression: str = "zstd"
    level: int = 3
    labels: dict[str, str] = field(default_factory=dict)
    target: str | None = None
    #: sealer's ``--image-list``: files of references to carry besides what files name.
    image_lists: list[Path] = field(default_factory=list)
    #: sealer's ``--ignored-image-list``: files of references (or globs) not to carry.
    ignored_image_lists: list[Path] = field(default_factory=list)
    #: references (or globs) not to carry (``--exclude-image``).
    exclude_images: list[str] = field(default_factory=list)
    #: the helm binary that renders charts (``--helm``; else ``$KBUILD_HELM``, else PATH).
    helm: str | None = None


class Session:
    """State shared by the stages of one build."""

    def __init__(self, store: Store, options: BuildOptions, kubefile: ins.Kubefile,
                 progress: Progress | None, pull: PullFunc | None,
                 fetch: FetchFunc | None = None) -> None:
        self.fetch = fetch
        self.helm = Helm(options.helm)
        self.image_lists = list(options.image_lists)
        self.exclusions = Exclusions.from_files(options.ignored_image_lists,
                                                options.exclude_images)
        self.store = store
        self.options = options
        self.kubefile = kubefile
        self.compression = options.compression
        self.level = options.level
        self.no_cache = options.no_cache
        self.platform = Platform.parse(options.platform)
        self.pull = pull
        self._progress = progress
        self._emit_lock = threading.Lock()
        self.failed = threading.Event()
        self.context = SourceTree(options.context, ignore=load_ignore(options.context),
                                  what="build context")
        (store.root / "cache").mkdir(parents=True, exist_ok=True)
        self.stat_cache = StatCache(store.root / "cache" / "stat.sqlite")
        tmp_base = store.root / "tmp"
        tmp_base.mkdir(parents=True, exist_ok=True)
        self.tmp_dir = Path(tempfile.mkdtemp(prefix="build-", dir=tmp_base))
        self.futures: dict[int, Future[ImageState]] = {}
        self._step_locks: dict[str, threading.Lock] = {}
        self._step_locks_lock = threading.Lock()
        self.built_keys: set[str] = set()  # built in this build (reused even with --no-cache)
        self.single_stage = len(kubefile.stages) == 1
        self.global_args: dict[str, str] = {}
        auto = platform_args(self.platform)
        for arg in kubefile.global_args:
            value = self._arg(arg.name, arg.default, self.global_args, arg, auto)
            if value is not None:
                self.global_args[arg.name] = value

    # -- helpers used by stages ---------------------------------------------

    def emit(self, event: Event) -> None:
        """Send an event to the caller (one at a time)."""
        if self._progress is not None:
            with self._emit_lock:
                self._progress(event)

    def file_digest(self, path: str, st: os.stat_result) -> str:
        """Content digest of a file through the stat cache (thread-safe)."""
        known = self.stat_cache.lookup(st)
        return known if known is not None else self.stat_cache.file_digest(path, st)

    def step_lock(self, key: str) -> threading.Lock:
        """One lock per cache key, so parallel stages never build the same step twice."""
        with self._step_locks_lock:
            return self._step_locks.setdefault(key, threading.Lock())

    def content_digest(self, planner: CopyPlanner) -> str:
        """The plan's content digest, reused from a record when no stat signature changed."""
        signature, racy = planner.signature()
        record = self.store.get_record("build", signature)
        if record is not None and isinstance(record.get("digest"), str):
            return str(record["digest"])
        digest = planner.digest(self.file_digest)
        if not racy:
            self.store.put_record("build", signature, {"digest": digest, "blobs": []})
        return digest

    def _arg(self, name: str, default: str | None, scope: dict[str, str],
             inst: ins.Instruction, auto: dict[str, str]) -> str | None:
        if name in self.options.build_args:
            return self.options.build_args[name]
        if default is not None:
            return expand(default, scope, pos=inst.pos)
        if name in self.global_args:
            return self.global_args[name]
        return auto.get(name)

    def arg_value(self, name: str, default: str | None, state: ImageState,
                  inst: ins.Instruction) -> str | None:
        """Value of ``ARG name[=default]`` inside a stage."""
        return self._arg(name, default, state.scope(), inst, platform_args(state.platform))

    def stage_index(self, name: str) -> int | None:
        """Index of the stage called ``name`` (alias, case-insensitive, or number)."""
        for stage in self.kubefile.stages:
            if stage.base.alias and stage.base.alias.lower() == name.lower():
                return stage.index
        if name.isdigit() and int(name) < len(self.kubefile.stages):
            return int(name)
        return None

    def source_state(self, ref: str, inst: ins.Instruction, platform: Platform) -> ImageState:
        """The state ``COPY --from=ref`` reads: a stage's result or an image."""
        idx = self.stage_index(ref)
        if idx is not None:
            fut = self.futures.get(idx)
            if fut is None:
                raise BuildError(f"{where(inst)}: stage {ref!r} is not built before this one")
            return fut.result()
        return self.image_state(ref, inst, platform)

    def image_state(self, image: str, inst: ins.Instruction, platform: Platform,
                    step: str = "pull") -> ImageState:
        """The state of a local image (pulled first when missing and a puller is given)."""
        try:
            ref = Reference.parse(image)
        except KbuildError as exc:
            raise BuildError(f"{where(inst)}: {exc}") from exc
        try:
            desc = self.store.resolve(ref)
        except ImageNotFound:
            if self.pull is None:
                raise BuildError(
                    f"{where(inst)}: image {image} is not in the local store",
                    hint="build it first, or load it with `kbuild load`") from None
            desc = self.pull(self.store, str(ref), platform=str(platform),
                             progress=self._pull_progress(step))
        if desc.media_type in MediaType.INDEXES:
            index = self.store.read_manifest(desc)
            entry = pick_manifest(index, platform)
            if entry is None:
                raise BuildError(f"{where(inst)}: image {image} has no manifest for {platform}",
                                 hint=f"it has: {', '.join(index_platforms(index)) or 'none'}")
            desc = Descriptor.from_dict(entry)
        manifest = self.store.read_manifest(desc)
        config = self.store.read_config(manifest)
        diff_ids = list((config.get("rootfs") or {}).get("diff_ids") or [])
        blobs = manifest.get("layers") or []
        if len(diff_ids) != len(blobs):
            raise BuildError(f"{where(inst)}: image {image} is inconsistent "
                             f"({len(blobs)} layers, {len(diff_ids)} diffIDs)")
        layers = [BaseLayer(b["digest"], d, int(b.get("size", 0)), 0, b.get("mediaType", ""))
                  for b, d in zip(blobs, diff_ids, strict=True)]
        return ImageState.from_config(platform, desc.digest, config, layers)

    def _pull_progress(self, step: str) -> Any:
        """Forward a puller's byte counts (any event with digest/done/total) as BytesDone."""
        def forward(event: Any) -> None:
            digest, done, total = (getattr(event, k, None) for k in ("digest", "done", "total"))
            if isinstance(digest, str) and isinstance(done, int) and isinstance(total, int):
                self.emit(BytesDone(f"{step} pull {digest[7:19]}", done, total))
        return forward

    def rootfs(self, state: ImageState) -> tuple[Path, Any]:
        """A directory holding ``state``'s filesystem, and a function to release it."""
        if len(state.layers) == 1:
            layer = state.layers[0]
            return self.store.snapshot(layer.diff_id, layer.digest), lambda: None
        target = Path(tempfile.mkdtemp(prefix="rootfs-", dir=self.tmp_dir))
        try:
            for layer in state.layers:
                with self.store.open_blob(layer.digest) as f:
                    unpack_layer(f, target, media_type=layer.media_type)
        except BaseException:
            shutil.rmtree(target, ignore_errors=True)
            raise
        return target, lambda: shutil.rmtree(target, ignore_errors=True)

    # -- stages -----------------------------------------------------------------

    def base_state(self, stage: ins.Stage) -> ImageState:
        """The state a stage starts from (its FROM)."""
        base = stage.base
        platform = self.platform
        if base.platform:
            platform = Platform.parse(expand(base.platform, self.global_args, pos=base.pos))
        image = expand(base.image, self.global_args, pos=base.pos)
        if image.lower() == "scratch":
            return ImageState.scratch(platform)
        idx = self.stage_index(image)
        if idx is not None and idx < stage.index:
            parent = self.futures[idx].result()
            config = parent.config(CREATED_PLACEHOLDER)
            state = ImageState.from_config(platform, parent.key, config, parent.layers)
            state.own_from, state.declared = parent.own_from, list(parent.declared)
            state.meta = parent.meta.inherited()
            state.meta.launch, state.meta.cmds, state.meta.cmd = (
                parent.meta.launch, parent.meta.cmds, list(parent.meta.cmd))
            return state
        return self.image_state(image, base, platform,
                                step=step_id(stage, 1, self.single_stage))

    def dependencies(self, stage: ins.Stage) -> set[int]:
        """Stages this stage reads (FROM a stage, COPY --from a stage)."""
        deps: set[int] = set()
        words = [expand(stage.base.image, self.global_args, pos=stage.base.pos)]
        for inst in stage.instructions:
            if isinstance(inst, ins.Copy) and inst.from_stage:
                words.append(expand(inst.from_stage, self.global_args, pos=inst.pos))
        for w in words:
            idx = self.stage_index(w)
            if idx is not None and idx < stage.index:
                deps.add(idx)
        return deps

    def close(self) -> None:
        """Remove the build's temp dir and close the stat cache."""
        shutil.rmtree(self.tmp_dir, ignore_errors=True)
        close = getattr(self.stat_cache, "close", None)
        if close is not None:
            close()
