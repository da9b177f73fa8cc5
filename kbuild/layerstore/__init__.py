"""kbuild.layerstore: content-addressed blobs, deterministic layers, the local OCI store.

Also the image formats every other package shares: OCI platforms
(``Platform``, ``oci_arch``, ``pick_manifest``) and the cluster-image
metadata the builder writes and the runtime reads (``ImageMeta``,
``AppInfo``, label ``io.kbuild.image.v1``).

See docs/internals.md for the contract other packages code against.
"""

from ._archive import LoadResult, load_archive, save_archive
from ._blobs import BlobWriter, canonical_json
from ._carried import CarriedImage, ImageSource, find_carried
from ._gc import GcReport
from ._imagemeta import (
    APPS_DIR,
    LABEL_APPS,
    LABEL_CNI,
    LABEL_CSI,
    LABEL_KUBEVERSION,
    LABEL_LAUNCH,
    META_KEY,
    AppInfo,
    ImageMeta,
    app_relpath,
    carried_images,
    default_cmds,
)
from ._pack import TarEntry, pack_layer
from ._paths import default_root
from ._platform import Platform, index_platforms, oci_arch, pick_manifest, platform_text
from ._reference import Reference
from ._schema import check_document, is_index, load_json, parse_document
from ._statcache import StatCache
from ._store import Store
from ._streams import open_layer_stream
from ._template import render_template, unrendered
from ._tree import pack_tree, tree_entries
from ._types import (
    REF_NAME_ANNOTATION,
    WHITEOUT_OPAQUE,
    WHITEOUT_PREFIX,
    Descriptor,
    LayerInfo,
    MediaType,
)
from ._unpack import check_layer, unpack_layer
from .events import BytesDone
from .registry_layout import LayoutReport, write_registry_storage

__all__ = [
    "APPS_DIR",
    "LABEL_APPS",
    "LABEL_CNI",
    "LABEL_CSI",
    "LABEL_KUBEVERSION",
    "LABEL_LAUNCH",
    "META_KEY",
    "REF_NAME_ANNOTATION",
    "WHITEOUT_OPAQUE",
    "WHITEOUT_PREFIX",
    "AppInfo",
    "BlobWriter",
    "BytesDone",
    "CarriedImage",
    "Descriptor",
    "GcReport",
    "ImageMeta",
    "ImageSource",
    "LayerInfo",
    "LayoutReport",
    "LoadResult",
    "MediaType",
    "Platform",
    "Reference",
    "StatCache",
    "Store",
    "TarEntry",
    "app_relpath",
    "canonical_json",
    "carried_images",
    "check_document",
    "check_layer",
    "default_cmds",
    "default_root",
    "find_carried",
    "index_platforms",
    "is_index",
    "load_archive",
    "load_json",
    "oci_arch",
    "open_layer_stream",
    "pack_layer",
    "pack_tree",
    "parse_document",
    "pick_manifest",
    "platform_text",
    "render_template",
    "save_archive",
    "tree_entries",
    "unpack_layer",
    "unrendered",
    "write_registry_storage",
]
