#!/usr/bin/env bash
# Builds the pinned promtool (Prometheus's rule tester: a real PromQL evaluator) from its Go module into a cache
# outside the repository, once, and prints its path. tests/k8s/test_alerts.py runs `promtool test rules` with it
# against metrics the operator really exported.
#   hack/promtool/build.sh           build when missing, print the binary's path
#   hack/promtool/build.sh --print   print the path only (exit 1 when not built)
# v0.316.0 is Prometheus 3.16.0: the first release whose go.mod has no replace/exclude directives, so `go install
# pkg@version` accepts it; it asks for Go >= 1.26.7. The remove_all_sd tag leaves out the service discoveries
# (cloud SDKs, client-go), which promtool's rule tests never use: the build takes a third of the time.
set -euo pipefail
PROMETHEUS_MODULE_VERSION=v0.316.0
CACHE=${OPTISCHEMA_PROMTOOL_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/optischema/promtool-$PROMETHEUS_MODULE_VERSION}
BIN=$CACHE/bin/promtool
if [ "${1:-}" = "--print" ]; then [ -x "$BIN" ] && echo "$BIN" && exit 0; exit 1; fi
if [ -x "$BIN" ]; then echo "$BIN"; exit 0; fi
command -v go >/dev/null || { echo "build.sh: Go is not installed; promtool cannot be built" >&2; exit 3; }
mkdir -p "$CACHE/bin"
exec 9>"$CACHE/.lock"; flock 9
[ -x "$BIN" ] && { echo "$BIN"; exit 0; }
start=$SECONDS
echo "building promtool ($PROMETHEUS_MODULE_VERSION) ..." >&2
rm -rf "$CACHE/.partial"
GOBIN="$CACHE/.partial" CGO_ENABLED=0 go install -trimpath -tags remove_all_sd -ldflags "-s -w" \
  "github.com/prometheus/prometheus/cmd/promtool@$PROMETHEUS_MODULE_VERSION"
mv "$CACHE/.partial/promtool" "$BIN"
rmdir "$CACHE/.partial" 2>/dev/null || true
echo "built promtool in $((SECONDS - start))s" >&2
echo "$BIN"
