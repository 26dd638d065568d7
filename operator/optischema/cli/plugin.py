"""``kubectl optischema``: list, show, approve, reject, analyze, export, status, report.

RBAC each command needs (roles in manifests/rbac/): ``list``, ``show``, ``export`` and ``status`` read —
``optischema-viewer``; ``approve`` and ``reject`` patch a recommendation's spec — ``optischema-approver`` (the
operator's admission webhook records who decided); ``analyze`` annotates the target — ``patch`` on
postgrestargets (platform administrators); ``report`` reads the resources and the statement history
(``statementhistories``), ``report --scheduled`` the last scheduled report (``tuningreports``): both are in
``optischema-viewer``, which needs no right on ConfigMaps.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import textwrap
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import yaml

from optischema.analysis import scaling
from optischema.api.durations import parse_duration
from optischema.flows import reports
from optischema.kube.client import ApiException, Kube, current_namespace, load_config
from optischema.reports.render import FORMATS, render

PLURALS = {"trec": "tuningrecommendations", "pgt": "postgrestargets", "ixc": "indexchanges"}


class PluginError(Exception):
    pass


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kubectl optischema", description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--namespace", help="namespace (default: the kubeconfig context's)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    listing = commands.add_parser("list", help="recommendations with improvement and phase")
    listing.add_argument("--target", help="only this PostgresTarget's")
    commands.add_parser("show", help="evidence, SQL, rollback and benchmark of one").add_argument("name")
    approve = commands.add_parser("approve", help="approve a recommendation")
    approve.add_argument("name")
    approve.add_argument("--reason", default="approved with kubectl optischema")
    approve.add_argument("--immediate", action="store_true", help="apply now if the target's policy allows it")
    reject = commands.add_parser("reject", help="reject a recommendation (a reason is required)")
    reject.add_argument("name")
    reject.add_argument("--reason", required=True)
    commands.add_parser("analyze", help="analyse a target now").add_argument("target")
    commands.add_parser("export", help="an IndexChange for a Git pull request").add_argument("name")
    commands.add_parser("status", help="windows, last analysis and pending work of a target").add_argument("target")
    report = commands.add_parser("report", help="what tuning bought: workload, changes, gains (md, html or json)")
    report.add_argument("target")
    report.add_argument("--since", default="30d", type=_since, help="how far back, e.g. 7d, 12h (default 30d)")
    report.add_argument("--format", choices=FORMATS, default="md", help="md (default), html or json")
    report.add_argument("-o", "--output", help="write to this file (default: standard output)")
    report.add_argument(
        "--scheduled", action="store_true", help="the last scheduled report as stored (its TuningReport)"
    )
    return parser


def _since(text: str) -> timedelta:
    try:
        return parse_duration(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"--since: {error}") from error


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        load_config()
        namespace = args.namespace or current_namespace()
        kube = Kube()
        output = asyncio.run(COMMANDS[args.command](kube, namespace, args))
    except PluginError as error:
        print(f"kubectl optischema {args.command}: {error}", file=sys.stderr)
        return 1
    print(output, end="" if output.endswith("\n") else "\n")
    return 0


def _explain(error: ApiException, action: str, namespace: str) -> PluginError:
    if error.status == 403:
        return PluginError(f"forbidden: you may not {action} in namespace {namespace} (see the RBAC in the README)")
    if error.status == 404:
        return PluginError(f"not found in namespace {namespace}")
    try:
        message = json.loads(error.body or "{}").get("message") or error.reason
    except ValueError:
        message = error.reason
    return PluginError(str(message))


async def _get(kube: Kube, plural: str, namespace: str, name: str) -> dict[str, Any]:
    try:
        return await kube.get(plural, namespace, name)
    except LookupError as error:
        raise PluginError(f"{plural[:-1]} {name} not found in namespace {namespace}") from error
    except ApiException as error:
        raise _explain(error, f"read {plural}", namespace) from error


async def list_(kube: Kube, namespace: str, args: argparse.Namespace) -> str:
    selector = f"optischema.io/target={args.target}" if args.target else ""
    try:
        items = await kube.list("tuningrecommendations", namespace, selector)
    except ApiException as error:
        raise _explain(error, "list recommendations", namespace) from error
    rows = [("NAME", "TARGET", "KIND", "TABLE", "ESTIMATED", "MEASURED", "APPROVAL", "PHASE")]
    for item in items:
        spec, status = item["spec"], item.get("status") or {}
        change = spec["change"]
        table = (change.get("index") or change.get("analyze") or change.get("maintenance") or {}).get("table", "")
        estimated = spec.get("evidence", {}).get("estimatedImprovementPercent")
        measured = (status.get("benchmark") or {}).get("improvementPercent")
        rows.append(
            (
                item["metadata"]["name"],
                spec["targetRef"]["name"],
                spec["kind"],
                table,
                "" if estimated is None else f"{estimated:.1f}%",
                "" if measured is None else f"{measured:.1f}%",
                spec.get("approval", {}).get("state", "Pending"),
                status.get("phase", ""),
            )
        )
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in rows)


async def show(kube: Kube, namespace: str, args: argparse.Namespace) -> str:
    try:
        item = await _get(kube, "tuningrecommendations", namespace, args.name)
    except PluginError:
        try:  # a target's name: its status, the LLM advisor's rejections included
            return await status(kube, namespace, argparse.Namespace(target=args.name))
        except PluginError:
            pass
        raise
    return render_show(item)


def render_show(item: dict[str, Any]) -> str:
    """One recommendation for a reviewer: decision, SQL and rollback, rationale, the statements helped with their
    plans before and after, the maintenance figures, and the sandbox benchmark."""
    spec, state = item["spec"], item.get("status") or {}
    approval = spec.get("approval", {})
    lines = [
        f"{item['metadata']['name']}  ({spec['kind']} for {spec['targetRef']['name']}, risk {spec.get('risk')}, "
        f"source {spec.get('source')}" + (f", model {spec['model']}" if spec.get("model") else "") + ")",
        f"approval: {approval.get('state')}"
        + (f" by {approval['decidedBy']}" if approval.get("decidedBy") else "")
        + (f" — {approval['reason']}" if approval.get("reason") else ""),
        f"phase: {state.get('phase', '')}",
        "",
        "SQL:",
        textwrap.indent(spec["sql"], "  "),
        "rollback:",
        textwrap.indent(spec.get("rollbackSql") or "(none)", "  "),
        "",
        "why:",
        textwrap.indent(textwrap.fill(spec.get("rationale", ""), 100), "  "),
    ]
    evidence = spec.get("evidence", {})
    if evidence.get("statements"):
        lines += ["", "statements helped (calls, cost before → after):"]
        for s in evidence["statements"]:
            lines.append(
                f"  {s.get('calls', 0):>8}  {s.get('costBefore')} → {s.get('costAfter')}  {s.get('query', '')[:90]}"
            )
            for label, field in (("plan before", "planBefore"), ("plan after", "planAfter")):
                if s.get(field):
                    lines += [f"            {label}:", textwrap.indent(s[field], " " * 14)]
    if evidence.get("maintenance"):
        lines += ["", "figures:"]
        lines += [f"  {key}: {value}" for key, value in evidence["maintenance"].items() if value is not None]
    if state.get("benchmark"):
        lines += ["", "benchmark:", textwrap.indent(yaml.safe_dump(state["benchmark"], sort_keys=False), "  ")]
        trust = scaling.describe(state["benchmark"])
        if trust:
            lines += [f"speed-up: {trust}"]
    return "\n".join(lines)


async def _decide(kube: Kube, namespace: str, name: str, approval: dict[str, Any], verb: str) -> str:
    await _get(kube, "tuningrecommendations", namespace, name)
    try:
        await kube.patch("tuningrecommendations", namespace, name, {"spec": {"approval": approval}})
    except ApiException as error:
        raise _explain(error, f"{verb} recommendations", namespace) from error
    decided = (await _get(kube, "tuningrecommendations", namespace, name))["spec"]["approval"]
    who = decided.get("decidedBy") or "(not recorded: the operator's admission webhook is not running)"
    return f"tuningrecommendation/{name} {decided['state'].lower()} by {who}"


async def approve(kube: Kube, namespace: str, args: argparse.Namespace) -> str:
    approval = {"state": "Approved", "reason": args.reason, "when": "immediate" if args.immediate else "nextWindow"}
    return await _decide(kube, namespace, args.name, approval, "approve")


async def reject(kube: Kube, namespace: str, args: argparse.Namespace) -> str:
    return await _decide(kube, namespace, args.name, {"state": "Rejected", "reason": args.reason}, "reject")


async def analyze(kube: Kube, namespace: str, args: argparse.Namespace) -> str:
    await _get(kube, "postgrestargets", namespace, args.target)
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    try:
        await kube.patch(
            "postgrestargets",
            namespace,
            args.target,
            {"metadata": {"annotations": {"optischema.io/analyze-requested": stamp}}},
        )
    except ApiException as error:
        raise _explain(error, "request analyses of postgrestargets", namespace) from error
    return f"postgrestarget/{args.target}: analysis requested ({stamp})"


async def export(kube: Kube, namespace: str, args: argparse.Namespace) -> str:
    item = await _get(kube, "tuningrecommendations", namespace, args.name)
    spec = item["spec"]
    operations = {"createIndex": "create", "dropIndex": "drop", "reindex": "reindex"}
    if spec["kind"] not in operations:
        raise PluginError(f"only index recommendations become IndexChanges ({args.name} is {spec['kind']})")
    try:
        target = await kube.get("postgrestargets", namespace, spec["targetRef"]["name"])
    except LookupError:
        target = {}
    identity = ((target.get("status") or {}).get("database") or {}).get("systemIdentifier")
    change = {
        "apiVersion": item["apiVersion"],
        "kind": "IndexChange",
        "metadata": {"name": args.name, "namespace": namespace},
        "spec": {
            "targetRef": spec["targetRef"],
            "operation": operations[spec["kind"]],
            "index": spec["change"]["index"],
            "schedule": "nextWindow",
            **({"systemIdentifier": identity} if identity else {}),
        },
    }
    header = (
        f"# From {args.name}: {spec['sql']}\n# Review, commit, and let GitOps apply it; the operator renders the SQL.\n"
    )
    return header + yaml.safe_dump(change, sort_keys=False)


async def status(kube: Kube, namespace: str, args: argparse.Namespace) -> str:
    target = await _get(kube, "postgrestargets", namespace, args.target)
    spec, state = target["spec"], target.get("status") or {}
    lines = [
        f"postgrestarget/{args.target}: {spec['connection']['host']}/{spec['connection']['database']}"
        + ("  (suspended)" if spec.get("suspend") else "")
    ]
    for condition in state.get("conditions", []):
        lines.append(
            f"  {condition['type']}: {condition['status']} ({condition['reason']}) {condition.get('message', '')}"
        )
    database = state.get("database") or {}
    if database:
        lines.append(
            f"  PostgreSQL {database.get('serverVersion')}, system identifier {database.get('systemIdentifier')}"
        )
    last = state.get("lastAnalysis") or {}
    if last:
        lines.append(
            f"  last analysis: {last.get('outcome')} at {last.get('completionTime')} "
            f"({last.get('statementsAnalysed')} statements, {last.get('durationSeconds')}s)"
        )
        if last.get("consecutiveFailures"):
            since = last.get("failingSince")
            lines.append(f"    {last['consecutiveFailures']} failed in a row since {since}: {last.get('message')}")
    for window in spec.get("maintenanceWindows", []):
        lines.append(
            f"  window: {','.join(window['days'])} {window['start']} for {window['duration']} "
            f"({window.get('timeZone', 'UTC')})"
        )
    if state.get("nextWindowStart"):
        lines.append(f"  next window: {state['nextWindowStart']} → {state.get('nextWindowEnd')}")
    counts = state.get("recommendations") or {}
    if counts:
        lines.append("  recommendations: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    llm = state.get("llm") or {}
    if llm:
        budget = (spec.get("llm") or {}).get("dailyTokenBudget", 200_000)
        source = "from the cache" if llm.get("cached") else f"{llm.get('tokens', 0)} tokens"
        lines.append(
            f"  llm: {llm.get('model') or 'no answer'} ({source}; today {llm.get('tokensToday', 0)} of {budget}), "
            f"{llm.get('accepted', 0)} suggestion(s) accepted, {len(llm.get('rejected', []))} rejected"
        )
        if llm.get("message"):
            lines.append(f"    {llm['message']}")
        for rejection in llm.get("rejected", []):
            lines.append(f"    rejected {rejection['kind']} {rejection['what']}: {rejection['reason']}")
    told = state.get("notifications") or {}
    if told:
        lines.append(
            f"  notifications: {told.get('delivered', 0)} delivered, {told.get('failed', 0)} failed"
            + (f", last at {told['lastDeliveredAt']}" if told.get("lastDeliveredAt") else "")
        )
        if told.get("lastError"):
            lines.append(f"    last error: {told['lastError']}")
    report = state.get("lastReport") or {}
    if report:
        lines.append(
            f"  last scheduled report: {report.get('time')} in TuningReport {report.get('configMap')} "
            f"({report.get('sizeBytes', 0):,} bytes of HTML)"
        )
        lines.append(
            f"    read it: kubectl get tuningreport {report.get('configMap')} -n {namespace} "
            "-o jsonpath='{.report.html}' (or: kubectl optischema report --scheduled)"
        )
    return "\n".join(lines)


async def _scheduled(kube: Kube, namespace: str, target: dict[str, Any], fmt: str) -> str:
    """The target's last scheduled report in ``fmt``, as the operator wrote it."""
    name = reports.report_name(target["metadata"]["name"])
    try:
        found = await kube.get(reports.REPORTS_PLURAL, namespace, name)
    except LookupError as error:
        raise PluginError(f"no scheduled report yet: tuningreport {name} not found in {namespace}") from error
    except ApiException as error:
        raise _explain(error, "read tuningreports", namespace) from error
    text = (found.get("report") or {}).get(fmt)
    if not isinstance(text, str):
        raise PluginError(f"tuningreport {name} has no {fmt} (left out to fit the object): use --format html")
    return text


