"""Orchestration of analyse, sandbox and apply; never imports kopf."""
