"""kbuild.builder."""
