"""One stage of a build: its instructions applied in order to an ``ImageState``.

Layer instructions (COPY, ADD, APP, CNI, CSI, RUN) go through ``_layer_step``:
the cache key is computed first (cheap), a cache record is reused when its
blobs are present, and only a miss does the work. Every other instruction
changes the config alone.
"""

from __future__ import annotations

import posixpath
import shutil
import stat
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kbuild.errors import BuildError, UnsafeLayerError
from kbuild.kubefile import expand
from kbuild.kubefile import instructions as ins
from kbuild.layerstore import (
    APPS_DIR,
    AppInfo,
    ImageSource,
    LayerInfo,
    TarEntry,
    default_cmds,
    pack_layer,
    pack_tree,
)

from . import run as runmod
from .collect.found import Found, check_reference
from .context import Source, SourceTree
from .copy import CopyPlanner, Planned, iter_tar_entries, layer_path, parse_chmod
from .events import BytesDone, StepDone, StepLog, StepStarted
from .fetch import is_url, parse_checksum
from .meta import detect_type
from .session import CREATED_PLACEHOLDER, Cancelled, Session, step_id, where
from .state import BaseLayer, ImageState, digest_of

_LAYER_KINDS = (ins.Copy, ins.App, ins.Run)


class StageRunner:
    """Applies the instructions of one stage."""

    def __init__(self, session: Session, stage: ins.Stage, state: ImageState) -> None:
        self.session = session
        self.stage = stage
        self.state = state
        self.total = len(stage.instructions) + 1
        self.cmd_set_here = False

    # -- plumbing ------------------------------------------------------------

    def step_id(self, n: int) -> str:
        """``[stage ]n/total`` of the n-th step (FROM is 1)."""
        return step_id(self.stage, n, self.session.single_stage)

    def expand(self, word: str, inst: ins.Instruction, extra: dict[str, str] | None = None) -> str:
        """Expand a word with the stage's ARG/ENV scope."""
        scope = self.state.scope()
        if extra:
            scope = {**extra, **scope}
        return expand(word, scope, pos=inst.pos)

    def run(self) -> ImageState:
        """Apply every instruction; returns the final state."""
        for n, inst in enumerate(self.stage.instructions, start=2):
            if self.session.failed.is_set():
                raise Cancelled()
            sid = self.step_id(n)
            self.session.emit(StepStarted(sid, inst.original))
            started = time.monotonic()
            if isinstance(inst, _LAYER_KINDS):
                cached, layer = self._layer_instruction(sid, inst)
                self.session.emit(StepDone(sid, cached, time.monotonic() - started,
                                           layer.digest, layer.size))
            else:
                self._metadata(inst)
                self.state.add_history(inst.original, CREATED_PLACEHOLDER, empty_layer=True)
                self.session.emit(StepDone(sid, False, time.monotonic() - started))
        return self.state

    def _layer_step(self, sid: str, inst: ins.Instruction, key_parts: list[Any],
                    make: Callable[[], LayerInfo]) -> tuple[bool, BaseLayer]:
        session = self.session
        key = digest_of(self.state.key, inst.__class__.__name__.upper(), key_parts,
                        str(self.state.platform), session.compression, session.level)
        with session.step_lock(key):  # the same step in two parallel stages runs once
            cached, layer = self._cached_or_make(key, inst, make)
        self.state.layers.append(layer)
        self.state.key = key
        self.state.add_history(inst.original, CREATED_PLACEHOLDER, empty_layer=False)
        return cached, layer

    def _cached_or_make(self, key: str, inst: ins.Instruction,
                        make: Callable[[], LayerInfo]) -> tuple[bool, BaseLayer]:
        return cached_or_make(self.session, key, inst.original, make)

    def _progress(self, sid: str) -> Callable[[Any], None]:
        def forward(event: Any) -> None:
            self.session.emit(BytesDone(sid, int(event.done), int(event.total or 0)))
        return forward

    def _pack(self, sid: str, planner: CopyPlanner) -> LayerInfo:
        tmp = Path(tempfile.mkdtemp(prefix="copy-", dir=self.session.tmp_dir))
        try:
            by_path: dict[tuple[str, bool], TarEntry] = {}  # an opaque dir is its own entry
            for path, kind, mode, source, link, size, mtime in iter_tar_entries(planner, tmp):
                key = (path, kind == "opaque")
                by_path.pop(key, None)
                by_path[key] = TarEntry(path, kind, mode, source=source, linkname=link,
                                        size=size, mtime=mtime)
            return pack_layer(self.session.store, list(by_path.values()),
                              compression=self.session.compression,
                              level=self.session.level, progress=self._progress(sid))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    # -- layer instructions --------------------------------------------------

    def _layer_instruction(self, sid: str, inst: ins.Instruction) -> tuple[bool, BaseLayer]:
        if isinstance(inst, ins.Run):
            return self._run(sid, inst)
        if isinstance(inst, ins.App):
            return self._app(sid, inst)
        assert isinstance(inst, ins.Copy)
        if inst.from_stage:
            return self._copy_from(sid, inst)
        return self._copy(sid, inst)

    def _dest(self, inst: ins.Copy, multiple: bool) -> tuple[str, bool]:
        raw = self.expand(inst.dest, inst)
        dest_is_dir = raw.endswith("/") or raw in (".", "") or raw.endswith("/.")
        if not raw.startswith("/"):
            raw = posixpath.join(self.state.workdir or "/", raw)
        dest = layer_path(raw)
        if dest == "":
            dest_is_dir = True
        if multiple and not dest_is_dir:
            raise BuildError(
                f"{where(inst)}: with more than one source the destination must be a "
                f"directory ending in /: {inst.dest!r}")
        return dest, dest_is_dir

    def _sources(self, inst: ins.Instruction, words: tuple[str, ...]) -> list[str]:
        arch = {"ARCH": self.state.platform.architecture}
        return [self.expand(w, inst, arch) for w in words]

    def _copy(self, sid: str, inst: ins.Copy) -> tuple[bool, BaseLayer]:
        session = self.session
        add = isinstance(inst, ins.Add)
        srcs = self._sources(inst, inst.sources)
        checksum = None
        if isinstance(inst, ins.Add) and inst.checksum:
            checksum = parse_checksum(self.expand(inst.checksum, inst), where(inst))
            if len(srcs) != 1 or not is_url(srcs[0]):
                raise BuildError(f"{where(inst)}: --checksum needs exactly one http(s) source")
        elif not add and any(is_url(s) for s in srcs):
            raise BuildError(f"{where(inst)}: COPY cannot fetch URLs; use ADD")
        resolved: list[Source | str] = []
        for s in srcs:
            if add and is_url(s):
                resolved.append(s)
            else:
                resolved.extend(session.context.resolve(s, where(inst)))
        dest, dest_is_dir = self._dest(inst, len(resolved) > 1)
        planner = CopyPlanner(session.context, where(inst), chmod=parse_chmod(inst.chmod,
                                                                               where(inst)))
        if not self.state.layers and dest:
            planner.add_parents(dest + ("/" if dest_is_dir else ""))
            if dest_is_dir:
                planner.entries.append(_dir_entry(dest))
        try:
            for r in resolved:
                if isinstance(r, str):
                    planner.add_url(r, dest, dest_is_dir, checksum=checksum,
                                    tmp_dir=session.tmp_dir)
                else:
                    planner.add_local([r], dest, dest_is_dir or r.is_dir, extract=add)
            content = session.content_digest(planner)
            return self._layer_step(sid, inst, [dest, content],
                                    lambda: self._pack(sid, planner))
        finally:
            _drop_downloads(planner)

    def _copy_from(self, sid: str, inst: ins.Copy) -> tuple[bool, BaseLayer]:
        session = self.session
        ref = self.expand(inst.from_stage or "", inst)
        source_state = session.source_state(ref, inst, self.state.platform)
        srcs = self._sources(inst, inst.sources)
        multiple = len(srcs) > 1 or any(c in s for s in srcs for c in "*?[")
        raw_dest = self.expand(inst.dest, inst)
        key_parts = [source_state.key, srcs, raw_dest, self.state.workdir, inst.chmod]

        def make() -> LayerInfo:
            try:
                rootfs, cleanup = session.rootfs(source_state)
            except UnsafeLayerError as exc:  # the layers do not make one safe tree
                raise BuildError(f"{where(inst)}: {exc}") from None
            try:
                tree = SourceTree(rootfs, what=f"stage {ref!r}")
                resolved: list[Source] = []
                for s in srcs:
                    resolved.extend(tree.resolve(s, where(inst)))
                dest, dest_is_dir = self._dest(inst, len(resolved) > 1 or multiple)
                planner = CopyPlanner(tree, where(inst), chmod=parse_chmod(inst.chmod,
                                                                           where(inst)))
                if not self.state.layers and dest:
                    planner.add_parents(dest + ("/" if dest_is_dir else ""))
                for r in resolved:
                    planner.add_local([r], dest, dest_is_dir or r.is_dir)
                return self._pack(sid, planner)
            finally:
                cleanup()

        return self._layer_step(sid, inst, key_parts, make)

    def _app(self, sid: str, inst: ins.App) -> tuple[bool, BaseLayer]:
        session = self.session
        kind = "cni" if isinstance(inst, ins.Cni) else "csi" if isinstance(inst, ins.Csi) else "app"
        name = self.expand(inst.name, inst)
        if not name or "/" in name or name in (".", ".."):
            raise BuildError(f"{where(inst)}: bad app name {name!r}")
        app_dir = f"{APPS_DIR}/{name}"
        planner = CopyPlanner(session.context, where(inst))
        planner.add_parents(app_dir + "/")
        replaced = name in self.state.meta.apps
        if replaced:
            planner.add_opaque(app_dir)
        else:
            planner.entries.append(_dir_entry(app_dir))
        try:
            for word in self._sources(inst, inst.sources):
                if is_url(word):
                    planner.add_url(word, app_dir, True, checksum=None, tmp_dir=session.tmp_dir)
                    continue
                path = word[len("local://"):] if word.startswith("local://") else word
                # as sealer (a COPY into the app's directory): a directory gives its contents
                planner.add_local(session.context.resolve(path, where(inst)), app_dir, True)
            content = session.content_digest(planner)
            result = self._layer_step(sid, inst, [name, kind, content],
                                      lambda: self._pack(sid, planner))
        finally:
            _drop_downloads(planner)
        top = _top_entries(planner, app_dir)
        app = AppInfo(name=name, kind=kind, type=detect_type(top), files=[t[0] for t in top])
        app.cmds = default_cmds(app)
        self.state.meta.apps.pop(name, None)
        self.state.meta.apps[name] = app
        if kind == "cni":
            self.state.meta.cni = name
        elif kind == "csi":
            self.state.meta.csi = name
        return result

    def _run(self, sid: str, inst: ins.Run) -> tuple[bool, BaseLayer]:
        session = self.session
        runmod.needs_root(where(inst))
        argv = runmod.shell_words(inst.command, inst.argv, self.state.shell, inst.heredocs)
        key_parts = [argv, sorted(self.state.env.items()), sorted(self.state.args.items()),
                     self.state.workdir, self.state.user]
        parent_layers = list(self.state.layers)

        def make() -> LayerInfo:
            lowers = [session.store.snapshot(layer.diff_id, layer.digest)
                      for layer in reversed(parent_layers)]
            runner = runmod.RunInOverlay(session.tmp_dir, lowers)
            try:
                env = runmod.run_env(self.state.env, self.state.args, runner.merged)
                runner.run(argv, env, where=where(inst), display=inst.original,
                           workdir=self.state.workdir,
                           on_line=lambda line: session.emit(StepLog(sid, line)))
                return pack_tree(session.store, runner.upper, overlay_upper=True,
                                 compression=session.compression, level=session.level,
                                 progress=self._progress(sid))
            finally:
                runner.cleanup()

        return self._layer_step(sid, inst, key_parts, make)

    # -- metadata instructions -----------------------------------------------

    def _metadata(self, inst: ins.Instruction) -> None:
        st = self.state
        meta = st.meta
        if isinstance(inst, ins.Arg):
            value = self.session.arg_value(inst.name, inst.default, st, inst)
            if value is not None:
                st.args[inst.name] = value
        elif isinstance(inst, ins.Env):
            scope_values = [(k, self.expand(v, inst)) for k, v in inst.pairs]
            st.env.update(scope_values)
        elif isinstance(inst, ins.Label):
            for k, v in inst.pairs:
                st.labels[self.expand(k, inst)] = self.expand(v, inst)
        elif isinstance(inst, ins.Maintainer):
            st.author = inst.name
        elif isinstance(inst, ins.Cmd):
            text = inst.command if inst.command is not None else " ".join(inst.argv or ())
            meta.cmd.append(text)
            st.cmd = list(inst.argv) if inst.argv is not None else [*st.shell, inst.command or ""]
            self.cmd_set_here = True
        elif isinstance(inst, ins.Cmds):
            meta.cmds = list(inst.commands)
        elif isinstance(inst, ins.Launch):
            apps = list(inst.apps)
            for a in apps:
                app = meta.apps.get(a)
                if app is None:
                    raise BuildError(f"{where(inst)}: LAUNCH names app {a!r}, which the image "
                                     f"does not have (known: {', '.join(meta.apps) or 'none'})")
                if not app.cmds:
                    raise BuildError(
                        f"{where(inst)}: cannot tell how to launch app {a!r} (type "
                        f"{app.type}); give its commands with APPCMDS")
            meta.launch = apps
        elif isinstance(inst, ins.AppCmds):
            app = self._app_of(inst, inst.name)
            app.cmds = list(inst.commands)
            app.app_cmds = True
        elif isinstance(inst, ins.AppEnv):
            app = self._app_of(inst, inst.name)
            app.env.update(inst.pairs)
        elif isinstance(inst, ins.KubeVersion):
            meta.kube_version = self.expand(inst.constraint, inst)
        elif isinstance(inst, ins.Image):
            self._declare_images(inst)
        elif isinstance(inst, ins.Entrypoint):
            st.entrypoint = (list(inst.argv) if inst.argv is not None
                             else [*st.shell, inst.command or ""])
            if not self.cmd_set_here:
                st.cmd = None
        elif isinstance(inst, ins.Workdir):
            path = self.expand(inst.path, inst)
            st.workdir = posixpath.normpath(posixpath.join(st.workdir or "/", path))
        elif isinstance(inst, ins.User):
            st.user = self.expand(inst.user, inst)
        elif isinstance(inst, ins.Expose):
            for p in inst.ports:
                port = self.expand(p, inst)
                st.exposed_ports[port if "/" in port else f"{port}/tcp"] = {}
        elif isinstance(inst, ins.Volume):
            for p in inst.paths:
                st.volumes[self.expand(p, inst)] = {}
        elif isinstance(inst, ins.StopSignal):
            st.stop_signal = self.expand(inst.signal, inst)
        elif isinstance(inst, ins.Shell):
            st.shell = list(inst.argv)
        else:
            raise BuildError(f"{where(inst)}: instruction {inst.original.split()[0]!r} "
                             "is not supported by the builder")

    def _declare_images(self, inst: ins.Image) -> None:
        if inst.app is not None:
            self._app_of(inst, inst.app)
        for word in inst.refs:
            kubefile = posixpath.basename(inst.pos.filename)  # not the build machine's path
            source = ImageSource(kubefile, inst.pos.line, inst.app, "IMAGE")
            ref = check_reference(self.expand(word, inst), source)
            self.state.declared.append(Found(ref, source))

    def _app_of(self, inst: ins.Instruction, name: str) -> AppInfo:
        app = self.state.meta.apps.get(name)
        if app is None:
            raise BuildError(f"{where(inst)}: no app named {name!r} in the image "
                             f"(known: {', '.join(self.state.meta.apps) or 'none'})")
        return app


