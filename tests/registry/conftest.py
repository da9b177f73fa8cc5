"""Fixtures for the registry tests: the real registries of tests/fixtures/registry.py."""

from tests.fixtures.registry import (  # noqa: F401
    cut_proxy_factory,
    open_registry,
    tls_registry,
    token_registry,
    token_server,
)
