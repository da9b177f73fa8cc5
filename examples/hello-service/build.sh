#!/bin/sh
# Build the example image: the static service binary, then the cluster image.
# Usage: examples/hello-service/build.sh [TAG]   (default hello-service:latest)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
tag=${1:-hello-service:latest}
mkdir -p "$here/bin"
(cd "$here/src" && CGO_ENABLED=0 go build -trimpath -ldflags '-s -w' -o "$here/bin/hello-service" .)
exec kbuild build -t "$tag" "$here"
