"""``kubectl optischema``: list, show, approve, reject, analyze, export, status, report, retry, rollback, top.

It behaves like kubectl (``plugin_args.py``: global flags anywhere, ``-o``, ``-l``, ``--dry-run``;
``plugin_connect.py``: kubeconfig, context, namespace and impersonation by kubectl's precedence) and fails with one
line and an exit code, never a traceback: 1 when the request failed, 2 for usage.

RBAC each command needs (roles in manifests/rbac/): ``list``, ``show``, ``export`` and ``status`` read —
``optischema-viewer``; ``approve`` and ``reject`` patch a recommendation's spec — ``optischema-approver`` (the
operator's admission webhook records who decided); ``analyze`` annotates the target — ``patch`` on
postgrestargets (platform administrators); ``report`` reads the resources and the statement history
(``statementhistories``), ``report --scheduled`` the last scheduled report (``tuningreports``): both are in
``optischema-viewer``, which needs no right on ConfigMaps. ``retry`` annotates an IndexChange (``patch`` on
indexchanges) and ``rollback`` creates one (``create``): whoever may write changes; ``top`` reads what ``report``
reads.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import textwrap
import time
from collections.abc import Callable, Coroutine, Sequence
from datetime import UTC, datetime
from typing import Any

import urllib3
import yaml

from optischema.analysis import scaling
from optischema.api.operations import SettingChange
from optischema.changes.cnpg import git_change
from optischema.changes.ddl import render_cluster_setting
from optischema.cli import plugin_changes, plugin_output, top
from optischema.cli.plugin_args import build_parser as build_parser  # the parser, for tests and docs
from optischema.cli.plugin_args import parse
from optischema.cli.plugin_connect import ConnectError, Options, connect
from optischema.cli.top_live import LiveSource
from optischema.flows import reports
from optischema.kube.client import ApiException, Kube
from optischema.reports.render import render

PLURALS = {"trec": "tuningrecommendations", "pgt": "postgrestargets", "ixc": "indexchanges"}


class PluginError(Exception):
    pass


def options(args: argparse.Namespace) -> Options:
    return Options(
        kubeconfig=args.kubeconfig,
        context=args.context,
        namespace=args.namespace,
        as_user=args.as_user,
        as_groups=tuple(args.as_groups or ()),
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; every failure is one line on standard error and exit code 1 (2: usage, from argparse)."""
    args = parse(argv)
    host = "the API server"
    try:
        connection = connect(options(args))
        host = connection.host
        kube = Kube(api_client=connection.api_client)
        namespace = None if args.all_namespaces else connection.namespace
        output = asyncio.run(COMMANDS[args.command](kube, namespace, args))
    except (PluginError, ConnectError) as error:
        print(f"kubectl optischema {args.command}: {error}", file=sys.stderr)
        return 1
    except ApiException as error:
        print(f"kubectl optischema {args.command}: {_explain(error, args.command, args.namespace)}", file=sys.stderr)
        return 1
    except (urllib3.exceptions.HTTPError, OSError) as error:
        reason = str(getattr(error, "reason", None) or error)
        reason = re.sub(r"^<[^>]*>: ", "", reason)  # urllib3 names its connection object first
        print(f"kubectl optischema {args.command}: cannot reach {host}: {reason}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0 if args.command == "top" else 130
    if output:
        print(output, end="" if output.endswith("\n") else "\n")
    return 0


def _explain(error: ApiException, action: str, namespace: str | None) -> PluginError:
    where = f"in namespace {namespace}" if namespace else "in every namespace"
    if error.status == 401:
        return PluginError("unauthorized: the API server refused the kubeconfig's credentials (expired?)")
    if error.status == 403 and "impersonate" in (error.body or ""):
        return PluginError(_message(error))
    if error.status == 403:
        return PluginError(f"forbidden: you may not {action} {where} (see the RBAC in the README)")
    if error.status == 404:
        return PluginError(f"not found {where}")
    return PluginError(_message(error))


def _message(error: ApiException) -> str:
    """The API server's own words (a webhook's or CEL rule's refusal names the field)."""
    try:
        message = json.loads(error.body or "{}").get("message") or error.reason
    except ValueError:
        message = error.reason
    return str(message)


async def _get(kube: Kube, plural: str, namespace: str, name: str) -> dict[str, Any]:
    try:
        return await kube.get(plural, namespace, name)
    except LookupError as error:
        raise PluginError(f"{plural[:-1]} {name} not found in namespace {namespace}") from error
    except ApiException as error:
        raise _explain(error, f"read {plural}", namespace) from error


def decider(item: dict[str, Any]) -> str:
    return str((item["spec"].get("approval") or {}).get("decidedBy") or "")


def _selector(target: str | None, selector: str | None) -> str:
    """``--target`` as the label it is, joined with ``-l`` (both must match, as kubectl's comma means)."""
    return ",".join(s for s in (f"optischema.io/target={target}" if target else "", selector or "") if s)


async def _list(kube: Kube, plural: str, namespace: str | None, selector: str = "") -> list[dict[str, Any]]:
    try:
        items = await kube.list(plural, namespace, selector)
    except ApiException as error:
        raise _explain(error, f"list {plural}", namespace) from error
    return sorted(items, key=lambda i: (i["metadata"]["namespace"], i["metadata"]["name"]))


async def list_(kube: Kube, namespace: str | None, args: argparse.Namespace) -> str:
    items = await _list(kube, "tuningrecommendations", namespace, _selector(args.target, args.selector))
    if args.output in ("json", "yaml", "name"):
        return plugin_output.objects(items, args.output, "tuningrecommendation")
    if not items:
        return f"No recommendations found in {f'namespace {namespace}' if namespace else 'any namespace'}."
    wide = args.output == "wide"
    rows: list[tuple[str, ...]] = [
        ("NAME", "TARGET", "KIND", "TABLE", "ESTIMATED", "MEASURED", "APPROVAL", "PHASE")
        + (("RISK", "SOURCE", "DECIDED BY") if wide else ())
    ]
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
            + ((str(spec.get("risk") or ""), str(spec.get("source") or ""), str(decider(item))) if wide else ())
        )
    if namespace is None:  # -A: kubectl's NAMESPACE column first
        spaces = [i["metadata"]["namespace"] for i in items]
        rows = [("NAMESPACE", *rows[0])] + [(space, *row) for space, row in zip(spaces, rows[1:], strict=True)]
    return plugin_output.table(rows)


