"""Pure workload analysis: fingerprints, index candidates, what-if selection and findings (no I/O, no kopf)."""
