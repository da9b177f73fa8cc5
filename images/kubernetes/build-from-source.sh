#!/usr/bin/env bash
# Build every binary the kubernetes base image carries, from source, with
# `go build` against the Go module proxy. Results are cached outside the repo:
#
#   ${KBUILD_K8S_CACHE:-/var/cache/kbuild/kubernetes}/<k8s version>/     (amd64)
#   ${KBUILD_K8S_CACHE:-/var/cache/kbuild/kubernetes}/<arch>/<k8s version>/  (another arch)
#       bin/          the binaries
#       SHA256SUMS    sha256 of every file in bin/ (sha256sum format)
#       versions      KEY=VALUE of every component version that went in
#       build-times.tsv   name, version, seconds, for each binary built
#       stamps/       one file per component: the version it was built at
#       done          written last; its presence means the set is complete
#
# Usage: build-from-source.sh [K8S_VERSION] [COMPONENT...]
#   COMPONENT: kubernetes etcd etcdutl coredns pause crictl containerd runc cni flannel
#              vip registry (default: all). A component whose stamp matches is skipped.
#
# Environment: KBUILD_K8S_CACHE (cache root), KBUILD_K8S_ARCH (target
# architecture, default amd64; arm64 is cross-compiled, see go_target in
# go-build.sh), KBUILD_BUILD_JOBS (go build -p, default 2), GOMAXPROCS
# (default 2). Builds run under `nice -n 19`.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=versions.env
. "${HERE}/versions.env"