async def show(kube: Kube, namespace: str, args: argparse.Namespace) -> str:
    try:
        item = await _get(kube, "tuningrecommendations", namespace, args.name)
    except PluginError:
        try:  # a target's name: its status, the LLM advisor's rejections included
            return await status(
                kube, namespace, argparse.Namespace(target=args.name, output=args.output, all_namespaces=False)
            )
        except PluginError:
            pass
        raise
    if args.output in ("json", "yaml", "name"):
        return plugin_output.objects([item], args.output, "tuningrecommendation", single=True)
    return render_show(item)  # -o wide: the same, complete already


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


async def _decide(
    kube: Kube, namespace: str, name: str, approval: dict[str, Any], verb: str, dry_run: str = "none"
) -> str:
    """One recommendation's decision, patched on its own so that the admission webhook stamps who decided.
    ``dry_run``: ``client`` patches nothing; ``server`` has the API server and the webhook judge the patch and
    store nothing (the answer shows who the webhook would record)."""
    await _get(kube, "tuningrecommendations", namespace, name)
    state = approval["state"].lower()
    if dry_run == "client":
        return f"tuningrecommendation/{name} {state} (dry run)"
    try:
        answered = await kube.patch(
            "tuningrecommendations", namespace, name, {"spec": {"approval": approval}}, dry_run=dry_run == "server"
        )
    except ApiException as error:
        raise _explain(error, f"{verb} recommendations", namespace) from error
    if dry_run == "server":
        decided = answered["spec"]["approval"]
    else:
        decided = (await _get(kube, "tuningrecommendations", namespace, name))["spec"]["approval"]
    who = decided.get("decidedBy") or "(not recorded: the operator's admission webhook is not running)"
    return f"tuningrecommendation/{name} {decided['state'].lower()} by {who}" + (
        " (server dry run)" if dry_run == "server" else ""
    )


