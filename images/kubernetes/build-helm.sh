#!/usr/bin/env bash
# Build helm (helm.sh/helm/v4) from source with `go build` against the Go
# module proxy, cached by version outside the repo:
#
#   ${KBUILD_HELM_CACHE:-/var/cache/kbuild/helm}/<helm version>/         (amd64)
#   ${KBUILD_HELM_CACHE:-/var/cache/kbuild/helm}/<arch>/<helm version>/  (KBUILD_HELM_ARCH)
#       bin/helm      the binary (static, CGO_ENABLED=0, as upstream builds it)
#       SHA256SUMS    sha256 of bin/helm (sha256sum format, relative to bin/)
#       versions      HELM_VERSION, GO_VERSION
#       build-times.tsv
#       done          written last; its presence means the build is complete
#
# Usage: build-helm.sh [HELM_VERSION]   (default: versions.env's HELM_VERSION)
# Prints the path of the binary on stdout. A cached build is only checked
# against SHA256SUMS. The same binary goes into the kubernetes image's bin/
# (build.sh) and renders charts in `kbuild build` (KBUILD_HELM or --helm).
#
# Environment: KBUILD_HELM_CACHE, KBUILD_HELM_ARCH (default amd64; another
# arch is cross-compiled, for the hosts' bin/ only), KBUILD_BUILD_JOBS (go build -p, default 2),
# GOMAXPROCS (default 2). The build runs under `nice -n 19`.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=versions.env
. "${HERE}/versions.env"
VERSION=${1:-${HELM_VERSION}}
if [[ ! ${VERSION} =~ ^v4\.[0-9]+\.[0-9]+$ ]]; then
	echo "build-helm: '${VERSION}' is not a helm v4 release version (v4.MINOR.PATCH)" >&2
	exit 2
fi

ARCH=${KBUILD_HELM_ARCH:-amd64}
OUT="${KBUILD_HELM_CACHE:-/var/cache/kbuild/helm}/${VERSION}"
[[ ${ARCH} == amd64 ]] || OUT="${KBUILD_HELM_CACHE:-/var/cache/kbuild/helm}/${ARCH}/${VERSION}"
BIN="${OUT}/bin"
check() { (cd "${BIN}" && sha256sum --quiet -c ../SHA256SUMS); }
if [[ -f ${OUT}/done ]]; then
	check || { echo "build-helm: ${OUT}/SHA256SUMS does not match ${BIN}" >&2; exit 1; }
	printf '%s\n' "${BIN}/helm"
	exit 0
fi

# shellcheck source=go-build.sh
. "${HERE}/go-build.sh"
go_target "${ARCH}"
mkdir -p "${BIN}"

exec 9>"${OUT}/.lock"
flock -w 3600 9 || { echo "build-helm: could not lock ${OUT}/.lock within 1h" >&2; exit 1; }
if [[ ! -f ${OUT}/done ]]; then
	go_build_start kbuild-helm-build "${OUT}"

	m=helm.sh/helm/v4
	dir=$(prepare_module "${m}" "${VERSION}" "${VERSION}")
	go_bin helm "${dir}" "${m}/cmd/helm" "${VERSION}" 0 "" \
		"-s -w -X ${m}/internal/version.version=${VERSION} -X ${m}/internal/version.metadata= -X ${m}/internal/version.gitCommit=$(module_commit "${m}" "${VERSION}") -X ${m}/internal/version.gitTreeState=clean"
	printf 'HELM_VERSION=%s\nGO_VERSION=%s\n' "${VERSION}" "$(go env GOVERSION)" >"${OUT}/versions.tmp"
	mv -f "${OUT}/versions.tmp" "${OUT}/versions"
	(cd "${BIN}" && sha256sum helm) >"${OUT}/SHA256SUMS.tmp"
	mv -f "${OUT}/SHA256SUMS.tmp" "${OUT}/SHA256SUMS"
	date -u +%Y-%m-%dT%H:%M:%SZ >"${OUT}/done.tmp" && mv -f "${OUT}/done.tmp" "${OUT}/done"
	log "helm ${VERSION}: ${BIN}/helm"
fi
check || { echo "build-helm: ${OUT}/SHA256SUMS does not match ${BIN}" >&2; exit 1; }
printf '%s\n' "${BIN}/helm"
