"""kbuild: package a Kubernetes cluster into one OCI image and run it on hosts over SSH."""

__version__ = "0.1.0"