async def _decide_all(kube: Kube, namespace: str, args: argparse.Namespace, approval: dict[str, Any]) -> str:
    """``--target``/``-l``: every undecided recommendation selected (``plugin_changes.undecided``), each patched
    on its own; one line per object as it is decided, failures on standard error, exit 1 if any failed."""
    items = await _list(kube, "tuningrecommendations", namespace, _selector(args.target, args.selector))
    chosen = plugin_changes.undecided(items, args.min_gain)
    if not chosen:
        gain = f" with a gain of at least {args.min_gain:g}%" if args.min_gain is not None else ""
        return f"no recommendation waiting for a decision{gain} in namespace {namespace}"
    failed = 0
    for item in chosen:
        name = item["metadata"]["name"]
        try:
            print(await _decide(kube, namespace, name, approval, args.command, args.dry_run), flush=True)
        except PluginError as error:
            failed += 1
            print(f"kubectl optischema {args.command}: tuningrecommendation/{name}: {error}", file=sys.stderr)
    if failed:
        raise PluginError(f"{failed} of {len(chosen)} decision(s) failed")
    return ""


async def approve(kube: Kube, namespace: str, args: argparse.Namespace) -> str:
    approval = {"state": "Approved", "reason": args.reason, "when": "immediate" if args.immediate else "nextWindow"}
    if not args.name:
        return await _decide_all(kube, namespace, args, approval)
    return await _decide(kube, namespace, args.name, approval, "approve", args.dry_run)


async def reject(kube: Kube, namespace: str, args: argparse.Namespace) -> str:
    approval = {"state": "Rejected", "reason": args.reason}
    if not args.name:
        return await _decide_all(kube, namespace, args, approval)
    return await _decide(kube, namespace, args.name, approval, "reject", args.dry_run)


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
    setting = spec["change"].get("setting") or {}
    if spec["kind"] == "setting" and setting.get("cluster"):
        # A CloudNativePG Cluster's setting lives in the Cluster's manifest: the Git change is a patch of it. The
        # recommendation is anyone's data: checked as the operator would apply it before anything is printed.
        try:
            checked = SettingChange.model_validate(setting)
            render_cluster_setting(checked)
        except ValueError as error:
            raise PluginError(f"{args.name}: spec.change.setting cannot be exported: {error}") from None
        assert checked.cluster is not None
        header = _comment(
            f"From {args.name}: a setting of CloudNativePG Cluster {checked.cluster}. Merge it into the Cluster's "
            "manifest (or a kustomize patches: entry) and let GitOps apply it; CloudNativePG rolls it out."
        )
        return header + git_change(namespace, checked.cluster, checked.name, checked.value)
    if spec["kind"] not in operations:
        raise PluginError(
            f"only index recommendations (and a CloudNativePG Cluster's settings) can be exported ({args.name} is "
            f"{spec['kind']})"
        )
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
    header = _comment(f"From {args.name}: {spec['sql']}\nReview, commit, and let GitOps apply it; the operator renders "
                      "the SQL.")  # fmt: skip
    return header + yaml.safe_dump(change, sort_keys=False)


def _comment(text: str) -> str:
    """``text`` as YAML comment lines, every line of it: a recommendation's SQL is anyone's data, and a line of it
    left uncommented would be a document of its own in what is committed or applied."""
    return "".join(f"# {line}\n" for line in str(text).splitlines() or [""])


async def status(kube: Kube, namespace: str | None, args: argparse.Namespace) -> str:
    """One target's status, or every target's of the namespace (of all namespaces with ``-A``)."""
    if args.target:
        targets = [await _get(kube, "postgrestargets", namespace or "default", args.target)]
    else:
        targets = await _list(kube, "postgrestargets", namespace)
    if args.output in ("json", "yaml", "name"):
        return plugin_output.objects(targets, args.output, "postgrestarget", single=bool(args.target))
    if not targets:
        return f"No PostgresTargets found in {f'namespace {namespace}' if namespace else 'any namespace'}."
    return "\n\n".join(_status_text(target) for target in targets)


