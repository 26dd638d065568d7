"""Whether an index no scan used may be called *unused*: judged over every instance that serves the database.

``idx_scan`` counts scans on the server that ran them. A read replica's queries never reach the primary's counters,
so an index that is idle on the primary may be the one a replica's reports live on; and counters that were reset
(or a server that restarted) yesterday say nothing about the monthly job. So a drop of an unused index is proposed
only when **no instance** (the primary and every replica, or every instance of a CloudNativePG ``Cluster``) counted
a scan of it, **every instance could be read**, and each has collected statistics for at least ``min_age``: the
youngest instance decides. Anything less is partial evidence, and partial evidence keeps the index.

Pure: the collector (:mod:`optischema.postgres.replicas`) or another source (a CloudNativePG Cluster's instances)
builds one :class:`InstanceUsage` per instance; :func:`judge` decides for one index and :func:`kept_notes` says,
for the analysis's notes, why indexes idle on the primary were kept.

Usage, e.g. for a Cluster's instances::

    instances = [
        InstanceUsage("cluster-1", scans={("public", "orders_status"): 0}, collecting_since=since_1, primary=True),
        InstanceUsage("cluster-2", scans={("public", "orders_status"): 12}, collecting_since=since_2),
        InstanceUsage.unreachable("cluster-3", "connection refused"),
    ]
    evidence = UsageEvidence(tuple(instances), now=now, min_age=timedelta(days=14))
    verdict = evidence.judge(("public", "orders_status"))  # verdict.unused is False; verdict.reason says why
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from .snapshot import Snapshot

#: The default for how long statistics must have been collected, on every instance, before an index no scan used
#: is proposed for dropping (``spec.analysis.unusedIndexMinStatisticsAge``): long enough to see weekly jobs twice.
DEFAULT_MIN_AGE = timedelta(days=14)
#: Indexes named in one note before "and N more".
NAMED_IN_NOTE = 5

IndexKey = tuple[str, str]
"""(schema, index name): index names are unique within a schema."""


@dataclass(frozen=True, slots=True)
class InstanceUsage:
    """One instance's index usage counters, as read from it.

    ``scans`` maps (schema, index name) to ``pg_stat_user_indexes.idx_scan`` and must list every index the instance
    has: an index missing here is *unknown* on this instance (not yet replayed, or not read), which keeps it.
    ``collecting_since`` is when its counters started counting: :func:`collecting_since` of ``stats_reset`` and
    ``pg_postmaster_start_time()``. ``error`` says why the instance could not be read (then ``scans`` is empty).
    """

    name: str
    scans: Mapping[IndexKey, int] = field(default_factory=dict)
    collecting_since: datetime | None = None
    primary: bool = False
    error: str | None = None

    @classmethod
    def unreachable(cls, name: str, error: str, *, primary: bool = False) -> InstanceUsage:
        """An instance that could not be read: every index stays, and a note names it."""
        return cls(name=name, primary=primary, error=error)


def collecting_since(stats_reset: datetime | None, started: datetime | None) -> datetime | None:
    """When an instance's counters began: the later of the database's last ``stats_reset`` (NULL when never reset)
    and the server's start (``pg_postmaster_start_time()``), since a restart may lose them (a crash always does)."""
    moments = [m for m in (stats_reset, started) if m is not None]
    return max(moments) if moments else None


def primary_usage(snapshot: Snapshot, name: str) -> InstanceUsage:
    """The primary's usage, from the collector's snapshot (every index it read, ``stats_reset`` and start)."""
    scans = {(index.schema, index.name): index.scans for index in snapshot.indexes}
    since = collecting_since(snapshot.server.stats_reset, snapshot.server.started)
    return InstanceUsage(name, scans, since, primary=True)


@dataclass(frozen=True, slots=True)
class Verdict:
    """The decision for one index: ``unused`` only on full evidence; ``reason`` completes "no scan has used it: …"
    when unused, and says why it is kept otherwise."""

    unused: bool
    reason: str
    cause: str = "unused"  # kept: "used", "unreachable", "young", "unknown"


@dataclass(frozen=True, slots=True)
class UsageEvidence:
    """Every instance of the database, read at ``now``, and the statistics age a drop needs."""

    instances: tuple[InstanceUsage, ...]
    now: datetime
    min_age: timedelta = DEFAULT_MIN_AGE

    def judge(self, index: IndexKey) -> Verdict:
        """Unused only when every instance was read, none counted a scan, and the youngest counters are at least
        ``min_age`` old."""
        return judge(index, self.instances, now=self.now, min_age=self.min_age)


