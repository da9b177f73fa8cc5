"""kbuild.layerstore."""