def _status_text(target: dict[str, Any]) -> str:
    """A target's status for a person (``-o wide`` is the same: nothing is left out)."""
    name, namespace = target["metadata"]["name"], target["metadata"]["namespace"]
    spec, state = target["spec"], target.get("status") or {}
    lines = [
        f"postgrestarget/{name}"
        + (f" -n {namespace}" if namespace else "")
        + f": {spec['connection']['host']}/{spec['connection']['database']}"
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
        _write(args.output, text)
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
    _write(args.output, text)
    return (
        f"wrote {args.output} ({len(text.encode()):,} bytes, {args.format}, {found.snapshots} snapshot(s), "
        f"{len(found.applied)} applied change(s)) in {time.monotonic() - started:.2f}s"
    )


def _write(path: str, text: str) -> None:
    try:
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(text)
    except OSError as error:
        raise PluginError(f"--output-file {path}: {error.strerror or error}") from error


async def retry(kube: Kube, namespace: str, args: argparse.Namespace) -> str:
    """Ask the operator to admit a Failed change again (``flows/retry.py``): the annotation with a new token."""
    change = await _get(kube, "indexchanges", namespace, args.change)
    problem = plugin_changes.retry_problem(change)
    if problem is not None:
        raise PluginError(problem)
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    try:
        await kube.patch(
            "indexchanges",
            namespace,
            args.change,
            {"metadata": {"annotations": {plugin_changes.RETRY_ANNOTATION: stamp}}},
        )
    except ApiException as error:
        raise _explain(error, "annotate indexchanges", namespace) from error
    return f"indexchange/{args.change}: retry requested ({stamp}); the operator admits it again"


async def rollback(kube: Kube, namespace: str, args: argparse.Namespace) -> str:
    """Undo an Applied change with its inverse IndexChange (``plugin_changes.inverse``), admitted like any."""
    change = await _get(kube, "indexchanges", namespace, args.change)
    try:
        undo = plugin_changes.inverse(change)
    except ValueError as error:
        raise PluginError(str(error)) from error
    if args.immediate:
        undo["spec"]["schedule"] = "immediate"
    name = undo["metadata"]["name"]
    if args.dry_run == "client":
        header = f"# indexchange/{name} (dry run): the rollback of {args.change}\n"
        return header + yaml.safe_dump(undo, sort_keys=False)
    try:
        created = await kube.create("indexchanges", namespace, undo, dry_run=args.dry_run == "server")
    except ApiException as error:
        raise _explain(error, "create indexchanges", namespace) from error
    if created is None:
        raise PluginError(f"indexchange {name} already exists: the rollback of {args.change} was requested before")
    suffix = " (server dry run)" if args.dry_run == "server" else ""
    return f"indexchange/{name} created{suffix}: {undo['spec']['operation']}, the rollback of {args.change}"


async def top_(kube: Kube, namespace: str, args: argparse.Namespace) -> str:
    await _get(kube, "postgrestargets", namespace, args.target)
    try:
        live = None if args.no_live else LiveSource(kube.core.api_client, args.live_service, args.live_url)
        return await top.run(
            kube, namespace, args.target, once=args.once, interval=args.interval, limit=args.limit, live=live
        )
    except ApiException as error:
        raise _explain(error, "read the target's history, recommendations and changes", namespace) from error


#: Each command, given the client, the namespace (None only for ``list`` and ``status`` with ``-A``) and the args.
COMMANDS: dict[str, Callable[[Kube, Any, argparse.Namespace], Coroutine[Any, Any, str]]] = {
    "list": list_,
    "show": show,
    "approve": approve,
    "reject": reject,
    "analyze": analyze,
    "export": export,
    "status": status,
    "report": report,
    "retry": retry,
    "rollback": rollback,
    "top": top_,
}

if __name__ == "__main__":
    raise SystemExit(main())
