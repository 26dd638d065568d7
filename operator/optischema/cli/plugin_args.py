"""The ``kubectl optischema`` command line, parsed the way kubectl's users type it.

kubectl takes its global flags anywhere: ``kubectl optischema approve NAME -n shop`` is the same as
``kubectl optischema -n shop approve NAME``. Here the global flags (``-n``, ``-A``, ``--kubeconfig``, ``--context``,
``--as``, ``--as-group``) are defined once and added both before and after the subcommand, with suppressed
defaults so that a flag given in one place is never reset by the other; :func:`parse` then fills the defaults in
and checks what argparse cannot (``-A`` only where it means something, a bulk decision's selection).

``-o`` means what it means to kubectl on ``list``, ``show`` and ``status`` (``json``, ``yaml``, ``wide``,
``name``). On ``report`` the output file is ``--output-file FILE``; ``-o`` there takes a report format
(``-o html``, kubectl's habit) and, for the commands earlier versions printed (``-o report.html``), any other value
is still the output file.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from optischema import __version__
from optischema.api.durations import parse_duration
from optischema.reports.render import FORMATS

OUTPUTS = ("json", "yaml", "wide", "name")
DRY_RUNS = ("none", "client", "server")
#: Commands that read every namespace with ``-A``.
ALL_NAMESPACES = frozenset({"list", "status"})


class UsageError(Exception):
    """A combination of flags that cannot work (exit code 2, like argparse's own errors)."""


def _since(text: str) -> timedelta:
    try:
        return parse_duration(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"--since: {error}") from error


def _seconds(text: str) -> float:
    try:
        value = parse_duration(text).total_seconds() if text[-1:].isalpha() else float(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"--interval: {error}") from error
    if value < 1:
        raise argparse.ArgumentTypeError(f"--interval: {text!r} is less than a second")
    return value


class _ReportOutput(argparse.Action):
    """``report -o``: a format name sets ``--format`` (kubectl's ``-o json``); anything else is the output file,
    as earlier versions and the messages they printed (``-o report.html``) had it."""

    def __call__(
        self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, value: Any, option: str | None = None
    ) -> None:
        if value in FORMATS:
            namespace.format = value
        else:
            namespace.output = value


def _globals() -> argparse.ArgumentParser:
    """The flags kubectl takes anywhere on the line; defaults suppressed (filled in by :func:`parse`)."""
    common = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
    group = common.add_argument_group("kubectl flags (anywhere on the line)")
    group.add_argument("-n", "--namespace", help="namespace (default: the kubeconfig context's)")
    group.add_argument(
        "-A", "--all-namespaces", action="store_true", help="list and status: every namespace (overrides -n)"
    )
    group.add_argument("--kubeconfig", help="kubeconfig file (default: KUBECONFIG, then ~/.kube/config)")
    group.add_argument("--context", help="the kubeconfig context to use (default: its current-context)")
    group.add_argument("--as", dest="as_user", metavar="USER", help="impersonate USER (as kubectl --as)")
    group.add_argument(
        "--as-group", dest="as_groups", action="append", metavar="GROUP", help="impersonate GROUP (with --as)"
    )
    return common


def _output(command: argparse.ArgumentParser) -> None:
    command.add_argument("-o", "--output", choices=OUTPUTS, help="json, yaml, wide or name (default: text)")


def _dry_run(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--dry-run",
        choices=DRY_RUNS,
        default="none",
        help="client: print what would be done; server: the API server and the admission webhook judge it, "
        "nothing is stored",
    )


def _decision(command: argparse.ArgumentParser, what: str) -> None:
    command.add_argument("name", nargs="?", help=f"the recommendation to {what} (or --target for several)")
    command.add_argument("--target", help=f"{what} every pending recommendation of this PostgresTarget …")
    command.add_argument(
        "--min-gain",
        type=float,
        metavar="PERCENT",
        help="… whose improvement (measured in the sandbox, else estimated) is at least PERCENT",
    )
    command.add_argument("-l", "--selector", help="… matching this label selector")
    _dry_run(command)


def build_parser() -> argparse.ArgumentParser:
    common = _globals()
    parser = argparse.ArgumentParser(
        prog="kubectl optischema",
        description="OptiSchema's kubectl plugin: review, decide and follow PostgreSQL tuning.",
        parents=[common],
        epilog="Exit codes: 0 done; 1 the request failed (not found, forbidden, refused, unreachable); 2 usage.",
    )
    parser.add_argument("--version", action="version", version=f"kubectl optischema {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=help, parents=[common])

    listing = command("list", "recommendations with improvement and phase")
    listing.add_argument("--target", help="only this PostgresTarget's")
    listing.add_argument("-l", "--selector", help="label selector, e.g. optischema.io/target=shop")
    _output(listing)
    show = command("show", "evidence, SQL, rollback and benchmark of one")
    show.add_argument("name")
    _output(show)
    approve = command("approve", "approve a recommendation, or several with --target")
    _decision(approve, "approve")
    approve.add_argument("--reason", default="approved with kubectl optischema")
    approve.add_argument("--immediate", action="store_true", help="apply now if the target's policy allows it")
    reject = command("reject", "reject a recommendation, or several with --target (a reason is required)")
    _decision(reject, "reject")
    reject.add_argument("--reason", required=True)
    command("analyze", "analyse a target now").add_argument("target")
    command("export", "an IndexChange for a Git pull request").add_argument("name")
    status = command("status", "windows, last analysis and pending work of a target (all targets: no TARGET)")
    status.add_argument("target", nargs="?")
    _output(status)
    report = command("report", "what tuning bought: workload, changes, gains (md, html or json)")
    report.add_argument("target")
    report.add_argument("--since", default="30d", type=_since, help="how far back, e.g. 7d, 12h (default 30d)")
    report.add_argument("--format", choices=FORMATS, default="md", help="md (default), html or json")
    report.add_argument("--output-file", dest="output", metavar="FILE", help="write to FILE (default: stdout)")
    report.add_argument(
        "-o",
        "--output",
        dest="output",
        action=_ReportOutput,
        metavar="FORMAT|FILE",
        help="md, html or json (as --format); any other value: the output file (as earlier versions)",
    )
    report.add_argument(
        "--scheduled", action="store_true", help="the last scheduled report as stored (its TuningReport)"
    )
    retry = command("retry", "admit a Failed IndexChange again (after fixing what refused it)")
    retry.add_argument("change")
    rollback = command("rollback", "undo an Applied IndexChange: creates its inverse, reviewed and applied as any")
    rollback.add_argument("change")
    rollback.add_argument("--immediate", action="store_true", help="in the budget of an immediate change")
    _dry_run(rollback)
    top = command("top", "a target's top statements, live: calls/s, mean, share, trend, indexes, pending")
    top.add_argument("target")
    top.add_argument("--once", action="store_true", help="print one frame and exit")
    top.add_argument("--interval", type=_seconds, default=5.0, help="seconds between refreshes (default 5)")
    top.add_argument("--limit", type=int, default=15, help="statements shown (default 15)")
    top.add_argument(
        "--live-service",
        default=os.environ.get("OPTISCHEMA_LIVE_SERVICE", "optischema-system/optischema-live"),
        metavar="NAMESPACE/NAME",
        help="the operator's live Service, read through the API server's service proxy (default "
        "$OPTISCHEMA_LIVE_SERVICE, else optischema-system/optischema-live: release optischema)",
    )
    top.add_argument("--live-url", metavar="URL", help="the live endpoint reached directly (kubectl port-forward)")
    top.add_argument("--no-live", action="store_true", help="the history alone, without the operator's live figures")
    return parser


DEFAULTS: dict[str, Any] = {
    "namespace": None,
    "all_namespaces": False,
    "kubeconfig": None,
    "context": None,
    "as_user": None,
    "as_groups": [],
}


def check(args: argparse.Namespace) -> argparse.Namespace:
    """Defaults filled in, and the combinations argparse cannot judge refused with a :class:`UsageError`."""
    for key, value in DEFAULTS.items():
        if not hasattr(args, key):
            setattr(args, key, list(value) if isinstance(value, list) else value)
    if args.all_namespaces and args.command not in ALL_NAMESPACES:
        raise UsageError(f"-A/--all-namespaces: only {' and '.join(sorted(ALL_NAMESPACES))} read every namespace")
    if args.command == "status" and args.all_namespaces and args.target:
        raise UsageError("status: give TARGET or -A, not both")
    if args.command in ("approve", "reject"):
        bulk = args.target is not None or args.selector is not None
        if args.name and bulk:
            raise UsageError(f"{args.command}: give NAME, or --target/-l for several, not both")
        if not args.name and not bulk:
            raise UsageError(f"{args.command}: give the recommendation's NAME, or --target TARGET for several")
        if args.min_gain is not None and not bulk:
            raise UsageError("--min-gain selects among several: use it with --target or -l")
    return args


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parsed and checked; argparse exits with 2 (and its usage line) on what it refuses."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return check(args)
    except UsageError as error:
        parser.exit(2, f"kubectl optischema: {error}\n")
