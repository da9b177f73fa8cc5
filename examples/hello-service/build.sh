#!/bin/sh
# Build the example image: the static service binary of each platform, then
# the cluster image (an index when PLATFORMS names several).
# Usage: [PLATFORMS=linux/amd64,linux/arm64] examples/hello-service/build.sh [TAG]
#        (default tag hello-service:latest, default platform this machine's)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
tag=${1:-hello-service:latest}
platforms=${PLATFORMS:-linux/$(go env GOARCH)}
for platform in $(echo "$platforms" | tr ',' ' '); do
    arch=${platform#*/}
    mkdir -p "$here/bin/$arch"
    (cd "$here/src" && CGO_ENABLED=0 GOARCH=$arch go build -trimpath -ldflags '-s -w' \
        -o "$here/bin/$arch/hello-service" .)
done
if [ -n "${PLATFORMS:-}" ]; then
    exec kbuild build --platform "$platforms" -t "$tag" "$here"
fi
exec kbuild build -t "$tag" "$here"
