"""kbuild.registry."""
