#!/usr/bin/env bash
# Build the Kubernetes base cluster image kubernetes:<VERSION> with kbuild.
#
#   images/kubernetes/build.sh [VERSION]        (default: versions.env's KUBERNETES_VERSION)
#
# 1. binaries: ${KBUILD_K8S_CACHE:-/var/cache/kbuild/kubernetes}/<VERSION>/bin,
#    built by build-from-source.sh when its `done` marker is missing
#    (KBUILD_K8S_BINARIES=release uses download-release.sh instead);
#    SHA256SUMS is checked before anything is used;
# 2. every container image the cluster needs, built by `kbuild build` from
#    images/<component>/Kubefile (FROM scratch + binary + ENTRYPOINT) and
#    tagged exactly as kubeadm and the flannel manifest ask for them;
# 3. those images written in distribution's storage layout (registry/) by
#    kbuild.layerstore.write_registry_storage;
# 4. `kbuild build -t kubernetes:<VERSION>` of this directory's Kubefile over
#    a staging context (bin/, etc/, scripts/, manifests/, opt/netfilter/, registry/).
#
# Environment: KBUILD_ROOT (kbuild store root, default kbuild's), KBUILD_K8S_CACHE,
# KBUILD_K8S_TAG (image name, default kubernetes:<VERSION>). Reruns are fast:
# kbuild's build cache skips unchanged layers, the registry writer unchanged blobs.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=versions.env
. "${HERE}/versions.env"
K8S=${1:-${KUBERNETES_VERSION}}
CACHE=${KBUILD_K8S_CACHE:-/var/cache/kbuild/kubernetes}/${K8S}
BIN=${CACHE}/bin
TAG=${KBUILD_K8S_TAG:-kubernetes:${K8S}}
KB=(kbuild)
if [[ -n ${KBUILD_ROOT:-} ]]; then KB+=(--root "${KBUILD_ROOT}"); fi
PY=${PYTHON:-python3}

