"""kbuild.kubefile."""
