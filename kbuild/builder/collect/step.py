"""The collection step: the images the image needs, resolved and written into ``registry/``.

Runs after the last instruction of the image being built. The files the
build added are always scanned (cached by their layers); a plain container
image whose files name no image gets no step and no layer. It

1. gathers references: the scan of the added layers (``scan.py``), IMAGE
   lines, ``--image-list`` files; ``--ignored-image-list`` and
   ``--exclude-image`` drop some;
2. keeps those the base image carries already (they only gain a source) and
   resolves the others (``resolve.py``); a reference that does not resolve
   fails the build with every such image and the file that wants it, a
   candidate (a guess) that does not resolve is dropped;
3. writes the new images into one layer under ``registry/`` in
   distribution's storage layout, without the blobs lower layers already
   hold there, cached by the images' digests and those blobs;
4. records every carried image, with its digest, size and sources, in the
   image metadata.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from kbuild.errors import ImageCollectError, KbuildError
from kbuild.layerstore import (
    CarriedImage,
    ImageSource,
    LayerInfo,
    Reference,
    pack_layer,
    tree_entries,
    write_registry_storage,
)

from ..events import StepDone, StepLog, StepStarted
from ..stage import CREATED_PLACEHOLDER, cached_or_make
from ..state import ImageState, digest_of
from .found import Found
from .layers import registry_blobs, remember_registry_blobs
from .resolve import Resolved, resolve
from .scan import listed_images, scan_layers

if TYPE_CHECKING:
    from ..session import Session

STEP_ID = "images"


def is_cluster_image(session: Session, state: ImageState) -> bool:
    """A cluster image (or a build given image lists) shows the step even when it finds nothing."""
    return not state.meta.empty or bool(state.declared) or bool(session.image_lists)


def collect_images(session: Session, state: ImageState) -> None:
    """Run the step on the final state of the image (adds a layer and the metadata)."""
    shown = is_cluster_image(session, state)
    started = time.monotonic()
    if shown:
        session.emit(StepStarted(STEP_ID, "collect container images into registry/"))
    scanned, scan_cached = scan_layers(session, state, session.helm)
    if not shown:
        if not scanned:
            return
        session.emit(StepStarted(STEP_ID, "collect container images into registry/"))
    wanted = _group([*scanned, *state.declared, *listed_images(session.image_lists)], session)
    carried = {c.name: c for c in state.meta.images}
    new: list[tuple[Resolved, list[Found]]] = []
    missing: list[str] = []
    for name, found in wanted.items():
        if name in carried:
            sources = [f.source for f in found if f.source not in carried[name].sources]
            carried[name] = dataclasses.replace(carried[name],
                                                sources=carried[name].sources + sources)
            continue
        strict = [f for f in found if not f.candidate]
        try:
            resolved = resolve(session.store, Reference.parse(name), state.platform,
                               session.fetch, refetch=session.no_cache, quick=not strict)
        except KbuildError as exc:
            if strict:
                missing.append(f"{name}, wanted by {strict[0].source}: {exc.message}")
            continue
        new.append((resolved, found))
        session.emit(StepLog(STEP_ID, f"{name} {resolved.desc.digest[:19]} "
                                      f"{resolved.size / 1e6:.1f} MB from {resolved.where}"))
    if missing:
        raise ImageCollectError(
            f"{len(missing)} image(s) this image needs cannot be found:\n  "
            + "\n  ".join(missing),
            hint="build or pull them, log in to their registry, or exclude them with "
                 "--ignored-image-list FILE / --exclude-image REF")
    _check_served_once([*carried.values()], new)
    layer_cached = scan_cached
    if new:
        layer_cached = _add_layer(session, state, new)
    state.meta.images = [*carried.values(), *(_carried(r, f) for r, f in new)]
    last = state.layers[-1] if new else None
    session.emit(StepDone(STEP_ID, layer_cached, time.monotonic() - started,
                          last.digest if last else None, last.size if last else 0))


def _group(found: list[Found], session: Session) -> dict[str, list[Found]]:
    """References by normalized name, in order of first appearance, exclusions dropped."""
    out: dict[str, list[Found]] = {}
    for f in found:
        if session.exclusions.excluded(f.ref):
            continue
        out.setdefault(str(Reference.parse(f.ref)), []).append(f)
    return out


def _check_served_once(carried: list[CarriedImage], new: list[tuple[Resolved, list[Found]]]
                       ) -> None:
    """Two images may not claim the same repository and tag of the embedded registry."""
    served = {(c.repository, c.tag): c.name for c in carried if c.tag}
    for resolved, found in new:
        ref = resolved.ref
        other = served.get((ref.repository, ref.tag)) if ref.tag else None
        if other is not None and other != str(ref):
            raise ImageCollectError(
                f"{found[0].source}: image {ref} and image {other} would both be served as "
                f"{ref.repository}:{ref.tag} by the cluster's registry",
                hint="the embedded registry mirrors every registry by repository path; "
                     "use one of them, or give one another tag")
        if ref.tag:
            served[(ref.repository, ref.tag)] = str(ref)


def _carried(resolved: Resolved, found: list[Found]) -> CarriedImage:
    ref = resolved.ref
    sources: list[ImageSource] = list(dict.fromkeys(f.source for f in found))
    return CarriedImage(str(ref), ref.repository, ref.tag, resolved.desc.digest,
                        resolved.desc.media_type, resolved.platforms, resolved.size, sources)


def _add_layer(session: Session, state: ImageState,
               new: list[tuple[Resolved, list[Found]]]) -> bool:
    """The layer of the new images (cached); returns whether it came from the cache."""
    lower = registry_blobs(session.store, state.layers)
    needed = {d for r, _ in new for d in r.blobs}
    skip = sorted(lower & needed)
    images = sorted((str(r.ref), r.desc.digest) for r, _ in new)
    key = digest_of("COLLECT", images, skip, str(state.platform), session.compression,
                    session.level)
    names = ", ".join(name for name, _ in images)
    created_by = f"kbuild: {len(images)} container image(s) into registry/: {names}"

    def make() -> LayerInfo:
        return _pack(session, state, [r for r, _ in new], set(skip))

    cached, layer = cached_or_make(session, key, created_by, make)
    remember_registry_blobs(session.store, layer.diff_id, sorted(needed - set(skip)))
    state.layers.append(layer)
    state.key = digest_of(state.key, key)
    state.add_history(created_by, CREATED_PLACEHOLDER, empty_layer=False)
    return cached


def _pack(session: Session, state: ImageState, new: list[Resolved], skip: set[str]
          ) -> LayerInfo:
    tmp = Path(tempfile.mkdtemp(prefix="registry-", dir=session.tmp_dir))
    try:
        write_registry_storage(session.store, [(r.ref, r.desc) for r in new], tmp / "registry",
                               platforms=[state.platform], skip_blobs=skip)
        entries = [dataclasses.replace(e, mtime=0) for e in tree_entries(tmp)]
        return pack_layer(session.store, entries, compression=session.compression,
                          level=session.level)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
