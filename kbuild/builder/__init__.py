"""kbuild.builder: Kubefile → step graph → cached layers → an OCI image in the local store.

The public API::

    from kbuild.builder import build, BuildOptions, BuildResult
    result = build(store, BuildOptions(context=Path("."), tags=["app:1"]),
                   progress=callback, pull=kbuild.registry.pull_image)

Progress events are in ``kbuild.builder.events``. The cluster-image metadata
the builder writes (apps, launch …; ``ImageMeta``, ``AppInfo``, ``META_KEY``)
and its JSON schema are in ``kbuild.layerstore``, where the runtime reads
them too; ``kbuild.builder.meta`` keeps only the build's app-type detection.
"""

from .events import BuildFinished, BytesDone, Event, Progress, StepDone, StepLog, StepStarted
from .session import BuildOptions
from .solver import BuildResult, build

__all__ = [
    "BuildFinished",
    "BuildOptions",
    "BuildResult",
    "BytesDone",
    "Event",
    "Progress",
    "StepDone",
    "StepLog",
    "StepStarted",
    "build",
]