def cached_or_make(session: Session, key: str, created_by: str,
                   make: Callable[[], LayerInfo]) -> tuple[bool, BaseLayer]:
    """The layer of ``key`` from the build cache (blobs present), else ``make()`` and record it."""
    if not session.no_cache or key in session.built_keys:
        record = session.store.get_record("build", key)
        if record and all(session.store.has_blob(b) for b in record.get("blobs", [])):
            data = record["layer"]
            return True, BaseLayer(data["digest"], data["diff_id"], int(data["size"]),
                                   int(data["uncompressed_size"]), data["media_type"])
    info = make()
    session.store.put_record("build", key, {
        "layer": {"digest": info.digest, "diff_id": info.diff_id, "size": info.size,
                  "uncompressed_size": info.uncompressed_size, "media_type": info.media_type},
        "created_by": created_by,
        "blobs": [info.digest],
    })
    session.built_keys.add(key)
    return False, BaseLayer(info.digest, info.diff_id, info.size, info.uncompressed_size,
                            info.media_type)


def _dir_entry(dest: str, src: Source | None = None) -> Planned:
    mode = stat.S_IMODE(src.st.st_mode) if src is not None else 0o755
    return Planned("dir", dest, mode=mode)


def _top_entries(planner: CopyPlanner, app_dir: str) -> list[tuple[str, bool, bool]]:
    """(name, is a directory, holds Chart.yaml) of what lands directly in ``app_dir``."""
    prefix = app_dir + "/"
    dests = {e.dest for e in planner.entries}
    top: dict[str, tuple[str, bool, bool]] = {}
    for e in planner.entries:
        rest = e.dest[len(prefix):] if e.dest.startswith(prefix) else ""
        if not rest or "/" in rest:
            continue
        is_dir = e.kind == "dir" or (e.item is not None and e.item.kind == "dir")
        top.pop(rest, None)
        top[rest] = (rest, is_dir, is_dir and f"{e.dest}/Chart.yaml" in dests)
    return list(top.values())


def _drop_downloads(planner: CopyPlanner) -> None:
    """Remove files downloaded while planning (their bytes are in the layer or not needed)."""
    for e in planner.entries:
        if e.download is not None:
            e.download.unlink(missing_ok=True)
