#!/usr/bin/env bash
# Renders manifests/base (the kustomize base for people who do not use Helm) from the chart with its defaults:
# release "optischema" in namespace "optischema-system". A test renders it again and compares.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
HELM=$("$ROOT/hack/helm/build.sh")
OUT=${1:-$ROOT/manifests/base}
mkdir -p "$OUT"
{
  echo "# Rendered from charts/optischema by hack/manifests/render.sh (make manifests); do not edit."
  "$HELM" template optischema "$ROOT/charts/optischema" -n optischema-system --kube-version 1.36.3 \
    --set crds.install=false --set tests.enabled=false | grep -v '^# Source: '   # no helm test pod without Helm
} > "$OUT/operator.yaml"
# kopf's CRD, and ours as generated (the chart templates the same files, with Helm's labels and resource policy).
for crd in "$ROOT"/charts/optischema/crds/*.yaml "$ROOT"/charts/optischema/files/crds/*.yaml; do
  echo "---"; cat "$crd"
done > "$OUT/crds.yaml"
cat > "$OUT/namespace.yaml" <<'YAML'
apiVersion: v1
kind: Namespace
metadata:
  name: optischema-system
  labels: {app.kubernetes.io/name: optischema}
YAML
cat > "$OUT/kustomization.yaml" <<'YAML'
# The operator without Helm: kubectl apply -k manifests/base (or use it as a base with your own overlays).
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - namespace.yaml
  - crds.yaml
  - operator.yaml
YAML
