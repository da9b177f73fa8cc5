#!/usr/bin/env bash
# Build the Kubernetes base cluster image kubernetes:<VERSION> with kbuild.
#
#   images/kubernetes/build.sh [VERSION]        (default: versions.env's KUBERNETES_VERSION)
#
# 1. binaries: ${KBUILD_K8S_CACHE:-/var/cache/kbuild/kubernetes}/<VERSION>/bin,
#    built by build-from-source.sh when its `done` marker is missing
#    (KBUILD_K8S_BINARIES=release uses download-release.sh instead);
#    SHA256SUMS is checked before anything is used;
#    helm: build-helm.sh (its own cache, by helm version), for the hosts' bin/;
# 2. every container image the cluster needs, built by `kbuild build` from
#    images/<component>/Kubefile (FROM scratch + binary + ENTRYPOINT) and
#    tagged exactly as the built kubeadm (`kubeadm config images list`) and
#    the flannel manifest ask for them;
# 3. `kbuild build -t kubernetes:<VERSION>` of this directory's Kubefile over
#    a staging context (bin/, etc/, scripts/, manifests/, opt/netfilter/):
#    kubeadm's list is the context's manifests/imageList, so kbuild's image
#    collection carries those images, and the flannel image that
#    manifests/kube-flannel.yaml.tmpl names, in the image's registry/.
#
# Environment: KBUILD_ROOT (kbuild store root, default kbuild's), KBUILD_K8S_CACHE,
# KBUILD_K8S_TAG (image name, default kubernetes:<VERSION>), KBUILD (the kbuild
# command, default `kbuild`; e.g. "python3 -m kbuild.cli.main"), KBUILD_HELM_CACHE.
# KBUILD_K8S_ARCH (default amd64): the image for another architecture (arm64:
# cross-compiled, cached under <cache>/arm64/<VERSION>; docs/platforms.md).
# PLATFORMS (e.g. linux/amd64,linux/arm64): the image as an index of them
# (build-platforms.sh). KBUILD_K8S_STAGE_ONLY=1: stop after the staging.
# Reruns are fast: kbuild's build cache skips unchanged layers and collections.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
if [[ -n ${PLATFORMS:-} ]]; then exec "${HERE}/build-platforms.sh" "$@"; fi
# shellcheck source=versions.env
. "${HERE}/versions.env"
K8S=${1:-${KUBERNETES_VERSION}}
ARCH=${KBUILD_K8S_ARCH:-amd64}
CACHE=${KBUILD_K8S_CACHE:-/var/cache/kbuild/kubernetes}/${K8S}
# amd64 keeps the cache paths it has always had; another arch has its own
[[ ${ARCH} == amd64 ]] || CACHE=${KBUILD_K8S_CACHE:-/var/cache/kbuild/kubernetes}/${ARCH}/${K8S}
BIN=${CACHE}/bin
TAG=${KBUILD_K8S_TAG:-kubernetes:${K8S}}
read -r -a KB <<<"${KBUILD:-kbuild}"
if [[ -n ${KBUILD_ROOT:-} ]]; then KB+=(--root "${KBUILD_ROOT}"); fi
PLATFORM=()
[[ ${ARCH} == "$(dpkg --print-architecture)" ]] || PLATFORM=(--platform "linux/${ARCH}")

