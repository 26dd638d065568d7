"""Reports: what tuning bought, from the custom resources and the statement history (pure: no I/O)."""