async def report(kube: Kube, namespace: str, args: argparse.Namespace) -> str:
    target = await _get(kube, "postgrestargets", namespace, args.target)
    if args.scheduled:
        text = await _scheduled(kube, namespace, target, args.format)
        if not args.output:
            return text
        with open(args.output, "w", encoding="utf-8") as handle:
            handle.write(text)
        return f"wrote {args.output} ({len(text.encode()):,} bytes, {args.format}, the last scheduled report)"
    now = datetime.now(UTC)
    started = time.monotonic()
    try:
        found = await reports.gather(kube, target, now - args.since, now)
    except ApiException as error:
        raise _explain(error, "read the target's recommendations, changes and history", namespace) from error
    text = render(found, args.format)
    if not args.output:
        return text
    with open(args.output, "w", encoding="utf-8") as handle:
        handle.write(text)
    return (
        f"wrote {args.output} ({len(text.encode()):,} bytes, {args.format}, {found.snapshots} snapshot(s), "
        f"{len(found.applied)} applied change(s)) in {time.monotonic() - started:.2f}s"
    )


COMMANDS = {
    "list": list_,
    "show": show,
    "approve": approve,
    "reject": reject,
    "analyze": analyze,
    "export": export,
    "status": status,
    "report": report,
}

if __name__ == "__main__":
    raise SystemExit(main())
