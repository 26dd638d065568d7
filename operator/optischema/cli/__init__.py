"""The ``optischema`` command and the ``kubectl-optischema`` plugin."""
