#!/usr/bin/env bash
# make e2e-kind: the operator end to end on a kind cluster, for machines with a Docker engine.
# kind cluster → image built with docker and loaded → PostgreSQL 15 in the cluster → helm install → a target that
# becomes Ready and gets recommendations. Skipped, saying why, where no Docker engine runs.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
if ! command -v docker >/dev/null 2>&1 || ! docker info >/dev/null 2>&1; then
  echo "SKIPPED e2e-kind: no Docker engine is running here, and kind needs one (make test covers the same on the embedded control plane)."
  exit 0
fi
KIND_VERSION=v0.27.0
NAME=${KIND_CLUSTER:-optischema-e2e}
export PATH="$(go env GOPATH 2>/dev/null)/bin:$PATH"
command -v kind >/dev/null || go install "sigs.k8s.io/kind@$KIND_VERSION"
HELM=$("$ROOT/hack/helm/build.sh")
PY=${PY:-$ROOT/.venv/bin/python}
kind create cluster --name "$NAME" --wait 180s
trap 'kind delete cluster --name "$NAME"' EXIT
rm -rf "$ROOT/dist/wheels" && "$PY" -m pip wheel -q -c "$ROOT/constraints.txt" -w "$ROOT/dist/wheels" "$ROOT"
docker build -t optischema-operator:e2e "$ROOT"
kind load docker-image optischema-operator:e2e --name "$NAME"
kubectl create namespace shop
kubectl -n shop create secret generic shop-db --from-literal=username=postgres --from-literal=password=e2e
kubectl -n shop label secret shop-db optischema.io/allow=true  # the operator reads only Secrets that opt in
kubectl -n shop apply -f - <<'YAML'
apiVersion: apps/v1
kind: Deployment
metadata: {name: db}
spec:
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec:
      containers:
        - name: postgres
          image: postgres:15
          args: ["-c", "shared_preload_libraries=pg_stat_statements"]
          env:
            - {name: POSTGRES_PASSWORD, value: e2e}
            - {name: POSTGRES_DB, value: shop}
          ports: [{containerPort: 5432}]
---
apiVersion: v1
kind: Service
metadata: {name: db}
spec: {selector: {app: db}, ports: [{port: 5432}]}
YAML
kubectl -n shop rollout status deploy/db --timeout=180s
kubectl -n shop exec deploy/db -- psql -U postgres -d shop -c "CREATE EXTENSION pg_stat_statements;
  CREATE TABLE invoices (id bigint PRIMARY KEY, customer_id bigint NOT NULL, amount numeric NOT NULL);
  INSERT INTO invoices SELECT g, g % 5000, g % 100 FROM generate_series(1, 100000) g; ANALYZE;"
for c in $(seq 1 30); do
  kubectl -n shop exec deploy/db -- psql -U postgres -d shop -qc "SELECT sum(amount) FROM invoices WHERE customer_id = $c" >/dev/null
done
"$HELM" install optischema "$ROOT/charts/optischema" -n optischema-system --create-namespace --wait \
  --set image.registry= --set image.repository=optischema-operator --set image.tag=e2e --set image.pullPolicy=Never
kubectl -n shop apply -f - <<'YAML'
apiVersion: optischema.io/v1alpha1
kind: PostgresTarget
metadata: {name: shop}
spec:
  connection: {host: db.shop.svc, database: shop, sslmode: disable, credentialsSecret: {name: shop-db}}
  analysis: {minCalls: 2}
  sandbox: {enabled: false}
  maintenanceWindows: [{days: [Sun], start: "02:00", duration: 2h}]
YAML
kubectl -n shop wait --for=condition=Ready pgt/shop --timeout=300s
for _ in $(seq 1 60); do
  [ -n "$(kubectl -n shop get trec -o name)" ] && break
  sleep 5
done
kubectl -n shop get pgt,trec
[ -n "$(kubectl -n shop get trec -o name)" ] || { echo "e2e-kind: no recommendation" >&2; exit 1; }
echo "e2e-kind: passed"
