#!/usr/bin/env bash
# Prints the base image to build FROM. The public python:3.11-slim when a registry answers; otherwise a Debian
# bookworm with python3 made here with debootstrap (≈ 70 s once), cached as a tarball outside the repository and
# committed to buildah's storage as localhost/optischema-base:bookworm.
set -euo pipefail
BUILDAH=(buildah --storage-driver vfs)
LOCAL=localhost/optischema-base:bookworm
CACHE=${OPTISCHEMA_IMAGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/optischema/image}
if "${BUILDAH[@]}" inspect --type image "$LOCAL" >/dev/null 2>&1; then echo "$LOCAL"; exit 0; fi
if timeout 20 "${BUILDAH[@]}" pull -q docker.io/library/python:3.11-slim >/dev/null 2>&1; then
  echo docker.io/library/python:3.11-slim; exit 0
fi
mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"; flock 9
tarball=$CACHE/bookworm-python3.tar
if [ ! -s "$tarball" ]; then
  echo "no registry answers: making a Debian bookworm base with debootstrap ..." >&2
  root=$(mktemp -d)
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$root" \
    http://deb.debian.org/debian >&2
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  tar -C "$root" -cf "$tarball.partial" . && mv "$tarball.partial" "$tarball"
  rm -rf "$root"
fi
container=$("${BUILDAH[@]}" from scratch)
mount=$("${BUILDAH[@]}" mount "$container")
tar -C "$mount" -xf "$tarball"
"${BUILDAH[@]}" umount "$container" >/dev/null
"${BUILDAH[@]}" config --env PATH=/usr/local/bin:/usr/bin:/bin --cmd '["python3"]' "$container"
"${BUILDAH[@]}" commit -q "$container" "$LOCAL" >/dev/null
"${BUILDAH[@]}" rm "$container" >/dev/null
echo "$LOCAL"
