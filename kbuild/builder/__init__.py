"""kbuild.builder: Kubefile → step graph → cached layers → an OCI image in the local store.

The public API::

    from kbuild.builder import build, BuildOptions, BuildResult
    result = build(store, BuildOptions(context=Path("."), tags=["app:1"]),
                   progress=callback, pull=kbuild.registry.pull_image)

Progress events are in ``kbuild.builder.events``; the cluster-image metadata
(apps, launch …) and its JSON schema in ``kbuild.builder.meta``.
"""

from .events import BuildFinished, BytesDone, Event, Progress, StepDone, StepLog, StepStarted
from .meta import META_KEY, AppInfo, ImageMeta
from .solver import BuildOptions, BuildResult, build

__all__ = [
    "META_KEY",
    "AppInfo",
    "BuildFinished",
    "BuildOptions",
    "BuildResult",
    "BytesDone",
    "Event",
    "ImageMeta",
    "Progress",
    "StepDone",
    "StepLog",
    "StepStarted",
    "build",
]
