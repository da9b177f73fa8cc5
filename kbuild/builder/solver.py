"""The build: Kubefile → stage graph → stages solved in parallel → image in the store.

Stages form a graph through ``FROM <stage>`` and ``COPY --from=<stage>``. Only
the target stage and what it needs are built; each runs in its own thread
and waits only for the stages it uses. Steps inside a stage form a chain of
cache keys (see ``StageRunner``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from kbuild.errors import BuildError, ImageNotFound, KbuildError, UsageError
from kbuild.kubefile import expand, parse
from kbuild.kubefile import instructions as ins
from kbuild.layerstore import (
    META_KEY,
    Descriptor,
    LayerInfo,
    MediaType,
    Platform,
    Reference,
    Store,
    index_platforms,
    pick_manifest,
    unpack_layer,
)

from .collect import FetchFunc
from .collect.helm import Helm
from .collect.lists import Exclusions
from .collect.step import collect_images
from .context import SourceTree
from .copy import CopyPlanner
from .events import BuildFinished, BytesDone, Event, Progress, StepDone, StepStarted
from .ignore import load_ignore
from .stage import CREATED_PLACEHOLDER, Cancelled, StageRunner, step_id, where
from .state import BaseLayer, ImageState, created_time, digest_of, platform_args


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


@dataclass
class BuildResult:
    """The image a build wrote."""

    manifest: Descriptor
    config_digest: str
    size: int
    layers: int
    seconds: float
    tags: list[str]


class Session:
    """State shared by the stages of one build."""

    def __init__(self, store: Store, options: BuildOptions, kubefile: ins.Kubefile,
                 progress: Progress | None, pull: PullFunc | None,
                 fetch: FetchFunc | None = None) -> None:
        from kbuild.layerstore import StatCache

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
            index = self.store.read_json(desc.digest)
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

    def run_stage(self, stage: ins.Stage) -> ImageState:
        """Build one stage (in a worker thread)."""
        try:
            sid = step_id(stage, 1, self.single_stage)
            self.emit(StepStarted(sid, stage.base.original))
            started = time.monotonic()
            state = self.base_state(stage)
            self.emit(StepDone(sid, False, time.monotonic() - started))
            return StageRunner(self, stage, state).run()
        except BaseException:
            self.failed.set()
            raise

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


def _needed(session: Session, target: int) -> list[int]:
    needed: set[int] = set()
    todo = [target]
    while todo:
        idx = todo.pop()
        if idx in needed:
            continue
        needed.add(idx)
        todo.extend(session.dependencies(session.kubefile.stages[idx]))
    return sorted(needed)


def read_kubefile(options: BuildOptions) -> ins.Kubefile:
    """Read and parse the Kubefile the options name (``CONTEXT/Kubefile`` by default)."""
    path = options.kubefile or options.context / "Kubefile"
    if not options.context.is_dir():
        raise UsageError(f"build context {options.context} is not a directory")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"no Kubefile at {path}", hint="give one with -f FILE") from None
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from exc
    try:
        display = str(path.relative_to(Path.cwd()))
    except ValueError:
        display = str(path)
    return parse(text, filename=display)


def build(store: Store, options: BuildOptions, *, progress: Progress | None = None,
          pull: PullFunc | None = None, fetch: FetchFunc | None = None) -> BuildResult:
    """Build the Kubefile of ``options`` into ``store`` and tag the image.

    ``pull`` fetches a FROM image missing from the store; ``fetch`` an image
    the cluster image carries (``kbuild.registry.fetch_image``; without it
    only the local store is searched). Raises ``KubefileError`` for a bad
    Kubefile, ``UsageError`` for bad options, ``BuildError`` when a step fails
    (``ImageCollectError`` when a carried image cannot be found or its
    reference rendered); the cache is left as it was.
    """
    started = time.monotonic()
    if options.compression not in ("zstd", "gzip"):
        raise UsageError(f"unknown compression {options.compression!r} (zstd or gzip)")
    tags = [str(Reference.parse(t)) for t in options.tags]
    platforms = [p.strip() for p in (options.platform or "").split(",") if p.strip()]
    if len(platforms) > 1:
        return _build_index(store, options, platforms, tags, started, progress, pull, fetch)
    return _build_one(store, options, tags, started, progress, pull, fetch)


def _build_index(store: Store, options: BuildOptions, platforms: list[str], tags: list[str],
                 started: float, progress: Progress | None, pull: PullFunc | None,
                 fetch: FetchFunc | None) -> BuildResult:
    """One image per platform, then an OCI image index over them, tagged."""
    parsed = [Platform.parse(p) for p in platforms]
    if len({str(p) for p in parsed}) != len(parsed):
        raise UsageError(f"--platform lists a platform twice: {options.platform}")
    results = [
        _build_one(store, replace(options, platform=str(p)), [], started, progress, pull, fetch)
        for p in parsed
    ]
    manifests = [
        Descriptor(r.manifest.media_type, r.manifest.digest, r.manifest.size,
                   platform=r.manifest.platform or p.to_dict())
        for r, p in zip(results, parsed, strict=True)
    ]
    index = store.write_index(manifests)
    for tag in tags:
        store.tag(tag, index)
    size = sum(r.size for r in results)
    layers = sum(r.layers for r in results)
    seconds = time.monotonic() - started
    if progress is not None:
        progress(BuildFinished(index.digest, "", size, layers, seconds, tuple(tags)))
    return BuildResult(index, "", size, layers, seconds, tags)


def _build_one(store: Store, options: BuildOptions, tags: list[str], started: float,
               progress: Progress | None, pull: PullFunc | None,
               fetch: FetchFunc | None) -> BuildResult:
    """Build for one platform and tag the manifest."""
    kubefile = read_kubefile(options)
    if not kubefile.stages:
        raise UsageError("the Kubefile has no FROM")
    session = Session(store, options, kubefile, progress, pull, fetch)
    try:
        target = len(kubefile.stages) - 1
        if options.target:
            found = session.stage_index(options.target)
            if found is None:
                raise UsageError(f"no stage named {options.target!r} in the Kubefile")
            target = found
        order = _needed(session, target)
        with ThreadPoolExecutor(max_workers=max(1, len(order)),
                                thread_name_prefix="kbuild-stage") as pool:
            for idx in order:
                session.futures[idx] = pool.submit(session.run_stage, kubefile.stages[idx])
            final = _first_error(session, order)
        collect_images(session, final)
        return _write(session, final, tags, started)
    finally:
        session.close()


def _first_error(session: Session, order: list[int]) -> ImageState:
    """Wait for every stage; raise the first real error (not a cancellation)."""
    errors: list[BaseException] = []
    result: ImageState | None = None
    for idx in order:
        try:
            result = session.futures[idx].result()
        except Cancelled:
            continue
        except BaseException as exc:
            errors.append(exc)
    if errors:
        raise errors[0]
    assert result is not None
    return result


def _write(session: Session, state: ImageState, tags: list[str], started: float) -> BuildResult:
    store = session.store
    state.labels.update(session.options.labels)
    annotations = {META_KEY: state.meta.to_json()} if not state.meta.empty else None
    draft = state.config(CREATED_PLACEHOLDER)
    created_key = digest_of("image-created", draft, annotations)
    created: str
    if os.environ.get("SOURCE_DATE_EPOCH") or session.no_cache:
        created = created_time()
        store.put_record("build", created_key, {"created": created, "blobs": []})
    else:
        record = store.get_record("build", created_key)
        if record and "created" in record:
            created = str(record["created"])
        else:
            created = created_time()
            store.put_record("build", created_key, {"created": created, "blobs": []})
    config = state.config(created)
    for entry in config["history"]:
        if entry.get("created") == CREATED_PLACEHOLDER:
            entry["created"] = created
    layers = [LayerInfo(layer.digest, layer.diff_id, layer.size, layer.uncompressed_size,
                        layer.media_type) for layer in state.layers]
    desc = store.write_image(config, layers, annotations=annotations)
    for tag in tags:
        try:
            current = store.resolve(tag).digest
        except ImageNotFound:
            current = None
        if current != desc.digest:
            store.tag(tag, desc)
    manifest = store.read_manifest(desc)
    size = sum(int(m.get("size", 0)) for m in manifest.get("layers", []))
    seconds = time.monotonic() - started
    result = BuildResult(desc, manifest["config"]["digest"], size, len(layers), seconds, tags)
    session.emit(BuildFinished(desc.digest, result.config_digest, size, len(layers), seconds,
                               tuple(tags)))
    return result
