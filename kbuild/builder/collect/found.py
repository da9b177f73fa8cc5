"""What a scanner finds: an image reference and where it was asked for."""

from __future__ import annotations

import re
from dataclasses import dataclass

from kbuild.errors import ImageCollectError, KbuildError
from kbuild.layerstore import ImageSource, Reference

UNSET = "__KBUILD_UNSET_{}__"
"""What a template variable without a value becomes at build (so an image naming it fails)."""
_UNSET_RE = re.compile(r"__KBUILD_UNSET_([A-Za-z_][A-Za-z0-9_]*)__")
_TEMPLATED_RE = re.compile(r"\{\{|\$\{|\$\(|\$[A-Za-z_]|<no value>")


@dataclass(frozen=True)
class Found:
    """One image reference found in the image's files.

    ``candidate`` marks a guess (a custom resource's ``*Image`` field, an
    ``*IMAGE`` env value): it is carried only when it resolves; any other
    reference that cannot be resolved fails the build.
    """

    ref: str
    source: ImageSource
    candidate: bool = False

    def to_dict(self) -> dict[str, object]:
        """JSON form (for the scan cache)."""
        return {"ref": self.ref, "source": self.source.to_dict(), "candidate": self.candidate}

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> Found:
        """Read the JSON form."""
        source = data["source"]
        assert isinstance(source, dict)
        return cls(str(data["ref"]), ImageSource.from_dict(source), bool(data.get("candidate")))


def parse_reference(text: str) -> Reference | None:
    """The normalized reference, or None when ``text`` is not one."""
    try:
        return Reference.parse(text)
    except KbuildError:
        return None


def check_reference(text: str, source: ImageSource) -> str:
    """``text`` when it is an image reference; else an error naming ``source``.

    A reference still holding template syntax (``{{ }}``, ``${VAR}``, a
    variable without a value) is reported as not renderable.
    """
    unset = _UNSET_RE.search(text)
    if unset:
        shown = _UNSET_RE.sub(lambda m: "${" + m.group(1) + "}", text)
        raise ImageCollectError(
            f"{source}: image {shown!r} uses the variable "
            f"{unset.group(1)}, which has no value at build time",
            hint="give it a default (ENV, APPENV or a template default), or list the image "
                 "with IMAGE / imageList and exclude this one with --ignored-image-list")
    if _TEMPLATED_RE.search(text):
        raise ImageCollectError(
            f"{source}: image {text!r} is a template that kbuild cannot render",
            hint="write the reference out, render it from a .tmpl file with {{ .Var }}, "
                 "or list the image with IMAGE and exclude this one with --ignored-image-list")
    if parse_reference(text) is None:
        raise ImageCollectError(f"{source}: {text!r} is not a valid image reference",
                                hint="use NAME[:TAG] or NAME@sha256:DIGEST")
    return text
