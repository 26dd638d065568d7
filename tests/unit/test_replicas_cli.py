"""Replicas and the statistics age reach the analysis: from ``optischema analyze`` (``--replica``,
``--unused-min-age``) and from a PostgresTarget (each replica reached like the primary, at its own host and port)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from optischema.api.target import PostgresTargetSpec
from optischema.cli.main import build_parser
from optischema.flows.target import replica_params
from optischema.postgres.connect import ConnectParams


def parse(*argv: str) -> object:
    return build_parser().parse_args(["analyze", "--dsn", "postgresql://u@db/shop", *argv])


def test_defaults_no_replica_and_fourteen_days() -> None:
    args = parse()
    assert args.replica == []  # type: ignore[attr-defined]
    assert args.unused_min_age == timedelta(days=14)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgresql://u@replica-1:5433/shop", "postgresql://u@replica-1:5433/shop"),
        ("host=replica-1 port=5433 dbname=shop", "postgresql://?host=replica-1&port=5433&dbname=shop"),
        ("host='replica 1' dbname=shop", "postgresql://?host=replica+1&dbname=shop"),  # encoded: no key leaks out
    ],
)
def test_replicas_are_connection_strings(given: str, expected: str) -> None:
    args = parse("--replica", given, "--unused-min-age", "36h")
    assert args.replica == [expected]  # type: ignore[attr-defined]
    assert args.unused_min_age == timedelta(hours=36)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("flag", "value", "words"),
    [
        ("--replica", "replica-1", "must be a connection string"),
        ("--replica", "host='unterminated", "--replica: cannot read the connection string"),
        ("--unused-min-age", "two weeks", "is not a duration"),
        ("--unused-min-age", "-1d", "is not a duration"),
    ],
)
def test_bad_values_are_refused_naming_the_flag(
    flag: str, value: str, words: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        parse(f"{flag}={value}")  # one word: argparse would read a leading "-" as another option
    err = capsys.readouterr().err
    assert flag in err
    assert words in err


def test_a_targets_replicas_are_reached_like_its_primary() -> None:
    spec = PostgresTargetSpec.model_validate(
        {
            "connection": {
                "host": "db",
                "port": 6432,
                "database": "shop",
                "credentialsSecret": {"name": "s"},
                "sslmode": "verify-full",
                "replicas": [{"host": "replica-1"}, {"host": "10.0.0.9", "port": 5433}],
            }
        }
    )
    primary = ConnectParams(host="db", port=6432, user="u", password="p", database="shop", ca_pem="PEM")
    replicas = replica_params(spec, primary)
    assert [(r.host, r.port) for r in replicas] == [("replica-1", 6432), ("10.0.0.9", 5433)]
    for replica in replicas:
        assert (replica.user, replica.password, replica.database, replica.sslmode, replica.ca_pem) == (
            "u",
            "p",
            "shop",
            "verify-full",
            "PEM",
        )
