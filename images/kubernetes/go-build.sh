# Shared by build-from-source.sh and build-helm.sh (sourced, not run): build Go
# binaries from the Go module proxy into a versioned cache.
#
# Sourcing it sets the Go environment (GOMAXPROCS, KBUILD_BUILD_JOBS for
# go build -p, both default 2; builds under nice -n 19); the caller sets BIN
# (output dir) and calls go_build_start.
# shellcheck shell=bash

export PATH="/usr/local/go/bin:${PATH}"
export GOMAXPROCS=${GOMAXPROCS:-2}
export GOFLAGS="-buildvcs=false -mod=mod"
export GOTOOLCHAIN=local
JOBS=${KBUILD_BUILD_JOBS:-2}
NICE=(nice -n 19)

log() { printf '[%s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

# go_target ARCH: build for linux/ARCH (GOARCH). Another architecture than
# this machine's is cross-compiled: Go alone for CGO_ENABLED=0, and cgo with
# Debian's cross compiler (gcc-<triple>), whose target libraries (e.g.
# libseccomp-dev:arm64) come from Debian's multiarch packages. Sets CC_TARGET
# and STRIP_TARGET for C helpers built without go.
go_target() {
	export GOOS=linux GOARCH=$1
	CC_TARGET=gcc STRIP_TARGET=strip
	[[ $1 == "$(go env GOHOSTARCH)" ]] && return 0
	local triple
	case $1 in
		arm64) triple=aarch64-linux-gnu ;;
		amd64) triple=x86_64-linux-gnu ;;
		*) echo "go_target: no cross compiler known for ${1}" >&2; return 1 ;;
	esac
	command -v "${triple}-gcc" >/dev/null ||
		{ echo "go_target: ${triple}-gcc missing (apt-get install gcc-${triple})" >&2; return 1; }
	export CC=${triple}-gcc PKG_CONFIG_LIBDIR=/usr/lib/${triple}/pkgconfig:/usr/share/pkgconfig
	CC_TARGET=${triple}-gcc STRIP_TARGET=${triple}-strip
}

# target_lib TRIPLE-LIB PACKAGE: fail naming the multiarch package when a
# target library is missing (cross builds only).
target_lib() {
	[[ -z ${CC:-} || -e /usr/lib/${CC%-gcc}/$1 ]] && return 0
	echo "go_target: /usr/lib/${CC%-gcc}/$1 missing: dpkg --add-architecture ${GOARCH};" \
		"apt-get update; apt-get install $2:${GOARCH}" >&2
	return 1
}

# go_build_start NAME OUT: WORK = a temp dir removed on exit, TIMES = OUT/build-times.tsv
go_build_start() {
	WORK=$(mktemp -d "/var/tmp/$1.XXXXXX")
	# shellcheck disable=SC2064 # WORK is fixed now
	trap "chmod -R u+w '${WORK}' 2>/dev/null; rm -rf '${WORK}'" EXIT
	TIMES="$2/build-times.tsv"
	[[ -f ${TIMES} ]] || printf 'name\tversion\tseconds\n' >"${TIMES}"
}

# module_dir MODULE VERSION -> prints the extracted module source directory
module_dir() {
	go mod download -json "$1@$2" | python3 -c 'import json,sys; d=json.load(sys.stdin); e=d.get("Error"); sys.exit("go mod download: "+e) if e else print(d["Dir"])'
}

# module_time MODULE VERSION -> commit time of the version as a unix epoch
module_time() {
	go mod download -json "$1@$2" | python3 -c '
import json, sys, datetime
d = json.load(open(json.load(sys.stdin)["Info"]))
print(int(datetime.datetime.fromisoformat(d["Time"].replace("Z", "+00:00")).timestamp()))'
}

# module_commit MODULE VERSION -> VCS commit hash if the proxy recorded one, else "unknown"
module_commit() {
	go mod download -json "$1@$2" | python3 -c '
import json, sys
d = json.load(open(json.load(sys.stdin)["Info"]))
print((d.get("Origin") or {}).get("Hash") or "unknown")'
}

# prepare_module MODULE VERSION RELATIVE_REPLACE_VERSION -> prints a temp main
# module directory that requires MODULE@VERSION and carries MODULE's replace
# directives. Replaces that point at a relative directory (k8s staging/, etcd's
# sibling modules) -- which cannot work outside the upstream checkout -- are
# pointed at the published version RELATIVE_REPLACE_VERSION of that module.
prepare_module() {
	local module=$1 version=$2 relver=$3
	local dir="${WORK}/mod-${module//\//_}@${version}"
	if [[ ! -f ${dir}/go.mod ]]; then
		local src
		src=$(module_dir "${module}" "${version}")
		mkdir -p "${dir}"
		go mod edit -json "${src}/go.mod" | python3 -c '
import json, sys
module, version, relver = sys.argv[1:4]
m = json.load(sys.stdin)
lines = ["module kbuild.invalid/build", "", "go " + m.get("Go", "1.22"), "",
         "require %s %s" % (module, version), ""]
for r in m.get("Replace") or []:
    old = r["Old"]["Path"] + (" " + r["Old"]["Version"] if r["Old"].get("Version") else "")
    new_path = r["New"]["Path"]
    if new_path.startswith((".", "/")):
        # a guard such as the etcd module "go.etcd.io/etcd => ./FORBIDDEN_DEPENDENCY",
        # or a path whose major version cannot take relver: no replace
        major = relver.lstrip("v").split(".")[0]
        suffix = r["Old"]["Path"].rsplit("/", 1)[-1]
        if "FORBIDDEN" in new_path or (major not in ("0", "1") and suffix != "v" + major):
            continue
        new = "%s %s" % (r["Old"]["Path"], relver)
    else:
        new = new_path + (" " + r["New"]["Version"] if r["New"].get("Version") else "")
    lines.append("replace %s => %s" % (old, new))
print("\n".join(lines))
' "${module}" "${version}" "${relver}" >"${dir}/go.mod"
	fi
	printf '%s\n' "${dir}"
}

# go_bin NAME MODDIR PACKAGE VERSION CGO TAGS LDFLAGS [EXTRA go build args...]
go_bin() {
	local name=$1 moddir=$2 pkg=$3 version=$4 cgo=$5 tags=$6 ldflags=$7
	shift 7
	local start end tmp
	tmp="$(dirname "${BIN}/${name}")/.$(basename "${name}").tmp"
	log "building ${name} ${version} (${pkg})"
	start=$(date +%s)
	(cd "${moddir}" && CGO_ENABLED=${cgo} "${NICE[@]}" go build -p "${JOBS}" -trimpath \
		-tags "${tags}" -ldflags "${ldflags}" "$@" -o "${tmp}" "${pkg}")
	mv -f "${tmp}" "${BIN}/${name}"
	end=$(date +%s)
	printf '%s\t%s\t%s\n' "${name}" "${version}" "$((end - start))" >>"${TIMES}"
	log "built ${name} in $((end - start))s"
}
