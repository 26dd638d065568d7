"""``spec.connection.replicas`` and ``spec.analysis.unusedIndexMinStatisticsAge``: a replica is a host and a port,
nothing else (the same hostile strings ``spec.connection.host`` refuses are refused here, naming the replica), and
the statistics age is a duration within its bounds."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from optischema.api import describe
from optischema.api.durations import parse_duration
from optischema.api.target import PostgresTargetSpec

from .test_connection_host import HOSTS_ACCEPTED, HOSTS_REFUSED


def spec(replicas: list[dict[str, Any]], **analysis: Any) -> dict[str, Any]:
    connection = {"host": "db", "database": "shop", "credentialsSecret": {"name": "s"}, "replicas": replicas}
    return {"connection": connection, "analysis": analysis}


@pytest.mark.parametrize(("host", "why"), HOSTS_REFUSED, ids=[why for _, why in HOSTS_REFUSED])
def test_a_hostile_replica_host_is_refused_naming_the_replica(host: str, why: str) -> None:
    with pytest.raises(ValidationError) as caught:
        PostgresTargetSpec.model_validate(spec([{"host": "replica-1"}, {"host": host}]))
    messages = describe(caught.value, "spec")
    assert any(m.startswith("spec.connection.replicas[1].host: ") for m in messages), (why, messages)


@pytest.mark.parametrize("host", HOSTS_ACCEPTED)
def test_a_host_name_or_address_is_a_replica(host: str) -> None:
    parsed = PostgresTargetSpec.model_validate(spec([{"host": host, "port": 5433}]))
    assert [(r.host, r.port) for r in parsed.connection.replicas] == [(host, 5433)]


@pytest.mark.parametrize(
    ("replica", "field"),
    [
        ({"host": "r", "port": 0}, "spec.connection.replicas[0].port"),
        ({"host": "r", "port": 65536}, "spec.connection.replicas[0].port"),
        ({"host": "r", "user": "evil"}, "spec.connection.replicas[0].user"),  # no extra field smuggles options
        ({"port": 5432}, "spec.connection.replicas[0].host"),
    ],
)
def test_a_replica_is_a_host_and_a_port_only(replica: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        PostgresTargetSpec.model_validate(spec([replica]))
    assert any(m.startswith(f"{field}: ") for m in describe(caught.value, "spec")), describe(caught.value, "spec")


def test_at_most_sixteen_replicas() -> None:
    with pytest.raises(ValidationError) as caught:
        PostgresTargetSpec.model_validate(spec([{"host": f"r{n}"} for n in range(17)]))
    assert any(m.startswith("spec.connection.replicas: ") for m in describe(caught.value, "spec"))


def test_the_statistics_age_defaults_to_fourteen_days_and_is_bounded() -> None:
    default = PostgresTargetSpec.model_validate(spec([]))
    assert parse_duration(default.analysis.unused_index_min_statistics_age).days == 14
    assert default.connection.replicas == []
    PostgresTargetSpec.model_validate(spec([], unusedIndexMinStatisticsAge="0s"))
    for bad in ("367d", "two weeks", "-1d"):
        with pytest.raises(ValidationError) as caught:
            PostgresTargetSpec.model_validate(spec([], unusedIndexMinStatisticsAge=bad))
        messages = describe(caught.value, "spec")
        assert any(m.startswith("spec.analysis.unusedIndexMinStatisticsAge: ") for m in messages), messages
