"""The build: Kubefile → stage graph → stages solved in parallel → image in the store.

Stages form a graph through ``FROM <stage>`` and ``COPY --from=<stage>``. Only
the target stage and what it needs are built; each runs in its own thread
and waits only for the stages it uses. Steps inside a stage form a chain of
cache keys (see ``StageRunner``).
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

from kbuild.errors import ImageNotFound, UsageError
from kbuild.kubefile import instructions as ins
from kbuild.kubefile import parse
from kbuild.layerstore import META_KEY, Descriptor, LayerInfo, Platform, Reference, Store

from .collect import FetchFunc
from .collect.step import collect_images
from .events import BuildFinished, Progress, StepDone, StepStarted
from .session import (
    CREATED_PLACEHOLDER,
    BuildOptions,
    Cancelled,
    PullFunc,
    Session,
    step_id,
)
from .stage import StageRunner
from .state import ImageState, created_time, digest_of


@dataclass
class BuildResult:
    """The image a build wrote."""

    manifest: Descriptor
    config_digest: str
    size: int
    layers: int
    seconds: float
    tags: list[str]


def _run_stage(session: Session, stage: ins.Stage) -> ImageState:
    """Build one stage (in a worker thread)."""
    try:
        sid = step_id(stage, 1, session.single_stage)
        session.emit(StepStarted(sid, stage.base.original))
        started = time.monotonic()
        state = session.base_state(stage)
        session.emit(StepDone(sid, False, time.monotonic() - started))
        return StageRunner(session, stage, state).run()
    except BaseException:
        session.failed.set()
        raise


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
                session.futures[idx] = pool.submit(_run_stage, session, kubefile.stages[idx])
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
