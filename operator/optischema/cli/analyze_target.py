"""``optischema analyze-target``: the analysis Job's entry point — one analysis of a PostgresTarget, recorded in its
status and its TuningRecommendations, exactly as the operator's inline runner does it."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from optischema.flows.target import analyse_and_record, check_target, utc_now
from optischema.kube.client import Kube, current_namespace, load_config
from optischema.lifecycle import target as lifecycle
from optischema.settings import Settings


def add_parser(commands: Any) -> None:
    parser = commands.add_parser("analyze-target", help="analyse a PostgresTarget and record the result (Job mode)")
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--target", required=True)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    load_config()
    settings = Settings()
    kube = Kube(
        allowed_secrets=settings.allowed_secrets,
        reserved_secrets=settings.reserved_secrets,
        host_addresses=settings.host_addresses,
    )
    return asyncio.run(_run(kube, args.namespace, args.target, settings))


async def _run(kube: Kube, namespace: str, name: str, settings: Settings) -> int:
    target = await kube.get("postgrestargets", namespace, name)
    run = lifecycle.read(target.get("status"))  # as the operator began it when it created this Job
    if run.start_time is None:
        run = lifecycle.started(run, utc_now(), job=run.job, requested=run.requested)
    check = await check_target(namespace, target["spec"], kube.read_secret, clusters=kube.clusters)
    if not check.ready:
        failure = lifecycle.failed(run, utc_now(), f"{check.reason}: {check.message}")
        await kube.patch_status("postgrestargets", namespace, name, lifecycle.status_patch(failure))
        print(f"optischema analyze-target: {check.reason}: {check.message}", file=sys.stderr)
        return 1
    ok, message = await analyse_and_record(
        kube,
        target,
        check,
        sample_seconds=settings.sample_seconds,
        semaphore=asyncio.Semaphore(1),
        run=run,
        operator_namespace=settings.operator_namespace or current_namespace(),
        llm_cluster_budget=settings.llm_cluster_daily_token_budget,
    )
    print(message, file=sys.stdout if ok else sys.stderr)
    return 0 if ok else 1
