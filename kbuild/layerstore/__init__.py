"""kbuild.layerstore: content-addressed blobs, deterministic layers, the local OCI store.

See docs/internals.md for the contract other packages code against.
"""

from ._archive import LoadResult, load_archive, save_archive
from ._blobs import BlobWriter, canonical_json
from ._gc import GcReport
from ._pack import TarEntry, pack_layer, pack_tree, tree_entries
from ._paths import default_root
from ._reference import Reference
from ._statcache import StatCache
from ._store import Store
from ._types import REF_NAME_ANNOTATION, Descriptor, LayerInfo, MediaType
from ._unpack import check_layer, unpack_layer
from .events import BytesDone
from .registry_layout import LayoutReport, write_registry_storage

__all__ = [
    "REF_NAME_ANNOTATION",
    "BlobWriter",
    "BytesDone",
    "Descriptor",
    "GcReport",
    "LayerInfo",
    "LayoutReport",
    "LoadResult",
    "MediaType",
    "Reference",
    "StatCache",
    "Store",
    "TarEntry",
    "canonical_json",
    "check_layer",
    "default_root",
    "load_archive",
    "pack_layer",
    "pack_tree",
    "save_archive",
    "tree_entries",
    "unpack_layer",
    "write_registry_storage",
]
