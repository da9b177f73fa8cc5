"""Images named by Kubernetes YAML: every document parsed, pod specs read field by field.

Workload kinds (Pod, PodTemplate, Deployment, DaemonSet, StatefulSet,
ReplicaSet, ReplicationController, Job, CronJob): the ``image`` of every
container, init container and ephemeral container, and image volumes, are
references that must resolve; env values whose name holds ``IMAGE`` and
``--*image=REF`` arguments (how operators are told which images to run)
are candidates. Any other kind (custom resources): every ``image`` or
``*Image`` field holding a reference (or a ``{registry, repository, tag}``
mapping) is a candidate, carried when it resolves. ``kind: List`` is read
item by item; documents without a ``kind`` are not Kubernetes objects.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from kbuild.errors import ImageCollectError
from kbuild.layerstore import ImageSource

from .found import Found, check_reference, parse_reference

Where = Callable[[int, str], ImageSource]
"""Maps (1-based line in the scanned text, what holds the image) to its source."""

POD_SPEC_PATHS: dict[str, tuple[str, ...]] = {
    "Pod": ("spec",),
    "PodTemplate": ("template", "spec"),
    "Deployment": ("spec", "template", "spec"),
    "DaemonSet": ("spec", "template", "spec"),
    "StatefulSet": ("spec", "template", "spec"),
    "ReplicaSet": ("spec", "template", "spec"),
    "ReplicationController": ("spec", "template", "spec"),
    "Job": ("spec", "template", "spec"),
    "CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
}
_CONTAINER_LISTS = (("containers", "container"), ("initContainers", "init container"),
                    ("ephemeralContainers", "ephemeral container"))
_IMAGE_ARG_RE = re.compile(r"^--?[A-Za-z0-9-]*image[A-Za-z0-9-]*=(.+)$", re.IGNORECASE)


def _get(node: Node | None, key: str) -> Node | None:
    if not isinstance(node, MappingNode):
        return None
    for k, v in node.value:
        if isinstance(k, ScalarNode) and k.value == key:
            return v
    return None


def _path(node: Node | None, keys: tuple[str, ...]) -> Node | None:
    for key in keys:
        node = _get(node, key)
    return node


def _text(node: Node | None) -> str | None:
    if isinstance(node, ScalarNode) and node.tag.endswith((":str", ":int", ":float")):
        return str(node.value)
    return None


def _items(node: Node | None) -> list[Node]:
    return list(node.value) if isinstance(node, SequenceNode) else []


def _line(node: Node) -> int:
    return int(node.start_mark.line) + 1


def scan_yaml(text: str, where: Where, *, name: str,
              skip_doc: Callable[[Node], bool] | None = None) -> list[Found]:
    """Every image the Kubernetes objects in ``text`` name.

    ``name`` is the file for parse errors; ``skip_doc`` drops documents
    (helm test hooks). Raises ``ImageCollectError`` for YAML that does not
    parse or a pod's image that is not a reference.
    """
    found: list[Found] = []
    try:
        docs = list(yaml.compose_all(text, Loader=yaml.SafeLoader))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ImageCollectError(f"{name}{line}: not valid YAML: {problem}",
                                hint="kbuild reads every manifest to find its images") from None
    for doc in docs:
        for obj in _objects(doc):
            if skip_doc is not None and skip_doc(obj):
                continue
            found.extend(_scan_object(obj, where))
    return found


def _objects(doc: Node | None) -> Iterator[Node]:
    kind = _text(_get(doc, "kind"))
    if kind is None:
        return
    if kind == "List" or (kind.endswith("List") and isinstance(_get(doc, "items"), SequenceNode)):
        for item in _items(_get(doc, "items")):
            yield from _objects(item)
        return
    assert doc is not None
    yield doc


def _scan_object(obj: Node, where: Where) -> list[Found]:
    kind = _text(_get(obj, "kind")) or ""
    name = _text(_path(obj, ("metadata", "name"))) or "?"
    path = POD_SPEC_PATHS.get(kind)
    if path is None:
        return list(_candidates(obj, where, f"{kind}/{name}"))
    spec = _path(obj, path)
    if spec is None:
        return []
    return sorted(_pod_spec(spec, where, f"{kind}/{name}"), key=lambda f: f.source.line)


def _pod_spec(spec: Node, where: Where, owner: str) -> list[Found]:
    out: list[Found] = []
    for key, what in _CONTAINER_LISTS:
        for container in _items(_get(spec, key)):
            cname = _text(_get(container, "name")) or "?"
            image_node = _get(container, "image")
            image = _text(image_node)
            if image_node is not None and image is not None:
                source = where(_line(image_node), f"{owner} {what} {cname}")
                out.append(Found(check_reference(image.strip(), source), source))
            out.extend(_operator_hints(container, where, f"{owner} {what} {cname}"))
    for volume in _items(_get(spec, "volumes")):
        ref_node = _path(volume, ("image", "reference"))
        ref = _text(ref_node)
        if ref_node is not None and ref is not None:
            vname = _text(_get(volume, "name")) or "?"
            source = where(_line(ref_node), f"{owner} image volume {vname}")
            out.append(Found(check_reference(ref.strip(), source), source))
    return out


def _operator_hints(container: Node, where: Where, what: str) -> Iterator[Found]:
    """``*IMAGE*`` env values and ``--*image=REF`` args: candidates."""
    for env in _items(_get(container, "env")):
        var = _text(_get(env, "name")) or ""
        value_node = _get(env, "value")
        value = _text(value_node)
        if ("IMAGE" in var.upper() and value and value_node is not None
                and parse_reference(value.strip()) is not None):
            yield Found(value.strip(), where(_line(value_node), f"{what} env {var}"), True)
    for key in ("args", "command"):
        for arg in _items(_get(container, key)):
            m = _IMAGE_ARG_RE.match(_text(arg) or "")
            if m and parse_reference(m.group(1)) is not None:
                yield Found(m.group(1), where(_line(arg), f"{what} {key}"), True)


def _candidates(node: Node, where: Where, owner: str, key: str = "") -> Iterator[Found]:
    if isinstance(node, MappingNode):
        if key == "image" or key.endswith("Image"):
            split = _split_image(node)
            if split is not None:
                yield Found(split, where(_line(node), f"{owner} field {key}"), True)
                return
        for k, v in node.value:
            yield from _candidates(v, where, owner, _text(k) or "")
    elif isinstance(node, SequenceNode):
        for item in node.value:
            yield from _candidates(item, where, owner, key)
    elif key == "image" or key.endswith("Image"):
        value = (_text(node) or "").strip()
        if value and parse_reference(value) is not None:
            yield Found(value, where(_line(node), f"{owner} field {key}"), True)


def _split_image(node: MappingNode) -> str | None:
    """``{registry, repository, tag|digest}`` (charts' values style) as one reference."""
    repo = _text(_get(node, "repository"))
    if not repo:
        return None
    registry = _text(_get(node, "registry"))
    name = f"{registry.rstrip('/')}/{repo}" if registry else repo
    digest = _text(_get(node, "digest"))
    tag = _text(_get(node, "tag"))
    text = f"{name}@{digest}" if digest else f"{name}:{tag}" if tag else name
    return text if parse_reference(text) is not None else None


