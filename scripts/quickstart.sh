#!/usr/bin/env bash
# The README's first command: install what kbuild needs, build the example
# cluster image and run it on three local podman hosts (1 master, 2 nodes).
# Run as root on a Debian bookworm machine. Remove the hosts afterwards with
#   kbuild delete --all --cluster-name quickstart
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"

bash scripts/setup.sh

echo "== building the example cluster image (examples/hello-service)"
bash examples/hello-service/build.sh hello-service:latest

echo "== running it on local podman hosts"
kbuild run hello-service:latest --provider podman --masters 1 --nodes 2 \
  --cluster-name quickstart

echo "== the service on every host"
kbuild exec --cluster-name quickstart -- \
  'bash -c "exec 3<>/dev/tcp/127.0.0.1/8080; printf \"GET / HTTP/1.0\r\n\r\n\" >&3; tail -n 1 <&3"'
echo
echo "Done. Try: kbuild exec --cluster-name quickstart -- hostname"
echo "Remove the hosts: kbuild delete --all --cluster-name quickstart"
