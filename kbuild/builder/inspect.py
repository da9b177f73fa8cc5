"""What ``kbuild inspect`` and ``kbuild history`` show about an image of the store."""

from __future__ import annotations

from typing import Any

from kbuild.errors import StoreError
from kbuild.layerstore import (
    META_KEY,
    Descriptor,
    ImageMeta,
    MediaType,
    Platform,
    Store,
    index_platforms,
    open_layer_stream,
    pick_manifest,
    platform_text,
)


def _uncompressed_size(store: Store, layer: dict[str, Any], known: dict[str, int]) -> int:
    digest = str(layer["digest"])
    if digest in known:
        return known[digest]
    media = layer.get("mediaType") or None
    total = 0
    with store.open_blob(digest) as raw, open_layer_stream(raw, media) as stream:
        while chunk := stream.read(1 << 20):
            total += len(chunk)
    return total


def _known_sizes(store: Store) -> dict[str, int]:
    out: dict[str, int] = {}
    for _kind, _key, data in store.records("build"):
        layer = data.get("layer")
        if isinstance(layer, dict) and "digest" in layer:
            out[str(layer["digest"])] = int(layer.get("uncompressed_size", 0))
    return out


def _manifest_of(store: Store, name: str, platform: str | None = None,
                 ) -> tuple[Descriptor, dict[str, Any], list[dict[str, Any]]]:
    """The manifest shown (an index's entry for ``platform``, default this
    machine's, else its first) and, for an index, its entries."""
    desc = store.resolve(name)
    if desc.media_type not in MediaType.INDEXES:
        if platform:
            raise StoreError(f"image {name} has one platform; --platform is for an index")
        return desc, store.read_manifest(desc), []
    index = store.read_manifest(desc)
    entries = index.get("manifests") or []
    wanted = Platform.parse(platform) if platform else Platform.host()
    chosen = pick_manifest(index, wanted) or (None if platform or not entries else entries[0])
    if chosen is None:
        raise StoreError(f"image {name} has no image for {wanted}",
                         hint=f"it has: {', '.join(index_platforms(index)) or 'nothing'}")
    platforms = [{"digest": e["digest"], "platform": platform_text(e.get("platform") or {})}
                 for e in entries]
    desc = Descriptor.from_dict(chosen)
    return desc, store.read_manifest(desc), platforms


def inspect_image(store: Store, name: str, platform: str | None = None) -> dict[str, Any]:
    """Everything about an image: config, labels, apps, and each layer with its
    instruction; of an index, the platform's (``platform``, default this
    machine's) and the list of its platforms."""
    top = store.resolve(name)
    desc, manifest, platforms = _manifest_of(store, name, platform)
    config = store.read_config(manifest)
    cfg = config.get("config") or {}
    labels = cfg.get("Labels") or {}
    meta = ImageMeta.from_labels(labels)
    history = config.get("history") or []
    makers = [h.get("created_by", "") for h in history if not h.get("empty_layer")]
    diff_ids = (config.get("rootfs") or {}).get("diff_ids") or []
    known = _known_sizes(store)
    layers = []
    for n, layer in enumerate(manifest.get("layers") or []):
        layers.append({
            "digest": layer["digest"],
            "diffID": diff_ids[n] if n < len(diff_ids) else None,
            "size": int(layer.get("size", 0)),
            "uncompressedSize": _uncompressed_size(store, layer, known),
            "mediaType": layer.get("mediaType"),
            "createdBy": makers[n] if n < len(makers) else None,
        })
    return {
        "name": name,
        "digest": desc.digest,
        "index": top.digest if platforms else None,
        "platforms": platforms,
        "configDigest": manifest["config"]["digest"],
        "mediaType": manifest.get("mediaType", desc.media_type),
        "os": config.get("os"),
        "architecture": config.get("architecture"),
        "created": config.get("created"),
        "size": sum(int(x.get("size", 0)) for x in manifest.get("layers") or []),
        "config": cfg,
        "labels": {k: v for k, v in labels.items() if k != META_KEY},
        "annotations": manifest.get("annotations") or {},
        "cluster": None if meta.empty else meta.to_dict(),
        "layers": layers,
        "history": history,
    }


def image_history(store: Store, name: str) -> list[dict[str, Any]]:
    """History entries, newest first, each with its layer digest and size (or none)."""
    _desc, manifest, _ = _manifest_of(store, name)
    config = store.read_config(manifest)
    layers = list(manifest.get("layers") or [])
    out: list[dict[str, Any]] = []
    it = iter(layers)
    for h in config.get("history") or []:
        layer = None if h.get("empty_layer") else next(it, None)
        out.append({
            "created": h.get("created"),
            "createdBy": h.get("created_by", ""),
            "layer": layer["digest"] if layer else None,
            "size": int(layer.get("size", 0)) if layer else 0,
        })
    out.reverse()
    return out
