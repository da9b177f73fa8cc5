"""Host providers: where the hosts of a cluster come from when the user gives none.

A provider makes hosts for a new cluster, removes them with it and lists
what it made. The life cycle does not know where hosts come from: it asks
the provider the cluster was made by (recorded in the cluster's state) and
otherwise talks to hosts over SSH like to any other. Providers live in
``kbuild/runtime/providers/<name>/``; the generic runtime imports none of
them (:class:`~kbuild.runtime.phases.context.Options` carries them).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from kbuild.runtime.executor import Credentials

__all__ = ["ProvidedHost", "Provider", "ProviderEvent"]


@dataclass(frozen=True)
class ProviderEvent:
    """Progress of a provider (``what``: ``image-build``, ``network``,
    ``host-start``, ``host-ready``, ``delete``…)."""

    what: str
    name: str
    detail: str = ""


@dataclass(frozen=True)
class ProvidedHost:
    """A host a provider made: its address, role and login."""

    ip: str
    role: str
    credentials: Credentials = field(repr=False)


class Provider(Protocol):
    """What the life cycle asks of a host provider."""

    name: str
    data_roots: tuple[str, ...]
    """dataRoot candidates for its hosts, best first; the first one not on
    overlayfs (where an overlay upper dir cannot live) is used."""

    def create(
        self,
        cluster: str,
        *,
        masters: int,
        nodes: int,
        isolated: bool,
        progress: Callable[[ProviderEvent], None] | None = None,
    ) -> list[ProvidedHost]:
        """Start ``masters`` + ``nodes`` hosts for ``cluster`` (``isolated``: a
        network with no route out) and wait until they answer SSH."""
        ...

    def delete(
        self, cluster: str, *, progress: Callable[[ProviderEvent], None] | None = None
    ) -> list[str]:
        """Remove every host (and network, volume) of ``cluster``; returns what went."""
        ...

    def list(self) -> dict[str, list[str]]:
        """Cluster name → the hosts this provider holds for it."""
        ...
