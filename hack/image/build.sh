#!/usr/bin/env bash
# make image: wheels built on this host (pip's cache, its CA bundle), then the Dockerfile built daemonless with
# buildah (vfs storage, chroot isolation) on hack/image/base.sh's base. Prints the image name and its size.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PY=${PY:-$ROOT/.venv/bin/python}
IMAGE=${IMAGE:-localhost/optischema-operator:dev}
BUILDAH=(buildah --storage-driver vfs)
start=$SECONDS
rm -rf "$ROOT/dist/wheels" && mkdir -p "$ROOT/dist/wheels"
"$PY" -m pip wheel -q -c "$ROOT/constraints.txt" -w "$ROOT/dist/wheels" "$ROOT" >&2
wheels=$((SECONDS - start))
base=$("$ROOT/hack/image/base.sh")
"${BUILDAH[@]}" bud --isolation chroot --layers=false -q --build-arg "BASE=$base" -t "$IMAGE" -f "$ROOT/Dockerfile" "$ROOT" >&2
size=$("${BUILDAH[@]}" images --format '{{.Size}}' "$IMAGE" 2>/dev/null | head -1)
"${BUILDAH[@]}" rmi --prune >/dev/null 2>&1 || true  # intermediate stages
echo "built $IMAGE from $base in $((SECONDS - start))s (wheels ${wheels}s), size ${size}" >&2
echo "$IMAGE"
