"""kbuild.runtime."""
