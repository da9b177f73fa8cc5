"""Collect the container images a cluster image needs into its ``registry/`` at build time.

``step.collect_images`` is the build step (see its module docstring); the
scanners are ``yamlscan`` (Kubernetes YAML), ``helm`` (charts),
``lists`` (imageList files, exclusions) and ``commands`` (what launch
commands apply); ``resolve`` finds an image in the store or its registry.
"""

from .found import Found
from .resolve import FetchFunc, Resolved, resolve

__all__ = ["FetchFunc", "Found", "Resolved", "resolve"]
