"""The only asyncpg user: read-only collection, the HypoPG planner, and the guarded execution of changes."""
