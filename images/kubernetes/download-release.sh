#!/usr/bin/env bash
# Download the official release binaries of everything the kubernetes base
# image carries, verifying each against the sha256 its project publishes.
# For users with Internet access; on the build machine (no network) use
# build-from-source.sh instead. The output layout is the same as
# build-from-source.sh's bin/ directory, plus SHA256SUMS and versions.
#
# Usage: download-release.sh VERSION ARCH DEST
#   VERSION  Kubernetes version, e.g. v1.37.2
#   ARCH     amd64 | arm64
#   DEST     output directory (bin/ is created inside; files are replaced
#            atomically, `done` is written last)
#
# Other component versions come from versions.env (override any of them in
# the environment, e.g. CONTAINERD_VERSION=v2.4.1). ETCD/COREDNS/PAUSE in
# versions.env match kubeadm v1.37.2; for another Kubernetes version set them
# to what `kubeadm config images list --kubernetes-version VERSION` prints.
#
# Nothing is trusted without a checksum: a file whose published sha256 cannot
# be fetched, or does not match, stops the run (exit 1) and is not kept.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

usage() {
	echo "usage: $0 VERSION ARCH DEST   (e.g. $0 v1.37.2 amd64 /var/cache/kbuild/kubernetes/v1.37.2)" >&2
	exit 2
}
[[ $# -eq 3 ]] || usage
K8S=$1
ARCH=$2
DEST=$3
[[ ${K8S} =~ ^v1\.[0-9]+\.[0-9]+$ ]] || { echo "download-release: bad Kubernetes version '${K8S}'" >&2; exit 2; }
case ${ARCH} in amd64 | arm64) ;; *) echo "download-release: unsupported ARCH '${ARCH}' (amd64, arm64)" >&2; exit 2 ;; esac

# Environment overrides win over versions.env.
declare -A OVERRIDE=()
for v in ETCD_VERSION COREDNS_VERSION PAUSE_VERSION CONTAINERD_VERSION RUNC_VERSION CRICTL_VERSION \
	CNI_PLUGINS_VERSION FLANNEL_VERSION FLANNEL_CNI_PLUGIN_VERSION DISTRIBUTION_VERSION CNI_PLUGINS; do
	[[ -n ${!v:-} ]] && OVERRIDE[${v}]=${!v}
done
# shellcheck source=versions.env
. "${HERE}/versions.env"
for v in "${!OVERRIDE[@]}"; do printf -v "${v}" '%s' "${OVERRIDE[${v}]}"; done


command -v curl >/dev/null || { echo "download-release: curl is required" >&2; exit 1; }
command -v sha256sum >/dev/null || { echo "download-release: sha256sum is required" >&2; exit 1; }

BIN="${DEST}/bin"
mkdir -p "${BIN}/cni"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/kbuild-download.XXXXXX")
trap 'rm -rf "${WORK}"' EXIT

