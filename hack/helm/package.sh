#!/usr/bin/env bash
# Packages the chart for a Helm repository: lints it, writes dist/charts/optischema-<version>.tgz and the repository
# index dist/charts/index.yaml (merged with an index already there, so earlier versions stay listed).
#   hack/helm/package.sh [OUT]          OUT defaults to dist/charts
#   CHART_REPO_URL=https://charts.example/optischema hack/helm/package.sh   absolute URLs in the index
# Without CHART_REPO_URL the index lists archives by file name: serve OUT as it is (e.g. a static site, or
# `helm repo add optischema file://...`).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
HELM=$("$ROOT/hack/helm/build.sh")
OUT=${1:-$ROOT/dist/charts}
mkdir -p "$OUT"
if ! linted=$("$HELM" lint --strict "$ROOT/charts/optischema" 2>&1); then
  echo "$linted" >&2
  exit 1
fi
"$HELM" package "$ROOT/charts/optischema" --destination "$OUT" >/dev/null
args=("$OUT")
[ -n "${CHART_REPO_URL:-}" ] && args+=(--url "$CHART_REPO_URL")
if [ -f "$OUT/index.yaml" ]; then
  # helm repo index --merge reads the old index from another path than the one it writes
  cp "$OUT/index.yaml" "$OUT/.index-previous.yaml"
  args+=(--merge "$OUT/.index-previous.yaml")
fi
"$HELM" repo index "${args[@]}"
rm -f "$OUT/.index-previous.yaml"
version=$(sed -n 's/^version: *//p' "$ROOT/charts/optischema/Chart.yaml")
echo "$OUT/optischema-$version.tgz"
echo "$OUT/index.yaml"
