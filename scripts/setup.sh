#!/usr/bin/env bash
# Install what kbuild and its tests need on a Debian bookworm machine (as root).
# Idempotent: packages already present are not installed again.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  podman buildah skopeo docker-registry debootstrap uidmap slirp4netns
  fuse-overlayfs openssh-client apache2-utils openssl iproute2 zstd tar time runc
  containerd curl libseccomp-dev gcc libc6-dev iptables nftables
  qemu-user-static binfmt-support
)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
fi

# arm64 test hosts run under qemu-user-static: its binfmt_misc entry must be
# registered (the package does it where binfmt_misc is mounted at install).
if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
  mountpoint -q /proc/sys/fs/binfmt_misc ||
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
  update-binfmts --enable qemu-aarch64
fi

python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore -e ".[test]"

# helm renders charts at build (kbuild build) and ships in the kubernetes image;
# built from source once, cached by version under /var/cache/kbuild/helm.
PATH="$PATH:/usr/local/go/bin" images/kubernetes/build-helm.sh >/dev/null
