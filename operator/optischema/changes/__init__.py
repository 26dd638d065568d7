"""Pure change logic: DDL rendering and rollback, maintenance windows (``now`` passed in), regression verdicts."""
