"""Paths inside a layer's root: resolved through its symlinks, never above the root.

Used by unpacking (``_unpack``): where an entry lands, where a hard link
points, and whether a symlink's target (followed through the other symlinks
the root holds, chains included) stays inside.
"""

from __future__ import annotations

from collections.abc import Callable

from kbuild.errors import UnsafeLayerError

MAX_LINKS = 40
"""Symlinks followed while resolving one path (the kernel's limit too)."""


def components(name: str, what: str) -> list[str]:
    """The components of a member name; refuses absolute names and ``..``."""
    if name.startswith("/"):
        raise UnsafeLayerError(f"layer entry {what!r} has an absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeLayerError(f"layer entry {what!r} contains '..'")
    return parts


LinkLookup = Callable[[str], "str | None"]


class _Stop(Exception):
    """Why a path walk inside the root stopped: ``outside``, ``loop`` or ``absolute``."""

    def __init__(self, reason: str, link: str = "", target: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.link = link
        self.target = target


def _walk(parts: list[str], lookup: LinkLookup, *, absolute_ends: bool) -> list[str] | None:
    """Resolve ``parts`` from the root the way the kernel would from the target directory.

    Every symlink met is followed (at most ``MAX_LINKS``); ``..`` above the
    root raises ``_Stop("outside")``. An absolute symlink raises
    ``_Stop("absolute")``, or with ``absolute_ends`` returns None: from there
    on the path is one the image's user resolves against the image root.
    """
    out: list[str] = []
    todo = list(reversed(parts))
    hops = 0
    while todo:
        comp = todo.pop()
        if comp in ("", "."):
            continue
        if comp == "..":
            if not out:
                raise _Stop("outside")
            out.pop()
            continue
        rel = "/".join([*out, comp])
        target = lookup(rel)
        if target is None:
            out.append(comp)
            continue
        hops += 1
        if hops > MAX_LINKS:
            raise _Stop("loop")
        if target.startswith("/"):
            if absolute_ends:
                return None
            raise _Stop("absolute", rel, target)
        todo.extend(reversed(target.split("/")))
    return out


def resolve_in_root(parts: list[str], lookup: LinkLookup, what: str) -> list[str]:
    """Resolve directory components inside the root, following relative symlinks.

    Raises :class:`UnsafeLayerError` if a symlink on the way is absolute or
    climbs above the root.
    """
    try:
        out = _walk(parts, lookup, absolute_ends=False)
    except _Stop as stop:
        if stop.reason == "outside":
            raise UnsafeLayerError(f"layer entry {what!r} leads outside the target") from None
        if stop.reason == "loop":
            raise UnsafeLayerError(
                f"layer entry {what!r}: too many levels of symlinks") from None
        raise UnsafeLayerError(
            f"layer entry {what!r} is written through symlink {stop.link!r} -> "
            f"{stop.target!r}, which points outside the target") from None
    assert out is not None
    return out


def check_symlink(rel: str, linkname: str, lookup: LinkLookup) -> None:
    """Refuse a relative symlink at ``rel`` whose target, resolved through the
    symlinks ``lookup`` knows (chains included), climbs above the root.

    Absolute targets are allowed: whoever uses the image resolves them
    against its root.
    """
    if linkname.startswith("/"):
        return
    parent = rel.split("/")[:-1]
    try:
        _walk([*parent, *linkname.split("/")], lookup, absolute_ends=True)
    except _Stop as stop:
        why = (", which leads outside the target" if stop.reason == "outside"
               else ": too many levels of symlinks")
        raise UnsafeLayerError(
            f"layer entry {rel!r} is a symlink to {linkname!r}{why}") from None
