#!/usr/bin/env bash
# Builds the pinned Helm from its Go module into a cache outside the repository, once, and prints its path.
#   hack/helm/build.sh           build when missing, print the binary's path
#   hack/helm/build.sh --print   print the path only (exit 1 when not built)
set -euo pipefail
HELM_VERSION=v3.22.0
CACHE=${OPTISCHEMA_HELM_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/optischema/helm-$HELM_VERSION}
BIN=$CACHE/bin/helm
if [ "${1:-}" = "--print" ]; then [ -x "$BIN" ] && echo "$BIN" && exit 0; exit 1; fi
if [ -x "$BIN" ]; then echo "$BIN"; exit 0; fi
command -v go >/dev/null || { echo "build.sh: Go is not installed; Helm cannot be built" >&2; exit 3; }
mkdir -p "$CACHE/bin"
exec 9>"$CACHE/.lock"; flock 9
[ -x "$BIN" ] && { echo "$BIN"; exit 0; }
start=$SECONDS
echo "building helm $HELM_VERSION ..." >&2
GOBIN="$CACHE/.partial" CGO_ENABLED=0 go install -trimpath -ldflags "-s -w" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
mv "$CACHE/.partial/helm" "$BIN"
rmdir "$CACHE/.partial" 2>/dev/null || true
echo "built helm in $((SECONDS - start))s" >&2
echo "$BIN"