def judge(index: IndexKey, instances: Sequence[InstanceUsage], *, now: datetime, min_age: timedelta) -> Verdict:
    """See :class:`UsageEvidence`. Checks in order of what a person should fix first: an instance that could not
    be read, an instance that used the index, an instance that does not know it, then the statistics' age."""
    if not instances:
        return Verdict(False, "no instance was read", "unknown")
    unreachable = [i for i in instances if i.error is not None]
    if unreachable:
        first = unreachable[0]
        return Verdict(False, f"{_role(first)} could not be read ({first.error})", "unreachable")
    used = [(i, i.scans[index]) for i in instances if i.scans.get(index, 0) > 0]
    if used:
        where = ", ".join(f"{n} scans on {_role(i)}" for i, n in used)
        return Verdict(False, f"used: {where}", "used")
    unknown = [i for i in instances if index not in i.scans]
    if unknown:
        return Verdict(False, f"{_role(unknown[0])} does not have it (not replayed yet?)", "unknown")
    undated = [i for i in instances if i.collecting_since is None]
    if undated:
        return Verdict(False, f"when the statistics of {_role(undated[0])} began is unknown", "unknown")
    youngest = max(instances, key=lambda i: i.collecting_since or now)
    assert youngest.collecting_since is not None
    age = now - youngest.collecting_since
    if age < min_age:
        return Verdict(
            False,
            f"statistics on {_role(youngest)} cover only {_span(age)} (since "
            f"{youngest.collecting_since.astimezone(UTC):%Y-%m-%d %H:%M} UTC), less than the {_span(min_age)} required",
            "young",
        )
    return Verdict(True, f"none on {_places(instances)} in {_span(age)} of statistics")


def kept_notes(evidence: UsageEvidence, idle_on_primary: Iterable[IndexKey]) -> list[str]:
    """For the analysis's notes: the indexes no scan used on the primary that are *not* proposed for dropping,
    one note per reason, naming the first few (an index a replica used is named with its scans)."""
    grouped: dict[str, list[str]] = {}
    for key in idle_on_primary:
        verdict = evidence.judge(key)
        if verdict.unused:
            continue
        name = f"{key[0]}.{key[1]}"
        if verdict.cause == "used":
            grouped.setdefault("another instance used them", []).append(
                f"{name} ({verdict.reason.removeprefix('used: ')})"
            )
        else:
            grouped.setdefault(verdict.reason, []).append(name)
    notes = []
    for reason, names in grouped.items():
        shown = ", ".join(names[:NAMED_IN_NOTE])
        if len(names) > NAMED_IN_NOTE:
            shown += f" and {len(names) - NAMED_IN_NOTE} more"
        notes.append(f"{len(names)} index(es) with no scan on the primary kept (no drop proposed): {reason}: {shown}")
    return notes


def instance_notes(evidence: UsageEvidence) -> list[str]:
    """One note per instance that could not be read: no index is dropped as unused while it cannot be."""
    return [
        f"{_role(i)} could not be read for index usage ({i.error}): no index is proposed for dropping as unused "
        "until it can"
        for i in evidence.instances
        if i.error is not None
    ]


def _role(instance: InstanceUsage) -> str:
    return f"the primary {instance.name}" if instance.primary else f"replica {instance.name}"


def _places(instances: Sequence[InstanceUsage]) -> str:
    """``the primary and 2 replicas (a, b)`` — where the evidence was read."""
    primaries = [i for i in instances if i.primary]
    replicas = [i for i in instances if not i.primary]
    parts = []
    if primaries:
        parts.append("the primary" if len(primaries) == 1 else f"{len(primaries)} primaries")
    if replicas:
        parts.append(
            f"{len(replicas)} replica{'s' if len(replicas) > 1 else ''} ({', '.join(i.name for i in replicas)})"
        )
    return " and ".join(parts)


def _span(age: timedelta) -> str:
    """``21 days``, ``1.5 days``, ``3.2 hours``, ``40 minutes``: what a person reads at a glance."""
    seconds = age.total_seconds()
    if seconds >= 2 * 86400:
        return f"{seconds / 86400:.0f} days"
    if seconds >= 86400:
        return f"{seconds / 86400:.1f} days"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} hours"
    return f"{max(seconds, 0) / 60:.0f} minutes"
