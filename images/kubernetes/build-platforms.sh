#!/usr/bin/env bash
# Build kubernetes:<VERSION> as an OCI image index of several platforms.
#
#   PLATFORMS=linux/amd64,linux/arm64 images/kubernetes/build.sh [VERSION]
#
# (build.sh hands over to this script when PLATFORMS is set.) Per platform,
# build.sh stages that architecture's binaries, helm and netfilter userland
# (KBUILD_K8S_STAGE_ONLY=1; amd64 from <cache>/<VERSION>, another arch from
# <cache>/<arch>/<VERSION>). The stagings are hard-linked side by side into
# <cache>/multi/<VERSION>/{images,cluster}/<arch>/, and every Kubefile (the
# component images' and the cluster image's) is built with --platform
# PLATFORMS from a copy whose COPY sources start with ${TARGETARCH}/
# (arch-kubefile.sh): each platform's image gets its own binaries, the
# component images and the cluster image are indexes, and the cluster image
# of each platform carries the component images of its platform.
#
# Environment: as build.sh (KBUILD_ROOT, KBUILD_K8S_CACHE, KBUILD_K8S_TAG, KBUILD).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=versions.env
. "${HERE}/versions.env"
K8S=${1:-${KUBERNETES_VERSION}}
BASE=${KBUILD_K8S_CACHE:-/var/cache/kbuild/kubernetes}
TAG=${KBUILD_K8S_TAG:-kubernetes:${K8S}}
read -r -a KB <<<"${KBUILD:-kbuild}"
if [[ -n ${KBUILD_ROOT:-} ]]; then KB+=(--root "${KBUILD_ROOT}"); fi
log() { printf '[build-platforms.sh %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

arches=()
for p in ${PLATFORMS//,/ }; do
	[[ ${p} == linux/* ]] || { log "PLATFORMS: ${p} is not linux/ARCH"; exit 2; }
	arches+=("${p#linux/}")
done
cache_of() { if [[ $1 == amd64 ]]; then echo "${BASE}/${K8S}"; else echo "${BASE}/$1/${K8S}"; fi; }

link() { cp -al "$1" "$2" 2>/dev/null || { rm -rf "$2"; cp -a "$1" "$2"; }; } # SRC DEST: a copy, hard links when possible

MULTI=${BASE}/multi/${K8S}
mkdir -p "${MULTI}"
exec 8>"${MULTI}/.lock"
flock -w 3600 8 || { log "could not lock ${MULTI}/.lock within 1h"; exit 1; }
rm -rf "${MULTI}/images" "${MULTI}/cluster" "${MULTI}/kubefiles"
mkdir -p "${MULTI}/images" "${MULTI}/cluster" "${MULTI}/kubefiles"
for a in "${arches[@]}"; do
	log "staging linux/${a}"
	PLATFORMS='' KBUILD_K8S_ARCH=${a} KBUILD_K8S_STAGE_ONLY=1 "${HERE}/build.sh" "${K8S}"
	stage=$(cache_of "${a}")/stage
	mkdir -p "${MULTI}/images/${a}"
	link "${stage}/bin" "${MULTI}/images/${a}/bin"
	link "${stage}/nf" "${MULTI}/images/${a}/nf"
	link "${stage}/cluster" "${MULTI}/cluster/${a}"
done
# every platform's kubeadm names the same images
first=$(cache_of "${arches[0]}")/stage/imageList
for a in "${arches[@]}"; do
	cmp -s "${first}" "$(cache_of "${a}")/stage/imageList" ||
		{ log "kubeadm of linux/${a} lists other images than linux/${arches[0]}'s"; exit 1; }
done

# shellcheck disable=SC1091 # written by the binary build (PAUSE_VERSION kubeadm asks for)
. "$(cache_of "${arches[0]}")/versions"
refs=()
while read -r ref; do refs+=("${ref}"); done <"${first}"
refs+=("docker.io/flannel/flannel:${FLANNEL_VERSION}")
for ref in "${refs[@]}"; do
	c=${ref%:*}
	c=${c##*/}
	[[ -f ${HERE}/images/${c}/Kubefile ]] || { log "no images/${c}/Kubefile for ${ref}"; exit 1; }
	"${HERE}/arch-kubefile.sh" "${HERE}/images/${c}/Kubefile" "${MULTI}/kubefiles/${c}"
	log "image ${ref} (${PLATFORMS})"
	"${KB[@]}" build --progress plain --platform "${PLATFORMS}" -f "${MULTI}/kubefiles/${c}" \
		-t "${ref}" "${MULTI}/images" >"${MULTI}/build-${c}.log" 2>&1 ||
		{ cat "${MULTI}/build-${c}.log" >&2; exit 1; }
done

"${HERE}/arch-kubefile.sh" "${HERE}/Kubefile" "${MULTI}/kubefiles/cluster"
log "cluster image ${TAG} (${PLATFORMS})"
"${KB[@]}" build --progress plain --platform "${PLATFORMS}" --helm "$("${HERE}/build-helm.sh")" \
	-f "${MULTI}/kubefiles/cluster" --build-arg "KUBERNETES_VERSION=${K8S}" \
	--build-arg "PAUSE_VERSION=${PAUSE_VERSION}" --build-arg "FLANNEL_VERSION=${FLANNEL_VERSION}" \
	-t "${TAG}" "${MULTI}/cluster"
log "done: ${TAG}"
