"""Fixtures shared across the test packages (real registries, real podman hosts)."""

pytest_plugins = ["tests.fixtures.hosts", "tests.fixtures.registry"]
