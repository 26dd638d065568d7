"""The plans a reviewer reads beside each proposed index: generic EXPLAINs of its top statements without and with
the hypothetical indexes (HypoPG), once the selection is final.

"Before" is the database as it is; "after" has every chosen index HypoPG can simulate in place — the configuration
the evidence's ``costAfter`` was priced with, so the plan and the figure agree. Statements are planned from their
normalised text (``$n`` parameters, never samples or values bound from statistics): no plan carries a value from
the data. Indexes HypoPG cannot simulate (GIN, GiST) are not in the after plan here; their after plan comes from
the sandbox where they were measured (``advice.attach_plans``' ``measured_after``).

A plan that cannot be made is left out (the recommendation stands without it); nothing here fails an analysis.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import asyncpg

from optischema.analysis.advice import HYPOTHETICAL_METHODS, PlanPair
from optischema.api.index import IndexDefinition

from .planner import HypoPGPlanner


async def before_after(
    planner: HypoPGPlanner, targets: Mapping[str, str], chosen: Sequence[IndexDefinition]
) -> dict[str, PlanPair]:
    """Statement key → its plans without and with ``chosen`` (those HypoPG simulates); ``targets`` maps each
    statement key to its normalised text (``advice.plan_targets``)."""
    simulated = [index for index in chosen if index.method in HYPOTHETICAL_METHODS]
    pairs: dict[str, PlanPair] = {}
    try:
        before = {key: await planner.explain_generic(query, []) for key, query in targets.items()}
        after = {key: await planner.explain_generic(query, simulated) for key, query in targets.items()}
    except asyncpg.PostgresError:
        return pairs  # HypoPG refused an index it was given before: the recommendations go without plans
    for key in targets:
        pairs[key] = PlanPair(before[key], after[key] if simulated else None)
    return pairs