log() { printf '[build.sh %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

# One build of a version at a time: the staging directories below are shared.
mkdir -p "${CACHE}"
exec 8>"${CACHE}/.image.lock"
flock -w 7200 8 || { log "could not lock ${CACHE}/.image.lock within 2h"; exit 1; }

# ------------------------------------------------------------ 1. binaries
if [[ ! -f ${CACHE}/done ]]; then
	if [[ ${KBUILD_K8S_BINARIES:-source} == release ]]; then
		log "downloading release binaries of ${K8S}"
		"${HERE}/download-release.sh" "${K8S}" amd64 "${CACHE}"
	else
		log "building ${K8S} from source (cached in ${CACHE})"
		"${HERE}/build-from-source.sh" "${K8S}"
	fi
fi
[[ -f ${CACHE}/done ]] || { log "${CACHE}/done missing after the binary build"; exit 1; }
(cd "${BIN}" && sha256sum --quiet -c ../SHA256SUMS) || { log "${CACHE}/SHA256SUMS does not match"; exit 1; }
# shellcheck disable=SC1091 # written by the binary build
. "${CACHE}/versions"

# ------------------------------------------------------------ staging context
# Hard links (same filesystem) keep the staging cheap; kbuild reads files, so
# links and copies hash the same.
STAGE=${CACHE}/stage
mkdir -p "${STAGE}"
sync_tree() { # SRC DEST: DEST becomes a copy of SRC (hard links when possible)
	local src=$1 dest=$2 tmp
	tmp="${dest}.tmp.$$"
	rm -rf "${tmp}"
	cp -al "${src}" "${tmp}" 2>/dev/null || cp -a "${src}" "${tmp}"
	rm -rf "${dest}"
	mv "${tmp}" "${dest}"
}
sync_tree "${BIN}" "${STAGE}/bin"
# the cluster image's bin/: only what runs on the hosts (the control plane,
# etcd, coredns, kube-proxy and flanneld travel as container images)
HOST_BINARIES=(kubeadm kubelet kubectl containerd containerd-shim-runc-v2 ctr runc crictl registry)
rm -rf "${STAGE}/hostbin.tmp"
mkdir -p "${STAGE}/hostbin.tmp/bin/cni"
for b in "${HOST_BINARIES[@]}"; do ln "${STAGE}/bin/${b}" "${STAGE}/hostbin.tmp/bin/${b}"; done
for b in "${STAGE}"/bin/cni/*; do ln "${b}" "${STAGE}/hostbin.tmp/bin/cni/"; done
if [[ ! -x ${STAGE}/nf/usr/sbin/xtables-nft-multi ]]; then
	log "netfilter userland for kube-proxy and flannel"
	rm -rf "${STAGE}/nf.tmp"
	"${HERE}/netfilter-userland.sh" "${STAGE}/nf.tmp" >/dev/null
	rm -rf "${STAGE}/nf"
	mv "${STAGE}/nf.tmp" "${STAGE}/nf"
fi

# ------------------------------------------------------------ 2. container images
# component directory -> reference (the names kubeadm v1.37 / the manifest ask for)
declare -A REFS=(
	[kube-apiserver]="registry.k8s.io/kube-apiserver:${K8S}"
	[kube-controller-manager]="registry.k8s.io/kube-controller-manager:${K8S}"
	[kube-scheduler]="registry.k8s.io/kube-scheduler:${K8S}"
	[kube-proxy]="registry.k8s.io/kube-proxy:${K8S}"
	[etcd]="registry.k8s.io/etcd:${ETCD_IMAGE_TAG}"
	[coredns]="registry.k8s.io/coredns/coredns:${COREDNS_VERSION}"
	[pause]="registry.k8s.io/pause:${PAUSE_VERSION}"
	[flannel]="docker.io/flannel/flannel:${FLANNEL_VERSION}"
)
refs=()
for c in kube-apiserver kube-controller-manager kube-scheduler kube-proxy etcd coredns pause flannel; do
	log "image ${REFS[${c}]}"
	"${KB[@]}" build --progress plain -f "${HERE}/images/${c}/Kubefile" -t "${REFS[${c}]}" "${STAGE}" >"${STAGE}/build-${c}.log" 2>&1 ||
		{ cat "${STAGE}/build-${c}.log" >&2; exit 1; }
	refs+=("${REFS[${c}]}")
done

# ------------------------------------------------------------ 3. registry/
log "registry storage"
rm -rf "${STAGE}/registry.tmp"
KBUILD_ROOT=${KBUILD_ROOT:-} "${PY}" - "${STAGE}/registry.tmp" "${refs[@]}" <<'EOF'
import os, sys
from pathlib import Path
from kbuild.layerstore import Store, write_registry_storage
store = Store(os.environ.get("KBUILD_ROOT") or None)
dest, refs = Path(sys.argv[1]), sys.argv[2:]
report = write_registry_storage(store, [(r, store.resolve(r)) for r in refs], dest)
for img in report.images:
    print(f"  {img.repository}:{img.tag} {img.digest}", file=sys.stderr)
EOF
rm -rf "${STAGE}/registry"
mv "${STAGE}/registry.tmp" "${STAGE}/registry"

# ------------------------------------------------------------ 4. the cluster image
CTX=${STAGE}/cluster
rm -rf "${CTX}"
mkdir -p "${CTX}/opt"
for d in etc scripts manifests; do cp -a "${HERE}/${d}" "${CTX}/${d}"; done
mv "${STAGE}/hostbin.tmp/bin" "${CTX}/bin"
rm -rf "${STAGE}/hostbin.tmp"
cp -al "${STAGE}/nf" "${CTX}/opt/netfilter"
cp -al "${STAGE}/registry" "${CTX}/registry"
log "cluster image ${TAG}"
"${KB[@]}" build --progress plain -f "${HERE}/Kubefile" \
	--build-arg "KUBERNETES_VERSION=${K8S}" --build-arg "PAUSE_VERSION=${PAUSE_VERSION}" \
	--build-arg "FLANNEL_VERSION=${FLANNEL_VERSION}" -t "${TAG}" "${CTX}"
log "done: ${TAG}"