if [[ $# -gt 0 && $1 == v* ]]; then
	KUBERNETES_VERSION=$1
	shift
fi
COMPONENTS=("$@")
if [[ ${#COMPONENTS[@]} -eq 0 ]]; then
	COMPONENTS=(kubernetes etcd etcdutl coredns pause crictl containerd runc cni flannel registry vip)
fi

if [[ ! ${KUBERNETES_VERSION} =~ ^v1\.([0-9]+)\.([0-9]+)$ ]]; then
	echo "build-from-source: '${KUBERNETES_VERSION}' is not a Kubernetes release version (vMAJOR.MINOR.PATCH)" >&2
	exit 2
fi
K8S_MINOR=${BASH_REMATCH[1]}
K8S_PATCH=${BASH_REMATCH[2]}
STAGING_VERSION="v0.${K8S_MINOR}.${K8S_PATCH}"

# shellcheck source=go-build.sh
. "${HERE}/go-build.sh"

ARCH=${KBUILD_K8S_ARCH:-amd64}
go_target "${ARCH}"
CACHE_ROOT=${KBUILD_K8S_CACHE:-/var/cache/kbuild/kubernetes}
# amd64 keeps the cache paths it has always had; another arch has its own root
[[ ${ARCH} == amd64 ]] || CACHE_ROOT=${CACHE_ROOT}/${ARCH}
OUT="${CACHE_ROOT}/${KUBERNETES_VERSION}"
BIN="${OUT}/bin"
STAMPS="${OUT}/stamps"
mkdir -p "${BIN}" "${STAMPS}"

# One build per version at a time; a second run waits (up to 3 hours).
exec 9>"${OUT}/.lock"
if ! flock -w 10800 9; then
	echo "build-from-source: could not lock ${OUT}/.lock within 3h" >&2
	exit 1
fi

go_build_start kbuild-k8s-build "${OUT}"

stamp_ok() { [[ -f ${STAMPS}/$1 && $(cat "${STAMPS}/$1") == "$2" ]]; }
stamp_set() { printf '%s\n' "$2" >"${STAMPS}/$1.tmp" && mv -f "${STAMPS}/$1.tmp" "${STAMPS}/$1"; }

# The binaries of each component (besides kubernetes, which is per version).
declare -A FILES=(
	[etcd]="etcd etcdctl" [etcdutl]=etcdutl [coredns]=coredns [pause]=pause [crictl]=crictl
	[containerd]="containerd containerd-shim-runc-v2 ctr" [runc]=runc
	[cni]="$(for p in ${CNI_PLUGINS}; do printf 'cni/%s ' "${p}"; done)"
	[flannel]="flanneld cni/flannel" [registry]=registry [vip]=kbuild-vip
)

# reuse COMPONENT STAMP: link the component's binaries from the cache of
# another Kubernetes version built with the same stamp (two versions share
# containerd, runc, the CNI plugins…: each is built once).
reuse() {
	local c=$1 want=$2 other f ok
	for other in "${CACHE_ROOT}"/*/; do
		other=${other%/}
		[[ ${other} == "${OUT}" || ! -f ${other}/stamps/${c} ]] && continue
		[[ $(cat "${other}/stamps/${c}") == "${want}" ]] || continue
		ok=1
		for f in ${FILES[${c}]}; do [[ -f ${other}/bin/${f} ]] || ok=0; done
		[[ ${ok} == 1 ]] || continue
		for f in ${FILES[${c}]}; do
			mkdir -p "$(dirname "${BIN}/${f}")"
			ln -f "${other}/bin/${f}" "${BIN}/${f}" 2>/dev/null || cp -f "${other}/bin/${f}" "${BIN}/${f}"
		done
		stamp_set "${c}" "${want}"
		log "${c}: reused from ${other##*/}"
		return 0
	done
	return 1
}

# --- versions kubeadm expects, read from the chosen release's source ---------
K8S_SRC=$(module_dir k8s.io/kubernetes "${KUBERNETES_VERSION}")
kubeadm_const() {
	sed -n "s/^[[:space:]]*$1 = \"\\(.*\\)\"/\\1/p" "${K8S_SRC}/cmd/kubeadm/app/constants/constants.go" | head -n1
}
ETCD_IMAGE_TAG=$(kubeadm_const DefaultEtcdVersion) # e.g. 3.7.0-0
COREDNS_VERSION=$(kubeadm_const CoreDNSVersion)     # e.g. v1.14.6
PAUSE_VERSION=$(kubeadm_const PauseVersion)         # e.g. 3.10.2
ETCD_VERSION="v${ETCD_IMAGE_TAG%-*}"
for v in ETCD_IMAGE_TAG COREDNS_VERSION PAUSE_VERSION; do
	[[ -n ${!v} ]] || { echo "build-from-source: cannot read ${v} from kubeadm constants of ${KUBERNETES_VERSION}" >&2; exit 1; }
done

# The stamp each component must carry for the set to count as complete.
declare -A EXPECT=(
	[kubernetes]=${KUBERNETES_VERSION}
	[etcd]=${ETCD_VERSION}
	[etcdutl]=${ETCD_VERSION}
	[coredns]=${COREDNS_VERSION}
	[pause]="${PAUSE_VERSION}-$(sha256sum <"${HERE}/pause/pause.c" | cut -c1-16)"
	[crictl]=${CRICTL_VERSION}
	[containerd]=${CONTAINERD_VERSION}
	[runc]=${RUNC_VERSION}
	[cni]="${CNI_PLUGINS_VERSION} ${CNI_PLUGINS}"
	[flannel]="${FLANNEL_VERSION}-$(cat "${HERE}/flannel-cni/"{go.mod,go.sum,main.go} | sha256sum | cut -c1-16)"
	[registry]=${DISTRIBUTION_VERSION}
	[vip]="kbuild-$(cat "${HERE}/vip-agent/"{go.mod,main.go} | sha256sum | cut -c1-16)"
)

build_kubernetes() {
	local v=${KUBERNETES_VERSION} dir epoch commit state ld x
	stamp_ok kubernetes "${v}" && { log "kubernetes ${v}: cached"; return; }
	dir=$(prepare_module k8s.io/kubernetes "${v}" "${STAGING_VERSION}")
	epoch=$(module_time k8s.io/kubernetes "${v}")
	commit=$(module_commit k8s.io/kubernetes "${v}")
	state=clean
	[[ ${commit} == unknown ]] && state=archive
	ld="-s -w"
	for x in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
		ld+=" -X ${x}.gitVersion=${v} -X ${x}.gitMajor=1 -X ${x}.gitMinor=${K8S_MINOR}"
		ld+=" -X ${x}.gitCommit=${commit} -X ${x}.gitTreeState=${state}"
		ld+=" -X ${x}.buildDate=$(date -u -d "@${epoch}" +%Y-%m-%dT%H:%M:%SZ)"
	done
	# kubelet is built with cgo upstream only for optional features; all of
	# these build and run fully static with CGO_ENABLED=0.
	for x in kube-apiserver kube-controller-manager kube-scheduler kube-proxy kubelet kubeadm kubectl; do
		go_bin "${x}" "${dir}" "k8s.io/kubernetes/cmd/${x}" "${v}" 0 "selinux,notest,grpcnotrace" "${ld}"
	done
	stamp_set kubernetes "${v}"
}

build_etcd() {
	local v=${ETCD_VERSION} dir sha
	stamp_ok etcd "${v}" && { log "etcd ${v}: cached"; return; }
	reuse etcd "${v}" && return
	dir=$(prepare_module go.etcd.io/etcd/server/v3 "${v}" "${v}")
	sha=$(module_commit go.etcd.io/etcd/server/v3 "${v}")
	go_bin etcd "${dir}" go.etcd.io/etcd/server/v3 "${v}" 0 "" "-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=${sha:0:8}"
	# etcdctl and etcdutl travel in the hosts' bin/ (kbuild backup/restore).
	dir=$(prepare_module go.etcd.io/etcd/etcdctl/v3 "${v}" "${v}")
	go_bin etcdctl "${dir}" go.etcd.io/etcd/etcdctl/v3 "${v}" 0 "" "-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=${sha:0:8}"
	stamp_set etcd "${v}"
}

build_etcdutl() {
	local v=${ETCD_VERSION} dir sha
	stamp_ok etcdutl "${v}" && { log "etcdutl ${v}: cached"; return; }
	reuse etcdutl "${v}" && return
	dir=$(prepare_module go.etcd.io/etcd/etcdutl/v3 "${v}" "${v}")
	sha=$(module_commit go.etcd.io/etcd/etcdutl/v3 "${v}")
	go_bin etcdutl "${dir}" go.etcd.io/etcd/etcdutl/v3 "${v}" 0 "" "-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=${sha:0:8}"
	stamp_set etcdutl "${v}"
}

build_coredns() {
	local v=${COREDNS_VERSION} dir
	stamp_ok coredns "${v}" && { log "coredns ${v}: cached"; return; }
	reuse coredns "${v}" && return
	dir=$(prepare_module github.com/coredns/coredns "${v}" "${v}")
	go_bin coredns "${dir}" github.com/coredns/coredns "${v}" 0 "" \
		"-s -w -X github.com/coredns/coredns/coremain.GitCommit=$(module_commit github.com/coredns/coredns "${v}")"
	stamp_set coredns "${v}"
}

build_pause() {
	local v=${PAUSE_VERSION} start
	stamp_ok pause "${EXPECT[pause]}" && { log "pause ${v}: cached"; return; }
	reuse pause "${EXPECT[pause]}" && return
	start=$(date +%s)
	"${NICE[@]}" "${CC_TARGET}" -static -Os -Wall -Wextra -Werror -DPAUSE_VERSION="\"${v}\"" \
		-o "${BIN}/.pause.tmp" "${HERE}/pause/pause.c"
	"${STRIP_TARGET}" "${BIN}/.pause.tmp"
	mv -f "${BIN}/.pause.tmp" "${BIN}/pause"
	printf 'pause\t%s\t%s\n' "${v}" "$(($(date +%s) - start))" >>"${TIMES}"
	stamp_set pause "${EXPECT[pause]}"
}

build_crictl() {
	local v=${CRICTL_VERSION} dir
	stamp_ok crictl "${v}" && { log "crictl ${v}: cached"; return; }
	reuse crictl "${v}" && return
	dir=$(prepare_module sigs.k8s.io/cri-tools "${v}" "${v}")
	go_bin crictl "${dir}" sigs.k8s.io/cri-tools/cmd/crictl "${v}" 0 "" \
		"-s -w -X sigs.k8s.io/cri-tools/pkg/version.Version=${v}"
	stamp_set crictl "${v}"
}

build_containerd() {
	local v=${CONTAINERD_VERSION} dir ld p=github.com/containerd/containerd/v2
	stamp_ok containerd "${v}" && { log "containerd ${v}: cached"; return; }
	reuse containerd "${v}" && return
	dir=$(prepare_module "${p}" "${v}" "${v}")
	ld="-s -w -X ${p}/version.Version=${v} -X ${p}/version.Revision=$(module_commit "${p}" "${v}") -X ${p}/version.Package=${p}"
	# btrfs needs cgo + kernel headers; devmapper/zfs are not used by kbuild.
	go_bin containerd "${dir}" "${p}/cmd/containerd" "${v}" 0 "no_btrfs no_devmapper no_zfs" "${ld}"
	go_bin containerd-shim-runc-v2 "${dir}" "${p}/cmd/containerd-shim-runc-v2" "${v}" 0 "" "${ld}"
	go_bin ctr "${dir}" "${p}/cmd/ctr" "${v}" 0 "no_btrfs no_devmapper no_zfs" "${ld}"
	stamp_set containerd "${v}"
}

build_runc() {
	local v=${RUNC_VERSION} dir
	stamp_ok runc "${v}" && { log "runc ${v}: cached"; return; }
	reuse runc "${v}" && return
	# runc's nsenter is C (cgo is mandatory). seccomp links libseccomp
	# (libseccomp-dev, static); libpathrs (Rust) is left out -> Go fallback.
	# netgo/osusergo: no glibc NSS calls in the static binary.
	target_lib libseccomp.a libseccomp-dev
	dir=$(prepare_module github.com/opencontainers/runc "${v}" "${v}")
	go_bin runc "${dir}" github.com/opencontainers/runc "${v}" 1 "seccomp urfave_cli_no_docs netgo osusergo" \
		"-s -w -X main.gitCommit=$(module_commit github.com/opencontainers/runc "${v}") -X main.version=${v#v} -linkmode external -extldflags -static"
	stamp_set runc "${v}"
}

build_cni() {
	local v=${CNI_PLUGINS_VERSION} dir x path p=github.com/containernetworking/plugins
	stamp_ok cni "${v} ${CNI_PLUGINS}" && { log "cni plugins ${v}: cached"; return; }
	reuse cni "${v} ${CNI_PLUGINS}" && return
	dir=$(prepare_module "${p}" "${v}" "${v}")
	mkdir -p "${BIN}/cni"
	for x in ${CNI_PLUGINS}; do
		case ${x} in
			bridge | loopback | ptp | macvlan | ipvlan | vlan | host-device | tap | dummy) path=plugins/main/${x} ;;
			host-local | dhcp | static) path=plugins/ipam/${x} ;;
			*) path=plugins/meta/${x} ;;
		esac
		go_bin "cni/${x}" "${dir}" "${p}/${path}" "${v}" 0 "" \
			"-s -w -X ${p}/pkg/utils/buildversion.BuildVersion=${v}"
	done
	stamp_set cni "${v} ${CNI_PLUGINS}"
}

build_flannel() {
	local v=${FLANNEL_VERSION} dir src f
	stamp_ok flannel "${EXPECT[flannel]}" && { log "flannel ${v}: cached"; return; }
	reuse flannel "${EXPECT[flannel]}" && return
	dir=$(prepare_module github.com/flannel-io/flannel "${v}" "${v}")
	# flanneld's main package imports every backend; the tencentvpc backend's
	# SDK (github.com/tencentcloud/tencentcloud-sdk-go/tencentcloud/vpc) is not
	# on the module proxy (403). Build a copy of the main package without that
	# one import line (in the temp dir only); vxlan/host-gw are unaffected.
	src=$(module_dir github.com/flannel-io/flannel "${v}")
	mkdir -p "${dir}/flanneld"
	for f in "${src}"/*.go; do
		[[ ${f} == *_test.go ]] && continue
		sed '/flannel\/pkg\/backend\/tencentvpc"/d' "${f}" >"${dir}/flanneld/$(basename "${f}")"
	done
	# cgo as upstream (the udp backend's proxy is C), linked statically.
	go_bin flanneld "${dir}" ./flanneld "${v}" 1 "netgo osusergo" \
		"-s -w -X github.com/flannel-io/flannel/pkg/version.Version=${v} -linkmode external -extldflags -static"
	# flannel's own CNI plugin (flannel-io/cni-plugin) is not on the module
	# proxy; kbuild ships its own (flannel-cni/), same "type": "flannel".
	mkdir -p "${BIN}/cni" "${WORK}/flannel-cni"
	cp "${HERE}/flannel-cni/go.mod" "${HERE}/flannel-cni/go.sum" "${HERE}/flannel-cni/main.go" "${WORK}/flannel-cni/"
	go_bin cni/flannel "${WORK}/flannel-cni" . "kbuild-${v}" 0 "" "-s -w"
	stamp_set flannel "${EXPECT[flannel]}"
}

build_registry() {
	local v=${DISTRIBUTION_VERSION} dir p=github.com/distribution/distribution/v3
	stamp_ok registry "${v}" && { log "registry ${v}: cached"; return; }
	reuse registry "${v}" && return
	dir=$(prepare_module "${p}" "${v}" "${v}")
	go_bin registry "${dir}" "${p}/cmd/registry" "${v}" 0 "" \
		"-s -w -X ${p}/version.version=${v} -X ${p}/version.revision=$(module_commit "${p}" "${v}") -X ${p}/version.mainpkg=${p}"
	stamp_set registry "${v}"
}

build_vip() {
	stamp_ok vip "${EXPECT[vip]}" && { log "kbuild-vip: cached"; return; }
	reuse vip "${EXPECT[vip]}" && return
	# kbuild's own VIP agent (standard library only): nodes reach the masters
	# through it (docs/kubernetes-image.md, "High availability").
	mkdir -p "${WORK}/vip-agent"
	cp "${HERE}/vip-agent/go.mod" "${HERE}/vip-agent/main.go" "${WORK}/vip-agent/"
	go_bin kbuild-vip "${WORK}/vip-agent" . "${EXPECT[vip]}" 0 "" "-s -w"
	stamp_set vip "${EXPECT[vip]}"
}

# Any change of the set invalidates the completion marker until it is rewritten.
rm -f "${OUT}/done"
for c in "${COMPONENTS[@]}"; do
	case ${c} in
		kubernetes | etcd | etcdutl | coredns | pause | crictl | containerd | runc | cni | flannel | registry | vip) "build_${c}" ;;
		*) echo "build-from-source: unknown component '${c}'" >&2; exit 2 ;;
	esac
done

cat >"${OUT}/versions.tmp" <<EOF
KUBERNETES_VERSION=${KUBERNETES_VERSION}
ETCD_VERSION=${ETCD_VERSION}
ETCD_IMAGE_TAG=${ETCD_IMAGE_TAG}
COREDNS_VERSION=${COREDNS_VERSION}
PAUSE_VERSION=${PAUSE_VERSION}
CONTAINERD_VERSION=${CONTAINERD_VERSION}
RUNC_VERSION=${RUNC_VERSION}
CRICTL_VERSION=${CRICTL_VERSION}
CNI_PLUGINS_VERSION=${CNI_PLUGINS_VERSION}
FLANNEL_VERSION=${FLANNEL_VERSION}
DISTRIBUTION_VERSION=${DISTRIBUTION_VERSION}
GO_VERSION=$(go env GOVERSION)
EOF
mv -f "${OUT}/versions.tmp" "${OUT}/versions"

# done only when every component of the full set has a current stamp.
complete=1
for c in kubernetes etcd etcdutl coredns pause crictl containerd runc cni flannel registry; do
	stamp_ok "${c}" "${EXPECT[${c}]}" || complete=0
done
(cd "${BIN}" && find . -type f ! -name '.*' -printf '%P\n' | LC_ALL=C sort | xargs sha256sum) >"${OUT}/SHA256SUMS.tmp"
mv -f "${OUT}/SHA256SUMS.tmp" "${OUT}/SHA256SUMS"
if [[ ${complete} == 1 ]]; then
	date -u +%Y-%m-%dT%H:%M:%SZ >"${OUT}/done.tmp" && mv -f "${OUT}/done.tmp" "${OUT}/done"
	log "complete: ${OUT}"
else
	log "partial set in ${OUT} (run without components to finish it)"
fi