CURL=(curl --fail --silent --show-error --location --retry 3 --retry-delay 2 --connect-timeout 20 --max-time 1800 --proto "=https" --tlsv1.2)
log() { printf '[%s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

# expected_sum SUMFILE NAME -> the sha256 for NAME in a published checksum
# file: either a single bare hash, or "HASH  NAME" / "HASH *NAME" lines.
expected_sum() {
	local sumfile=$1 name=$2 sum
	sum=$(awk -v n="${name}" '{f=$2; sub(/^\*/, "", f); sub(/^.*\//, "", f)} NF>=2 && f==n {print $1; exit}' "${sumfile}")
	if [[ -z ${sum} ]] && [[ $(wc -w <"${sumfile}") -eq 1 ]]; then
		sum=$(tr -d '[:space:]' <"${sumfile}")
	fi
	[[ ${sum} =~ ^[0-9a-f]{64}$ ]] || return 1
	printf '%s\n' "${sum}"
}

# fetch URL SUMURL -> downloads URL into ${WORK}, verifies it, prints its path.
# Always call it as an assignment (f=$(fetch ...)) so that set -e sees a failure.
fetch() {
	local url=$1 sumurl=$2 name file want got
	name=${url##*/}
	file="${WORK}/${name}"
	log "downloading ${url}"
	"${CURL[@]}" -o "${file}" "${url}"
	"${CURL[@]}" -o "${file}.sum" "${sumurl}" || { echo "download-release: cannot fetch checksum ${sumurl}" >&2; exit 1; }
	want=$(expected_sum "${file}.sum" "${name}") || { echo "download-release: no sha256 for ${name} in ${sumurl}" >&2; exit 1; }
	got=$(sha256sum "${file}" | cut -d' ' -f1)
	if [[ ${got} != "${want}" ]]; then
		echo "download-release: sha256 mismatch for ${url}: got ${got}, published ${want}" >&2
		rm -f "${file}"
		exit 1
	fi
	printf '%s\n' "${file}"
}

# install_file SRC NAME -> atomically place SRC as ${BIN}/NAME, mode 0755
install_file() {
	install -m 0755 "$1" "${BIN}/.$(basename "$2").tmp"
	mv -f "${BIN}/.$(basename "$2").tmp" "${BIN}/$2"
}

# from_tar TARBALL MEMBER NAME -> extract one member of a tarball as ${BIN}/NAME
# (MEMBER may be stored with or without a leading "./").
from_tar() {
	local dir="${WORK}/x.$$.${RANDOM}" want=${2#./} member
	mkdir -p "${dir}"
	member=$(tar -tzf "$1" | awk -v w="${want}" '{m=$0; sub(/^\.\//, "", m)} m == w {print; exit}')
	[[ -n ${member} ]] || { echo "download-release: ${want} not found in $(basename "$1")" >&2; exit 1; }
	tar -xzf "$1" -C "${dir}" "${member}"
	install_file "${dir}/${member}" "$3"
}

# --- Kubernetes ---------------------------------------------------------------
for b in kubeadm kubelet kubectl kube-apiserver kube-controller-manager kube-scheduler kube-proxy; do
	u="https://dl.k8s.io/release/${K8S}/bin/linux/${ARCH}/${b}"
	f=$(fetch "${u}" "${u}.sha256")
	install_file "${f}" "${b}"
done

# --- etcd (+ etcdctl) -----------------------------------------------------------
t="etcd-${ETCD_VERSION}-linux-${ARCH}"
base="https://github.com/etcd-io/etcd/releases/download/${ETCD_VERSION}"
tgz=$(fetch "${base}/${t}.tar.gz" "${base}/SHA256SUMS")
from_tar "${tgz}" "${t}/etcd" etcd
from_tar "${tgz}" "${t}/etcdctl" etcdctl

# --- CoreDNS --------------------------------------------------------------------
base="https://github.com/coredns/coredns/releases/download/${COREDNS_VERSION}"
t="coredns_${COREDNS_VERSION#v}_linux_${ARCH}.tgz"
f=$(fetch "${base}/${t}" "${base}/${t}.sha256")
from_tar "${f}" coredns coredns

# --- crictl ---------------------------------------------------------------------
base="https://github.com/kubernetes-sigs/cri-tools/releases/download/${CRICTL_VERSION}"
t="crictl-${CRICTL_VERSION}-linux-${ARCH}.tar.gz"
f=$(fetch "${base}/${t}" "${base}/${t}.sha256")
from_tar "${f}" crictl crictl

# --- containerd -------------------------------------------------------------------
base="https://github.com/containerd/containerd/releases/download/${CONTAINERD_VERSION}"
t="containerd-${CONTAINERD_VERSION#v}-linux-${ARCH}.tar.gz"
tgz=$(fetch "${base}/${t}" "${base}/${t}.sha256sum")
for b in containerd containerd-shim-runc-v2 ctr; do from_tar "${tgz}" "bin/${b}" "${b}"; done

# --- runc -------------------------------------------------------------------------
base="https://github.com/opencontainers/runc/releases/download/${RUNC_VERSION}"
f=$(fetch "${base}/runc.${ARCH}" "${base}/runc.sha256sum")
install_file "${f}" runc

# --- CNI plugins ------------------------------------------------------------------
base="https://github.com/containernetworking/plugins/releases/download/${CNI_PLUGINS_VERSION}"
t="cni-plugins-linux-${ARCH}-${CNI_PLUGINS_VERSION}.tgz"
tgz=$(fetch "${base}/${t}" "${base}/${t}.sha256")
for p in ${CNI_PLUGINS}; do from_tar "${tgz}" "./${p}" "cni/${p}"; done

# --- flannel (daemon + its CNI plugin) ------------------------------------------
base="https://github.com/flannel-io/flannel/releases/download/${FLANNEL_VERSION}"
t="flannel-${FLANNEL_VERSION}-linux-${ARCH}.tar.gz"
f=$(fetch "${base}/${t}" "${base}/${t}.sha256sum")
from_tar "${f}" flanneld flanneld
base="https://github.com/flannel-io/cni-plugin/releases/download/${FLANNEL_CNI_PLUGIN_VERSION}"
t="cni-plugin-flannel-linux-${ARCH}-${FLANNEL_CNI_PLUGIN_VERSION}.tgz"
f=$(fetch "${base}/${t}" "${base}/${t}.sha256")
from_tar "${f}" "flannel-${ARCH}" cni/flannel

# --- registry (distribution) ----------------------------------------------------
base="https://github.com/distribution/distribution/releases/download/${DISTRIBUTION_VERSION}"
t="registry_${DISTRIBUTION_VERSION#v}_linux_${ARCH}.tar.gz"
f=$(fetch "${base}/${t}" "${base}/registry_${DISTRIBUTION_VERSION#v}_checksums.txt")
from_tar "${f}" registry registry

# --- pause: not published as a binary, only inside an image. Build ours. -------
if command -v gcc >/dev/null; then
	gcc -static -Os -DPAUSE_VERSION="\"${PAUSE_VERSION}\"" -o "${WORK}/pause" "${HERE}/pause/pause.c"
	install_file "${WORK}/pause" pause
else
	echo "download-release: gcc not found; build pause with build-from-source.sh ${K8S} pause" >&2
	exit 1
fi

cat >"${DEST}/versions.tmp" <<EOF

ETCD_VERSION=${ETCD_VERSION}
COREDNS_VERSION=${COREDNS_VERSION}
PAUSE_VERSION=${PAUSE_VERSION}
CONTAINERD_VERSION=${CONTAINERD_VERSION}
RUNC_VERSION=${RUNC_VERSION}
CRICTL_VERSION=${CRICTL_VERSION}
CNI_PLUGINS_VERSION=${CNI_PLUGINS_VERSION}
FLANNEL_VERSION=${FLANNEL_VERSION}
FLANNEL_CNI_PLUGIN_VERSION=${FLANNEL_CNI_PLUGIN_VERSION}
DISTRIBUTION_VERSION=${DISTRIBUTION_VERSION}
SOURCE=release-${ARCH}
EOF
mv -f "${DEST}/versions.tmp" "${DEST}/versions"
(cd "${BIN}" && find . -type f ! -name '.*' -printf '%P\n' | LC_ALL=C sort | xargs sha256sum) >"${DEST}/SHA256SUMS.tmp"
mv -f "${DEST}/SHA256SUMS.tmp" "${DEST}/SHA256SUMS"
date -u +%Y-%m-%dT%H:%M:%SZ >"${DEST}/done.tmp" && mv -f "${DEST}/done.tmp" "${DEST}/done"
log "done: ${DEST}"
