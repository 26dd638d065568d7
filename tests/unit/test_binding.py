"""Parameters bound from statistics when a statement has no sample (table-driven)."""

from __future__ import annotations

import pytest

from optischema.analysis.binding import bind_from_statistics
from optischema.analysis.snapshot import Column, Table
from optischema.analysis.statements import Catalog

CATALOG = Catalog({("public", "drivers"): {"id", "name", "license_no"}, ("public", "trips"): {"id", "state", "km"}})
TABLES = {
    ("public", "drivers"): Table(
        "public", "drivers", 1500, 0, (Column("license_no", "text", n_distinct=-1, histogram_middle="DL437815-765"),)
    ),
    ("public", "trips"): Table(
        "public",
        "trips",
        240_000,
        0,
        (
            Column(
                "state", "text", most_common_vals=("done", "active", "planned"), most_common_freqs=(0.97, 0.02, 0.01)
            ),
        ),
    ),
}


@pytest.mark.parametrize(
    ("query", "rows_per_call", "bound"),
    [
        pytest.param(
            "SELECT id FROM drivers WHERE license_no LIKE $1 || lpad(($2 * $3 % $4)::text, $5, $6) || $7",
            1.0,
            "SELECT id FROM drivers WHERE license_no LIKE 'DL4378%'",
            id="a concatenated LIKE pattern becomes a prefix of a typical value",
        ),
        pytest.param(
            "SELECT id FROM drivers WHERE license_no LIKE $1",
            1500.0,
            None,
            id="a LIKE returning the whole table is no prefix search",
        ),
        pytest.param(
            "SELECT t.id FROM trips t WHERE t.state = $1 AND t.km > $2",
            2000.0,
            "SELECT t.id FROM trips t WHERE t.state = 'planned' AND t.km > $2",
            id="few rows per call on a dominated column: the rare value whose frequency fits",
        ),
        pytest.param(
            "SELECT id FROM trips WHERE state = $1",
            200_000.0,
            None,
            id="as many rows as the dominant value returns: left generic",
        ),
        pytest.param("SELECT id FROM trips WHERE id = $1", 1.0, None, id="no statistics to go on: left generic"),
    ],
)
def test_bind(query: str, rows_per_call: float, bound: str | None) -> None:
    assert bind_from_statistics(query, CATALOG, TABLES, rows_per_call) == bound
