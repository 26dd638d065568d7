"""``optischema run``: the operator (kopf underneath)."""

from __future__ import annotations

import argparse
import secrets
from typing import Any

from optischema.settings import Settings


def add_parser(commands: Any) -> None:
    parser = commands.add_parser("run", help="run the operator", description="Run the operator until stopped.")
    parser.add_argument("--namespace", "-n", action="append", default=[], help="watch this namespace (repeatable)")
    parser.add_argument("--all-namespaces", action="store_true", help="watch the whole cluster")
    parser.add_argument("--peering", action="store_true", help="use kopf peering (several replicas, one active)")
    parser.add_argument("--verbose", action="store_true", help="debug logging (kopf's included)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from optischema.handlers.operator import run_operator
    from optischema.telemetry import configure

    settings = Settings()
    namespaces = args.namespace or settings.namespaces
    configure(settings.log_format, settings.metrics_port, verbose=args.verbose)
    run_operator(
        namespaces=namespaces,
        clusterwide=args.all_namespaces or not namespaces,
        standalone=not args.peering and settings.standalone,
        peering_name=settings.peering_name,
        liveness_endpoint=settings.liveness_endpoint,
        priority=settings.priority or secrets.randbelow(1_000_000) + 1,
    )
    return 0
