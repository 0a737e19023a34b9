#!/bin/sh
# Build the Gatekeeper container image from deploy/Dockerfile: `make image`.
#
# Variables (all optional):
#   IMAGE       the tag to build; default gatekeeper:<version in pyproject.toml>
#   BASE_IMAGE  the base: a Python 3.11 on Debian bookworm. Unset: the local base made here
#               before if there is one, else python:3.11-slim-bookworm if it can be pulled, else
#               a base made from a Debian root filesystem (debootstrap, then `import`), cached
#               as LOCAL_BASE so that later builds start from it at once
#   LOCAL_BASE  the tag of that local base; default localhost/gatekeeper-base:bookworm
#   ENGINE      podman or docker; default podman when installed, else docker
#   CA_BUNDLE   a CA bundle pip trusts inside the build (behind a TLS-inspecting proxy); default
#               the host's bundle when there is one. Passed as a build secret: in no layer.
#   CACHE_DIR   where the root filesystem tarball is kept between runs; default
#               ${XDG_CACHE_HOME:-$HOME/.cache}/gatekeeper-image
#   DEBIAN_MIRROR  the mirror debootstrap downloads from; default debootstrap's own
set -eu
cd "$(dirname "$0")/.."

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' pyproject.toml | head -n 1)
IMAGE=${IMAGE:-gatekeeper:$version}
LOCAL_BASE=${LOCAL_BASE:-localhost/gatekeeper-base:bookworm}
CACHE_DIR=${CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/gatekeeper-image}
UPSTREAM_BASE=python:3.11-slim-bookworm
# What the local base holds besides Debian's minimal set: the same as the upstream base.
BASE_PACKAGES=python3,python3-venv,ca-certificates

say() { echo "image: $*" >&2; }
die() {
	say "$*"
	exit 1
}

if [ -z "${ENGINE:-}" ]; then
	if command -v podman >/dev/null 2>&1; then
		ENGINE=podman
	elif command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
		ENGINE=docker
	else
		die "no container engine: install podman (Debian: apt-get install podman runc) or run docker"
	fi
fi

has_image() { "$ENGINE" image inspect "$1" >/dev/null 2>&1; }

# A bookworm root filesystem with Python, imported as LOCAL_BASE. The tarball is kept in
# CACHE_DIR: a machine whose image store was wiped imports it again without downloading.
local_base() {
	tarball=$CACHE_DIR/bookworm-minbase-python.tar
	if [ ! -s "$tarball" ]; then
		command -v debootstrap >/dev/null 2>&1 || [ -x /usr/sbin/debootstrap ] ||
			die "no base image can be pulled and debootstrap is missing (apt-get install debootstrap)"
		[ "$(id -u)" = 0 ] || die "debootstrap needs root to make the local base image"
		mkdir -p "$CACHE_DIR"
		rootfs=$(mktemp -d "$CACHE_DIR/rootfs.XXXXXX")
		trap 'rm -rf "$rootfs"' EXIT
		say "making a Debian bookworm base in $rootfs (once; cached in $CACHE_DIR)"
		# shellcheck disable=SC2086  # an empty mirror means debootstrap's default
		PATH=$PATH:/usr/sbin:/sbin debootstrap --variant=minbase --include="$BASE_PACKAGES" \
			bookworm "$rootfs" ${DEBIAN_MIRROR:-} >&2
		# No package lists or caches in the image; the apt sources stay for later installs.
		rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin \
			"$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/log/*
		tar -C "$rootfs" --numeric-owner -cf "$tarball.part" .
		mv "$tarball.part" "$tarball"
		rm -rf "$rootfs"
		trap - EXIT
	fi
	say "importing $tarball as $LOCAL_BASE"
	"$ENGINE" import --change 'CMD ["/bin/bash"]' --change 'ENV LANG=C.UTF-8' \
		"$tarball" "$LOCAL_BASE" >/dev/null
}

if [ -z "${BASE_IMAGE:-}" ]; then
	if has_image "$LOCAL_BASE"; then
		BASE_IMAGE=$LOCAL_BASE
	elif has_image "$UPSTREAM_BASE" || "$ENGINE" pull -q "$UPSTREAM_BASE" >/dev/null 2>&1; then
		BASE_IMAGE=$UPSTREAM_BASE
	else
		say "$UPSTREAM_BASE cannot be pulled: using a local Debian base"
		local_base
		BASE_IMAGE=$LOCAL_BASE
	fi
fi

set -- --build-arg "BASE_IMAGE=$BASE_IMAGE" -f deploy/Dockerfile -t "$IMAGE"
# The pip install steps download from the package index: host networking reaches it wherever
# the host does (no bridge or DNS set-up needed).
set -- "$@" --network host
if [ -z "${CA_BUNDLE:-}" ]; then
	for candidate in "${PIP_CERT:-}" "${SSL_CERT_FILE:-}" /etc/ssl/certs/ca-certificates.crt; do
		if [ -n "$candidate" ] && [ -s "$candidate" ]; then
			CA_BUNDLE=$candidate
			break
		fi
	done
fi
[ -n "${CA_BUNDLE:-}" ] && set -- "$@" --secret "id=ca-bundle,src=$CA_BUNDLE"
if [ "${ENGINE##*/}" = podman ]; then
	set -- "$@" --format docker # OCI images drop HEALTHCHECK
else
	export DOCKER_BUILDKIT=1 # build secrets need BuildKit
fi

say "building $IMAGE from $BASE_IMAGE with $ENGINE"
"$ENGINE" build "$@" .
echo "$IMAGE"
