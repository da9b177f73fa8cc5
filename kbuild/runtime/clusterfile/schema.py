"""Reading one YAML document strictly: typed fields, unknown keys refused with
a "did you mean", every error naming the document, the field and the value
(never a secret)."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import yaml

from kbuild.errors import ClusterfileError
from kbuild.runtime.values import BadValue

T = TypeVar("T")

SECRET_KEYS = frozenset({"passwd", "pkPasswd", "password"})


class Loader(yaml.SafeLoader):
    """SafeLoader keeping secrets as the text written (``0123`` stays ``"0123"``)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        mapping: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, str | int | float | bool) and key is not None:
                raise yaml.constructor.ConstructorError(
                    None, None, "a mapping key must be a plain value", key_node.start_mark
                )
            if key in SECRET_KEYS and isinstance(value_node, yaml.ScalarNode):
                resolved = self.resolve(yaml.ScalarNode, value_node.value, (True, False))
                is_null = value_node.style is None and resolved == "tag:yaml.org,2002:null"
                mapping[key] = None if is_null else value_node.value
            else:
                mapping[key] = self.construct_object(value_node, deep=deep)
        return mapping


Loader.add_constructor(
    "tag:yaml.org,2002:map",
    lambda loader, node: loader.construct_mapping(node, deep=True),  # type: ignore[arg-type]
)


class Doc:
    """One document being read: its position and kind, for error messages."""

    def __init__(self, source: str, index: int, kind: str) -> None:
        self.source = source
        self.index = index
        self.kind = kind

    def error(
        self, path: str, message: str, value: object = None, *, show: bool = True
    ) -> ClusterfileError:
        """The error for ``path`` (a value is shown unless ``show`` is false)."""
        where = f"{self.source}: document {self.index + 1} (kind {self.kind})"
        text = f"{where}: {path}: {message}"
        if show and value is not None:
            text += f": {value!r}"
        return ClusterfileError(text)

    def fields(self, path: str, raw: dict[str, Any], known: Iterable[str]) -> None:
        """Refuse keys of ``raw`` that are not ``known`` (with the closest known one)."""
        names = sorted(known)
        for key in raw:
            if key not in names:
                close = difflib.get_close_matches(str(key), names, n=1, cutoff=0.6)
                hint = f" (did you mean {close[0]}?)" if close else ""
                where = f"{path}.{key}" if path else str(key)
                raise self.error(where, f"unknown field{hint}", key)

    def string(self, path: str, value: object, *, secret: bool = False) -> str:
        """A scalar as text (numbers too: sealer writes ports and passwords unquoted)."""
        if isinstance(value, bool) or value is None or isinstance(value, dict | list):
            raise self.error(path, "expected a string", None if secret else value, show=not secret)
        return str(value)

    def items(self, path: str, value: object) -> list[Any]:
        """A list (absent = empty)."""
        if value is None:
            return []
        if not isinstance(value, list):
            raise self.error(path, "expected a list", value)
        return value

    def mapping(self, path: str, value: object) -> dict[str, Any]:
        """A mapping (absent = empty)."""
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.error(path, "expected a mapping", value)
        return value

    def check(self, path: str, fn: Callable[[str], T], text: str) -> T:
        """``fn(text)`` from :mod:`kbuild.runtime.values`, its refusal as this document's error."""
        try:
            return fn(text)
        except BadValue as exc:
            raise self.error(path, str(exc), text) from None