log() { printf '[build.sh %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }


# ------------------------------------------------------------ 1. binaries
# From source, every run asks build-from-source.sh: components whose stamp
# matches are skipped in seconds, a component added or changed is built.
if [[ ${KBUILD_K8S_BINARIES:-source} == release ]]; then
	if [[ ! -f ${CACHE}/done ]]; then
		log "downloading release binaries of ${K8S}"
		"${HERE}/download-release.sh" "${K8S}" "${ARCH}" "${CACHE}"
	fi
else
	log "binaries of ${K8S} from source (cached in ${CACHE})"
	KBUILD_K8S_ARCH=${ARCH} "${HERE}/build-from-source.sh" "${K8S}"
fi
[[ -f ${CACHE}/done ]] || { log "${CACHE}/done missing after the binary build"; exit 1; }
# the cluster image's bin/: only what runs on the hosts (the control plane,
# etcd, coredns, kube-proxy and flanneld travel as container images;
# etcdctl and etcdutl serve kbuild backup and restore)
HOST_BINARIES=(kubeadm kubelet kubectl containerd containerd-shim-runc-v2 ctr runc crictl registry kbuild-vip
	etcdctl etcdutl)
for b in "${HOST_BINARIES[@]}"; do
	[[ -x ${BIN}/${b} ]] || { log "${BIN}/${b} missing after the binary build"; exit 1; }
done
(cd "${BIN}" && sha256sum --quiet -c ../SHA256SUMS) || { log "${CACHE}/SHA256SUMS does not match"; exit 1; }
# shellcheck disable=SC1091 # written by the binary build
. "${CACHE}/versions"
# helm renders charts here (this machine's) and goes into the hosts' bin/ (ARCH's)
HELM_HERE=$("${HERE}/build-helm.sh" "${HELM_VERSION}")
HELM=$(KBUILD_HELM_ARCH=${ARCH} "${HERE}/build-helm.sh" "${HELM_VERSION}")

# ------------------------------------------------------------ staging context
# Hard links (same filesystem) keep the staging cheap; kbuild reads files, so
# links and copies hash the same. One build of a version stages at a time.
STAGE=${CACHE}/stage
mkdir -p "${STAGE}"
exec 8>"${CACHE}/.stage.lock"
flock -w 3600 8 || { log "could not lock ${CACHE}/.stage.lock within 1h"; exit 1; }
sync_tree() { # SRC DEST: DEST becomes a copy of SRC (hard links when possible)
	local src=$1 dest=$2 tmp
	tmp="${dest}.tmp.$$"
	rm -rf "${tmp}"
	cp -al "${src}" "${tmp}" 2>/dev/null || cp -a "${src}" "${tmp}"
	rm -rf "${dest}"
	mv "${tmp}" "${dest}"
}
sync_tree "${BIN}" "${STAGE}/bin"
rm -rf "${STAGE}/hostbin.tmp"
mkdir -p "${STAGE}/hostbin.tmp/bin/cni"
for b in "${HOST_BINARIES[@]}"; do ln "${STAGE}/bin/${b}" "${STAGE}/hostbin.tmp/bin/${b}"; done
ln "${HELM}" "${STAGE}/hostbin.tmp/bin/helm" 2>/dev/null || cp "${HELM}" "${STAGE}/hostbin.tmp/bin/helm"
for b in "${STAGE}"/bin/cni/*; do ln "${b}" "${STAGE}/hostbin.tmp/bin/cni/"; done
if [[ ! -x ${STAGE}/nf/usr/sbin/xtables-nft-multi ]]; then
	log "netfilter userland for kube-proxy and flannel"
	rm -rf "${STAGE}/nf.tmp"
	"${HERE}/netfilter-userland.sh" "${STAGE}/nf.tmp" "${ARCH}" >/dev/null
	rm -rf "${STAGE}/nf"
	mv "${STAGE}/nf.tmp" "${STAGE}/nf"
fi

# The references come from the built kubeadm (what it will pull; another
# arch's kubeadm runs under qemu-user-static) and from the flannel version.
"${BIN}/kubeadm" config images list --kubernetes-version "${K8S}" >"${STAGE}/imageList.tmp"
mv "${STAGE}/imageList.tmp" "${STAGE}/imageList"

# the cluster image's context
CTX=${STAGE}/cluster
rm -rf "${CTX}"
mkdir -p "${CTX}/opt"
for d in etc scripts manifests; do cp -a "${HERE}/${d}" "${CTX}/${d}"; done
cp "${STAGE}/imageList" "${CTX}/manifests/imageList"
mv "${STAGE}/hostbin.tmp/bin" "${CTX}/bin"
rm -rf "${STAGE}/hostbin.tmp" "${STAGE}/registry"
cp -al "${STAGE}/nf" "${CTX}/opt/netfilter"
if [[ -n ${KBUILD_K8S_STAGE_ONLY:-} ]]; then
	log "staged ${STAGE} (bin/, nf/, imageList, cluster/)"
	exit 0
fi

# ------------------------------------------------------------ 2. container images
# Each is built from images/<component>/Kubefile.
component() { # REFERENCE -> the images/ directory that builds it
	local repo=${1%:*}
	printf '%s\n' "${repo##*/}"
}
refs=()
while read -r ref; do refs+=("${ref}"); done <"${STAGE}/imageList"
refs+=("docker.io/flannel/flannel:${FLANNEL_VERSION}")
for ref in "${refs[@]}"; do
	c=$(component "${ref}")
	[[ -f ${HERE}/images/${c}/Kubefile ]] || { log "no images/${c}/Kubefile for ${ref}"; exit 1; }
	log "image ${ref}"
	"${KB[@]}" build --progress plain "${PLATFORM[@]}" -f "${HERE}/images/${c}/Kubefile" -t "${ref}" "${STAGE}" >"${STAGE}/build-${c}.log" 2>&1 ||
		{ cat "${STAGE}/build-${c}.log" >&2; exit 1; }
done

# ------------------------------------------------------------ 3. the cluster image
log "cluster image ${TAG}"
"${KB[@]}" build --progress plain "${PLATFORM[@]}" --helm "${HELM_HERE}" -f "${HERE}/Kubefile" \
	--build-arg "KUBERNETES_VERSION=${K8S}" --build-arg "PAUSE_VERSION=${PAUSE_VERSION}" \
	--build-arg "FLANNEL_VERSION=${FLANNEL_VERSION}" -t "${TAG}" "${CTX}"
log "done: ${TAG}"
