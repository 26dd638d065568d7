"""A speed-up measured in a sample sandbox is recorded and shown for what it is: a lower bound of production's
(analysis/scaling.py), on a real sandbox pod of the embedded cluster and through the real kubectl plugin."""

from __future__ import annotations

from devcluster.cluster import Cluster
from optischema.analysis import scaling

from .conftest import apply, operators, secret, target
from .test_report import plugin
from .test_sandbox import benchmarked


def test_a_sample_s_speed_up_is_recorded_and_shown_as_a_lower_bound(
    cluster: Cluster, namespace: str, database: str
) -> None:
    with operators(cluster, namespace, "trust") as start:
        apply(cluster, secret(namespace, "pw"))
        apply(cluster, target(namespace, database, sandbox={"dataMode": "sample", "samplePercent": 20}))
        start()
        found = benchmarked(cluster, namespace)
        bench = found[0]["status"]["benchmark"]
        assert bench["speedup"] > 1, bench  # the index on customer_id replaces a scan of invoices
        assert (bench["dataMode"], bench["samplePercent"], bench["speedupIsLowerBound"]) == ("sample", 20, True)
        shown = plugin(cluster, "-n", namespace, "show", found[0]["metadata"]["name"])
        line = next(x for x in shown.splitlines() if x.startswith("speed-up: "))
        assert f"at least {bench['speedup']:g}× (measured on a 20 % sample: a lower bound" in line
        assert f"about {scaling.scan_bound_estimate(bench['speedup'], 0.2):g}× at its real size" in line
