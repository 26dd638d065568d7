"""The analysis's own what-if statements, which pg_stat_statements (track = all) records like any other, are never
taken for the application's workload; a PREPARE of the application's is."""

from __future__ import annotations

from optischema.analysis.statements import Catalog, parse_statement

CATALOG = Catalog({("public", "t"): {"id", "a"}})


def test_the_what_if_planners_prepare_is_skipped() -> None:
    parsed = parse_statement("PREPARE optischema_whatif(unknown, text) AS SELECT id FROM t WHERE a = $1", CATALOG)
    assert parsed.skip_reason is not None
    assert "own what-if planning" in parsed.skip_reason
    assert parsed.usages == {}


def test_an_applications_prepare_is_analysed() -> None:
    parsed = parse_statement("PREPARE by_a(int) AS SELECT id FROM t WHERE a = $1", CATALOG)
    assert parsed.skip_reason is None
    assert parsed.usages[("public", "t")].equality == ["a"]
