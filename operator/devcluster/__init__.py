"""Local stand-ins for infrastructure, started as real processes: PostgreSQL clusters (and, later, the control plane).

Used by the tests, ``make demo`` and ``make cluster-up``, the way controller-runtime's envtest is used; the
operator package never imports it.
"""

from optischema.postgres.local import LocalPostgres, PostgresStartError

__all__ = ["LocalPostgres", "PostgresStartError"]
