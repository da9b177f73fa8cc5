"""The OCI documents kbuild reads, checked once at the boundary.

Manifests, indexes and image configs come from registries, archives and
store blobs: untrusted input. Every reader goes through
:func:`parse_document` (bytes) or :func:`check_document` (parsed JSON) before
it touches a field, so no caller meets a wrong type, a missing key or a
nesting deep enough to exhaust the stack. A failure raises the caller's
error class (``StoreError`` for the store and archives, ``RegistryError`` for
registries) naming the document and the field::

    registry.example.com/app:1: field 'layers[0].size' must be an integer >= 0, not 'abc'

Only the fields kbuild reads are checked; unknown fields pass through.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any, NoReturn

from kbuild.errors import KbuildError, StoreError

from ._types import MediaType

ErrorClass = type[KbuildError]
MAX_DEPTH = 64
"""Deepest nesting of arrays and objects accepted in a document."""
DIGEST_RE = re.compile(r"^sha256:[a-f0-9]{64}$")
KINDS = ("manifest", "index", "image", "config", "layout")


_MISSING: Any = object()


def _show(value: Any) -> str:
    """A JSON value for an error message: its type for containers, short text otherwise."""
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    shown = json.dumps(value) if isinstance(value, str | bool | int | float) else repr(value)
    return shown if len(shown) <= 60 else shown[:57] + "..."


class _Checker:
    """Type checks of one document, raising ``error`` with the document and field named."""

    def __init__(self, what: str, error: ErrorClass) -> None:
        self.what = what
        self.error = error

    def fail(self, field: str, problem: str, value: Any = _MISSING) -> NoReturn:
        where = f"field {field!r}" if field else "the document"
        text = f"{self.what}: {where} {problem}"
        if value is not _MISSING:
            text += f", not {_show(value)}"
        raise self.error(text)

    def obj(self, value: Any, field: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            self.fail(field, "must be a JSON object", value)
        return value

    def required(self, doc: dict[str, Any], key: str, field: str) -> Any:
        if key not in doc:
            self.fail(field, "is missing")
        return doc[key]

    def opt_obj(self, doc: dict[str, Any], key: str, field: str) -> dict[str, Any] | None:
        value = doc.get(key)
        return None if value is None else self.obj(value, field)

    def string(self, doc: dict[str, Any], key: str, field: str, *,
               required: bool = False) -> None:
        value = self.required(doc, key, field) if required else doc.get(key)
        if value is None and not required:
            return
        if not isinstance(value, str):
            self.fail(field, "must be a string", value)

    def strings(self, doc: dict[str, Any], key: str, field: str) -> None:
        value = doc.get(key)
        if value is None:
            return
        if not isinstance(value, list):
            self.fail(field, "must be a list of strings", value)
        for n, item in enumerate(value):
            if not isinstance(item, str):
                self.fail(f"{field}[{n}]", "must be a string", item)

    def string_map(self, doc: dict[str, Any], key: str, field: str) -> None:
        value = doc.get(key)
        if value is None:
            return
        for k, v in self.obj(value, field).items():
            if not isinstance(v, str):
                self.fail(f"{field}.{k}", "must be a string", v)

    def digest(self, doc: dict[str, Any], key: str, field: str) -> None:
        value = self.required(doc, key, field)
        if not isinstance(value, str) or not DIGEST_RE.match(value):
            self.fail(field, "must be a sha256 digest", value)

    def size(self, doc: dict[str, Any], key: str, field: str) -> None:
        value = self.required(doc, key, field)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            self.fail(field, "must be an integer >= 0", value)

    def descriptor(self, value: Any, field: str) -> dict[str, Any]:
        desc = self.obj(value, field)
        self.string(desc, "mediaType", f"{field}.mediaType")
        self.digest(desc, "digest", f"{field}.digest")
        self.size(desc, "size", f"{field}.size")
        self.string_map(desc, "annotations", f"{field}.annotations")
        self.strings(desc, "urls", f"{field}.urls")
        platform = self.opt_obj(desc, "platform", f"{field}.platform")
        if platform is not None:
            for key in ("os", "architecture"):
                self.string(platform, key, f"{field}.platform.{key}", required=True)
            self.string(platform, "variant", f"{field}.platform.variant")
        return desc

    def descriptors(self, doc: dict[str, Any], key: str) -> None:
        value = self.required(doc, key, key)
        if not isinstance(value, list):
            self.fail(key, "must be a list of descriptors", value)
        for n, item in enumerate(value):
            self.descriptor(item, f"{key}[{n}]")

    def schema_version(self, doc: dict[str, Any]) -> None:
        value = doc.get("schemaVersion")
        if value is not None and (isinstance(value, bool) or value != 2):
            self.fail("schemaVersion", "must be 2", value)


def _manifest(c: _Checker, doc: dict[str, Any]) -> None:
    c.schema_version(doc)
    c.string(doc, "mediaType", "mediaType")
    c.descriptor(c.required(doc, "config", "config"), "config")
    c.descriptors(doc, "layers")
    c.string_map(doc, "annotations", "annotations")
    if doc.get("subject") is not None:
        c.descriptor(doc["subject"], "subject")


def _index(c: _Checker, doc: dict[str, Any]) -> None:
    c.schema_version(doc)
    c.string(doc, "mediaType", "mediaType")
    c.descriptors(doc, "manifests")
    c.string_map(doc, "annotations", "annotations")


def _image(c: _Checker, doc: dict[str, Any]) -> None:
    if is_index(doc):
        _index(c, doc)
    else:
        _manifest(c, doc)


def _config(c: _Checker, doc: dict[str, Any]) -> None:
    for key in ("os", "architecture", "variant", "created", "author"):
        c.string(doc, key, key)
    rootfs = c.opt_obj(doc, "rootfs", "rootfs")
    if rootfs is not None:
        c.string(rootfs, "type", "rootfs.type")
        ids = rootfs.get("diff_ids")
        if ids is not None:
            if not isinstance(ids, list):
                c.fail("rootfs.diff_ids", "must be a list of digests", ids)
            for n, d in enumerate(ids):
                if not isinstance(d, str) or not DIGEST_RE.match(d):
                    c.fail(f"rootfs.diff_ids[{n}]", "must be a sha256 digest", d)
    inner = c.opt_obj(doc, "config", "config")
    if inner is not None:
        for key in ("Env", "Cmd", "Entrypoint"):
            c.strings(inner, key, f"config.{key}")
        for key in ("WorkingDir", "User", "StopSignal"):
            c.string(inner, key, f"config.{key}")
        c.string_map(inner, "Labels", "config.Labels")
        for key in ("ExposedPorts", "Volumes"):
            c.opt_obj(inner, key, f"config.{key}")
    history = doc.get("history")
    if history is not None:
        if not isinstance(history, list):
            c.fail("history", "must be a list", history)
        for n, h in enumerate(history):
            entry = c.obj(h, f"history[{n}]")
            for key in ("created", "created_by", "author", "comment"):
                c.string(entry, key, f"history[{n}].{key}")
            if not isinstance(entry.get("empty_layer", False), bool | None):
                c.fail(f"history[{n}].empty_layer", "must be true or false",
                       entry["empty_layer"])


def _layout(c: _Checker, doc: dict[str, Any]) -> None:
    c.string(doc, "imageLayoutVersion", "imageLayoutVersion", required=True)


_CHECKS: dict[str, Callable[[_Checker, dict[str, Any]], None]] = {
    "manifest": _manifest,
    "index": _index,
    "image": _image,
    "config": _config,
    "layout": _layout,
}


def is_index(doc: dict[str, Any]) -> bool:
    """Whether a manifest-or-index document is an index (by media type, else by fields)."""
    media = doc.get("mediaType")
    if isinstance(media, str) and media in MediaType.INDEXES:
        return True
    if isinstance(media, str) and media in MediaType.MANIFESTS:
        return False
    return "manifests" in doc and "layers" not in doc and "config" not in doc


def _too_deep(value: Any) -> bool:
    todo = [(value, 1)]
    while todo:
        item, depth = todo.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > MAX_DEPTH:
            return True
        todo.extend((child, depth + 1) for child in children)
    return False


def load_json(data: bytes | str, *, what: str, error: ErrorClass = StoreError) -> Any:
    """Parse JSON text; ``error`` naming ``what`` when it is not JSON or nests too deeply."""
    try:
        value = json.loads(data)
    except RecursionError:
        raise error(f"{what}: JSON nested too deeply") from None
    except ValueError as exc:
        raise error(f"{what}: not JSON ({exc})") from None
    if _too_deep(value):
        raise error(f"{what}: JSON nested more than {MAX_DEPTH} levels deep")
    return value


def check_document(doc: Any, kind: str, *, what: str,
                   error: ErrorClass = StoreError) -> dict[str, Any]:
    """Check a parsed document of ``kind`` (see :data:`KINDS`); returns it unchanged.

    ``image`` is a manifest or an index, told apart by :func:`is_index`.
    """
    if kind not in _CHECKS:
        raise ValueError(f"unknown document kind {kind!r}")
    checker = _Checker(what, error)
    obj = checker.obj(doc, "")
    _CHECKS[kind](checker, obj)
    return obj


def parse_document(data: bytes | str, kind: str, *, what: str,
                   error: ErrorClass = StoreError) -> dict[str, Any]:
    """:func:`load_json` then :func:`check_document`."""
    return check_document(load_json(data, what=what, error=error), kind, what=what, error=error)


def child_digests(doc: Any) -> list[str]:
    """The sha256 digests a manifest or index points at; lenient (garbage gives none)."""
    if not isinstance(doc, dict):
        return []
    out: list[str] = []
    entries: list[Any] = []
    if isinstance(doc.get("manifests"), list):
        entries += doc["manifests"]
    if isinstance(doc.get("layers"), list) or "config" in doc:
        entries.append(doc.get("config"))
        entries += doc["layers"] if isinstance(doc.get("layers"), list) else []
    for entry in entries:
        digest = entry.get("digest") if isinstance(entry, dict) else None
        if isinstance(digest, str) and DIGEST_RE.match(digest):
            out.append(digest)
    return out
