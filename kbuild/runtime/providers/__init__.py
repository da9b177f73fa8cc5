"""The host providers kbuild has, by name (the CLI hands them to the life cycle)."""

from kbuild.runtime.provider import Provider
from kbuild.runtime.providers.podman import PodmanProvider

PROVIDERS: dict[str, Provider] = {"podman": PodmanProvider()}

__all__ = ["PROVIDERS"]
