#!/usr/bin/env bash
# Assemble a minimal root filesystem with the netfilter user-space tools that
# kube-proxy and flanneld exec at run time (iptables/ip6tables + -save/-restore
# in nft mode, nft), copied from this machine's Debian packages together with
# every shared library they load. kube-proxy and flannel images are this tree
# plus their own binary; FROM scratch + the Go binary alone is not enough
# (kube-proxy: "iptables-restore: executable file not found").
#
# Usage: netfilter-userland.sh DEST [ARCH]
# Needs the Debian packages iptables and nftables installed on this machine.
# With ARCH (a Debian architecture other than this machine's, e.g. arm64) the
# tree comes from a debootstrap --arch ARCH root with those packages, this
# script run inside it (chroot; the binaries run under qemu-user-static).
set -euo pipefail

[[ $# -eq 1 || $# -eq 2 ]] || { echo "usage: $0 DEST [ARCH]" >&2; exit 2; }
DEST=$1
if [[ $# -eq 2 && $2 != "$(dpkg --print-architecture)" ]]; then
	root=$(mktemp -d /var/tmp/kbuild-nf-root.XXXXXX)
	# shellcheck disable=SC2064 # root is fixed now
	trap "rm -rf '${root}'" EXIT
	debootstrap --arch "$2" --variant=minbase --include=iptables,nftables bookworm "${root}" \
		"${KBUILD_DEBIAN_MIRROR:-http://deb.debian.org/debian}" >"${root}.log" 2>&1 ||
		{ tail -n 20 "${root}.log" >&2; exit 1; }
	rm -f "${root}.log"
	cp "$0" "${root}/netfilter-userland.sh"
	chroot "${root}" /bin/bash /netfilter-userland.sh /nf
	mkdir -p "$(dirname "${DEST}")"
	rm -rf "${DEST}"
	mv "${root}/nf" "${DEST}"
	exit 0
fi
for f in /usr/sbin/xtables-nft-multi /usr/sbin/nft; do
	[[ -x ${f} ]] || { echo "netfilter-userland: ${f} missing (apt-get install iptables nftables)" >&2; exit 1; }
done

mkdir -p "${DEST}"/{usr/sbin,usr/lib,etc,run,tmp,var/run}
chmod 1777 "${DEST}/tmp"
# Debian's usr-merge: /lib and /lib64 are symlinks into /usr. Recreate them
# first; every file is copied to its resolved (/usr/...) path.
for l in lib lib64; do
	if [[ -L /${l} && ! -e ${DEST}/${l} ]]; then
		mkdir -p "${DEST}$(readlink -f "/${l}")"
		ln -s "$(readlink "/${l}")" "${DEST}/${l}"
	fi
done

# copy_with_libs FILE...: copy files (keeping their path) and their libraries.
copy_with_libs() {
	local f lib real
	for f in "$@"; do
		f=$(readlink -f "${f}")
		mkdir -p "${DEST}$(dirname "${f}")"
		cp -L "${f}" "${DEST}${f}"
		for lib in $(ldd "${f}" 2>/dev/null | awk '/=>/ && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}'); do
			real=$(readlink -f "${lib}")
			if [[ ! -e ${DEST}${real} ]]; then
				mkdir -p "${DEST}$(dirname "${real}")"
				cp -L "${real}" "${DEST}${real}"
			fi
			# keep the name the binary asks for (e.g. /lib64/ld-linux-x86-64.so.2)
			if [[ ! -e ${DEST}${lib} ]]; then
				mkdir -p "${DEST}$(dirname "${lib}")"
				ln -s "${real}" "${DEST}${lib}"
			fi
		done
	done
}

copy_with_libs /usr/sbin/xtables-nft-multi /usr/sbin/xtables-legacy-multi /usr/sbin/nft
# xtables extensions are dlopen()ed, ldd does not see them.
xt=$(dirname "$(readlink -f "$(ldd /usr/sbin/xtables-nft-multi | awk '/libxtables/ {print $3}')")")/xtables
mkdir -p "${DEST}${xt}"
cp -a "${xt}/." "${DEST}${xt}/"
for so in "${xt}"/*.so; do copy_with_libs "${so}"; done
cd "${DEST}/usr/sbin"
for fam in iptables ip6tables; do
	for s in "" -save -restore; do
		ln -sf xtables-nft-multi "${fam}${s}"
		ln -sf xtables-nft-multi "${fam}-nft${s}"
		ln -sf xtables-legacy-multi "${fam}-legacy${s}"
	done
done
# /etc/ethertypes and protocols/services are read by iptables/nft name lookups.
for f in /etc/ethertypes /etc/protocols /etc/services; do
	[[ -f ${f} ]] && cp "${f}" "${DEST}${f}"
done
# Name the userland version so images can be told apart.
{
	dpkg-query -W -f '${Package} ${Version}\n' iptables nftables 2>/dev/null || true
} >"${DEST}/etc/netfilter-userland.versions"
echo "netfilter userland in ${DEST}: $(du -sh "${DEST}" | cut -f1)"
