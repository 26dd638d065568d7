"""The operator measures what HypoPG cannot simulate: with the target's sandbox enabled, the analysis builds a GIN
candidate in a sandbox pod (the benchmarks' provider) and proposes it with its measured gain."""

from __future__ import annotations

import json

import pytest

from devcluster.cluster import Cluster

from .conftest import apply, get, operators, secret, target, wait_for
from .test_sandbox import run_sql, sandbox_objects

pytestmark = pytest.mark.k8s


def test_an_analysis_measures_a_gin_candidate_in_a_sandbox_pod(cluster: Cluster, namespace: str, database: str) -> None:
    run_sql(
        database,
        "CREATE TABLE docs (id bigserial PRIMARY KEY, title text NOT NULL, meta jsonb NOT NULL)",
        "INSERT INTO docs (title, meta) SELECT 'title ' || g, jsonb_build_object('kind', 'k' || (g % 1000), 'n', g) "
        "FROM generate_series(1, 50000) g",
        "ANALYZE docs",
        *[f"""SELECT id, title FROM docs WHERE meta @> '{{"kind": "k{n}"}}'""" for n in range(12)],
    )
    with operators(cluster, namespace, "measure") as start:
        apply(cluster, secret(namespace, "pw"))
        apply(cluster, target(namespace, database, sandbox={"dataMode": "sample", "samplePercent": 100}))
        start()
        try:
            found = wait_for(
                lambda: [
                    i
                    for i in get(cluster, "tuningrecommendations", "-n", namespace)["items"]
                    if i["spec"].get("source") == "measured"
                ],
                timeout=180,
                what="a recommendation priced by measuring",
            )
        except AssertionError as error:  # say why: the analysis's notes
            status = get(cluster, "postgrestarget", "shop", "-n", namespace).get("status") or {}
            raise AssertionError(f"{error}; lastAnalysis: {json.dumps(status.get('lastAnalysis'))}") from error
        spec = found[0]["spec"]
        assert spec["change"]["index"]["method"] == "gin", json.dumps(spec)
        assert spec["change"]["index"]["columns"][0]["opclass"] == "jsonb_path_ops", json.dumps(spec)
        statement = spec["evidence"]["statements"][0]
        assert statement["measuredAfterMs"] < 0.5 * statement["measuredBeforeMs"], json.dumps(spec)
        # The analysis's sandbox pod went with the analysis (the benchmark's may come and go meanwhile).
        wait_for(
            lambda: not [o for o in sandbox_objects(cluster, namespace) if "-measure-sbx-" in o],
            timeout=60,
            what="the analysis's sandbox removed",
        )
