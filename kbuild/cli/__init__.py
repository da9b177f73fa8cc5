"""kbuild.cli."""
