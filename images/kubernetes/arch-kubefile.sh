#!/bin/sh
# Write a copy of a Kubefile for a multi-platform build over a context of
# one directory per architecture (build-platforms.sh): ARG TARGETARCH after
# FROM, and every COPY source under ${TARGETARCH}/.
#
# Usage: arch-kubefile.sh SRC DEST
set -eu
[ $# -eq 2 ] || { echo "usage: $0 SRC DEST" >&2; exit 2; }
if grep -q '^COPY -' "$1"; then
	echo "arch-kubefile: $1: COPY with flags is not rewritten; extend arch-kubefile.sh" >&2
	exit 1
fi
# shellcheck disable=SC2016 # ${TARGETARCH} is for kbuild to expand
sed -e '/^FROM /a ARG TARGETARCH' \
	-e 's#^COPY \([^ ][^ ]*\) #COPY ${TARGETARCH}/\1 #' "$1" >"$2.tmp"
mv -f "$2.tmp" "$2"
