#!/usr/bin/env bash
# Fetches CloudNativePG's Cluster CRD as its project publishes it, from its Go module (the generated
# config/crd/bases/postgresql.cnpg.io_clusters.yaml, produced by controller-gen from api/v1 in the project's own
# release), into a cache outside the repository, once, and prints its path. tests/k8s/test_cnpg.py installs it on
# the embedded control plane: the operator is tested against CloudNativePG's real schema, not a copy of ours.
#   hack/cnpg/crd.sh           fetch when missing, print the file's path
#   hack/cnpg/crd.sh --print   print the path only (exit 1 when not fetched)
set -euo pipefail
CNPG_VERSION=v1.27.1
CACHE=${OPTISCHEMA_CNPG_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/optischema/cnpg-$CNPG_VERSION}
CRD=$CACHE/postgresql.cnpg.io_clusters.yaml
if [ "${1:-}" = "--print" ]; then [ -f "$CRD" ] && echo "$CRD" && exit 0; exit 1; fi
if [ -f "$CRD" ]; then echo "$CRD"; exit 0; fi
command -v go >/dev/null || { echo "crd.sh: Go is not installed; CloudNativePG's CRD cannot be fetched" >&2; exit 3; }
mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"; flock 9
[ -f "$CRD" ] && { echo "$CRD"; exit 0; }
# `go mod download` needs no go.mod; the module lands in the Go module cache (kept by CI like the other builds).
dir=$(cd "$CACHE" && GOFLAGS=-mod=mod go mod download -json "github.com/cloudnative-pg/cloudnative-pg@$CNPG_VERSION" \
  | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
[ -n "$dir" ] && [ -f "$dir/config/crd/bases/postgresql.cnpg.io_clusters.yaml" ] || {
  echo "crd.sh: the module github.com/cloudnative-pg/cloudnative-pg@$CNPG_VERSION has no Cluster CRD" >&2; exit 4; }
cp "$dir/config/crd/bases/postgresql.cnpg.io_clusters.yaml" "$CRD.partial"
mv "$CRD.partial" "$CRD"
echo "$CRD"
