#!/usr/bin/env bash
# The README's first command: install what kbuild needs, build the Kubernetes
# base cluster image and run it on local podman hosts (1 master, 1 node) with
# nothing downloaded at install time. Run as root on a Debian bookworm machine.
#
#   scripts/quickstart.sh                   Kubernetes (first run builds the
#                                           binaries from source: ~30 min on 2 cores)
#   scripts/quickstart.sh hello-service     the small example image instead (seconds)
#
# Remove the hosts afterwards with:  kbuild delete --all --cluster-name quickstart
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"
example=${1:-kubernetes}

bash scripts/setup.sh

case "$example" in
kubernetes)
  version=$(. images/kubernetes/versions.env && echo "$KUBERNETES_VERSION")
  echo "== building kubernetes:$version (binaries cached in /var/cache/kbuild/kubernetes)"
  bash images/kubernetes/build.sh "$version"
  echo "== running it on local podman hosts"
  kbuild run "kubernetes:$version" --provider podman --masters 1 --nodes 1 \
    --cluster-name quickstart
  echo "== the cluster"
  kbuild exec --cluster-name quickstart --roles master -- kubectl get nodes -o wide
  kbuild exec --cluster-name quickstart --roles master -- kubectl get pods -A
  echo
  echo "kubeconfig: ~/.kbuild/quickstart/kubeconfig"
  ;;
hello-service)
  echo "== building the example cluster image (examples/hello-service)"
  bash examples/hello-service/build.sh hello-service:latest
  echo "== running it on local podman hosts"
  kbuild run hello-service:latest --provider podman --masters 1 --nodes 2 \
    --cluster-name quickstart
  echo "== the service on every host"
  kbuild exec --cluster-name quickstart -- \
    'bash -c "exec 3<>/dev/tcp/127.0.0.1/8080; printf \"GET / HTTP/1.0\r\n\r\n\" >&3; tail -n 1 <&3"'
  ;;
*)
  echo "usage: $0 [kubernetes|hello-service]" >&2
  exit 2
  ;;
esac
echo "Remove the hosts: kbuild delete --all --cluster-name quickstart"
