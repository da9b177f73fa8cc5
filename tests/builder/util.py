"""Helpers of the builder tests: write a context, build it, look inside the image."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path
from typing import Any

import zstandard

from kbuild.builder import BuildOptions, BuildResult, build
from kbuild.builder.events import Event, StepDone
from kbuild.layerstore import Store, unpack_layer


def write_tree(root: Path, files: dict[str, str | bytes]) -> None:
    """Create files (parents included) under ``root``."""
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, str):
            path.write_text(content)
        else:
            path.write_bytes(content)


class Built:
    """A build's result plus the events it emitted."""

    def __init__(self, store: Store, result: BuildResult, events: list[Event]) -> None:
        self.store = store
        self.result = result
        self.events = events
        self.manifest = store.read_manifest(result.manifest)
        self.config = store.read_config(self.manifest)

    @property
    def steps(self) -> list[StepDone]:
        """StepDone events of layer steps, in order."""
        return [e for e in self.events if isinstance(e, StepDone) and e.layer_digest]

    @property
    def cached(self) -> list[bool]:
        """For each layer step: was it a cache hit."""
        return [e.cached for e in self.steps]

    @property
    def layers(self) -> list[dict[str, Any]]:
        """The manifest's layer descriptors."""
        return list(self.manifest["layers"])

    def layer_members(self, n: int) -> dict[str, tarfile.TarInfo]:
        """Tar members of layer ``n`` by name."""
        return {m.name: m for m in self.layer_tar(n).getmembers()}

    def layer_tar(self, n: int) -> tarfile.TarFile:
        """Layer ``n`` as an open tarfile (in memory)."""
        digest = self.layers[n]["digest"]
        with self.store.open_blob(digest) as f:
            raw = f.read()
        data = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(raw)).read()
        return tarfile.open(fileobj=io.BytesIO(data))

    def rootfs(self, target: Path) -> Path:
        """Unpack every layer into ``target``."""
        for layer in self.layers:
            with self.store.open_blob(layer["digest"]) as f:
                unpack_layer(f, target, media_type=layer["mediaType"])
        return target


def run_build(store: Store, context: Path, kubefile: str | None = None, **kw: Any) -> Built:
    """Write ``kubefile`` into the context (when given) and build it."""
    if kubefile is not None:
        (context / "Kubefile").write_text(kubefile)
    events: list[Event] = []
    pull = kw.pop("pull", None)
    fetch = kw.pop("fetch", None)
    opts = BuildOptions(context=context, **kw)
    result = build(store, opts, progress=events.append, pull=pull, fetch=fetch)
    return Built(store, result, events)
