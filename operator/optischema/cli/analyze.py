"""``optischema analyze``: the engine against any DSN, with a report for people, JSON for scripts, or custom
resources for ``kubectl apply`` and Git."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
import textwrap
import time
from datetime import timedelta
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlencode, urlsplit

import yaml

from optischema.analysis.errors import AnalysisError, ExitCode
from optischema.analysis.report import as_json
from optischema.analysis.workload import compile_pattern
from optischema.api.durations import parse_duration
from optischema.api.quantity import quantity_bytes
from optischema.flows.analyze import AnalysisResult, AnalyzeOptions, analyze
from optischema.flows.measuring import local_sandbox
from optischema.postgres.connect import describe_target

JSON_VERSION = 1
_MODES = {
    "whatif": "what-if planning with HypoPG",
    "measured": "no HypoPG: every candidate measured on a sandbox copy",
    "heuristic": "heuristics only (no HypoPG)",
}


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "analyze",
        help="analyse a database's workload and print recommendations",
        description="Read pg_stat_statements and the catalogs over a read-only connection, choose indexes for the "
        "whole workload with HypoPG what-if planning, and report them with the other findings. The database is "
        "named as psql names it: --dsn, or -h/-p/-U/-d, or libpq's PGHOST, PGPORT, PGUSER, PGPASSWORD, "
        "PGDATABASE, PGSSLMODE (and ~/.pgpass) for whatever is not given.",
        add_help=False,  # -h is the host, as in psql; --help stays
    )
    parser.add_argument("--help", action="help", help="show this help message and exit")
    parser.add_argument("--dsn", help="postgresql://user[:password]@host:port/database (or a libpq key=value string)")
    parser.add_argument("-h", "--host", help="server host or socket directory (default: PGHOST, then libpq's)")
    parser.add_argument("-p", "--port", type=_port, help="server port (default: PGPORT, then 5432)")
    parser.add_argument("-U", "--username", help="role to connect as (default: PGUSER, then the OS user)")
    parser.add_argument("-d", "--dbname", help="database name, or a whole connection string (default: PGDATABASE)")
    parser.add_argument(
        "-o", "--format", choices=("table", "json", "yaml"), default="table", help="output (default: table)"
    )
    parser.add_argument("--budget", help="storage budget for new indexes, e.g. 1GiB or 500Mi (default: none)")
    parser.add_argument("--max-indexes-per-table", type=_positive, default=10, metavar="N")
    parser.add_argument("--min-calls", type=_positive, default=2, metavar="N", help="ignore rarer statements")
    parser.add_argument("--top", type=_positive, default=500, metavar="N", help="statements by total time analysed")
    parser.add_argument("--ignore-schema", action="append", default=[], metavar="SCHEMA")
    parser.add_argument(
        "--ignore-statement", action="append", default=[], metavar="REGEX", type=_pattern, help="RE2 syntax"
    )
    parser.add_argument(
        "--sample-seconds",
        type=float,
        default=5.0,
        metavar="S",
        help="watch pg_stat_activity this long for statements with their constants (0: off)",
    )
    parser.add_argument(
        "--measure",
        action="store_true",
        help="price index candidates HypoPG cannot simulate (GIN, GiST) by building them on a copy of the tables "
        "in a temporary local PostgreSQL of the server's major (real rows are copied there; it is removed after)",
    )
    parser.add_argument(
        "--replica",
        action="append",
        default=[],
        metavar="DSN",
        type=_replica,
        help="a read replica's connection string (repeatable): an index is proposed for dropping as unused only when "
        "no scan used it there either, and every replica could be read",
    )
    parser.add_argument(
        "--unused-min-age",
        type=_age,
        default="14d",
        metavar="DURATION",
        help="how long every instance's statistics must have been collected before an index no scan used is proposed "
        "for dropping (default: 14d; 0s judges whatever they hold)",
    )
    parser.add_argument("--emit-crs", type=Path, metavar="DIR", help="also write TuningRecommendation YAML files here")
    parser.add_argument("--target", help="PostgresTarget name for --emit-crs (default: the database name)")
    parser.add_argument("--namespace", help="namespace for --emit-crs")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    parser.set_defaults(run=run)


def _port(text: str) -> int:
    value = int(text)
    if not 0 < value < 65536:
        raise argparse.ArgumentTypeError("must be between 1 and 65535")
    return value


def connection_string(args: argparse.Namespace) -> str:
    """What to connect to, as psql reads its arguments: ``--dsn`` (or a ``-d`` that is a connection string) as it
    is; otherwise a URL carrying the parts given as query parameters, each encoded (a host such as
    ``db/x?sslmode=disable`` stays a host), and asyncpg fills what is missing from libpq's ``PG*`` environment and
    ``~/.pgpass``, as libpq does."""
    flags = {"host": args.host, "port": args.port, "user": args.username}
    for given in (args.dsn, args.dbname):
        if given and given.startswith(("postgresql://", "postgres://")):
            return _overridden(str(given), flags)
        if given and "=" in given:
            return _overridden(conninfo_url(given), flags)
    dbname = args.dbname or ""
    given = {"host": args.host, "port": args.port, "user": args.username, "dbname": dbname or None}
    return "postgresql://?" + urlencode({key: value for key, value in given.items() if value})


def _overridden(url: str, flags: dict[str, Any]) -> str:
    """``url`` with the -h/-p/-U given beside it, which win over what it says (as psql's options do)."""
    given = {key: value for key, value in flags.items() if value}
    if not given:
        return url
    parts = urlsplit(url)
    if parts.netloc:  # asyncpg prefers the URL's own host, port and user to its query: move them to the query
        moved = {"host": parts.hostname, "port": parts.port, "user": parts.username, "password": parts.password}
        query = urlencode({key: value for key, value in moved.items() if value})
        url = f"{parts.scheme}://{parts.path}?{'&'.join(q for q in (query, parts.query) if q)}"
    return url + ("&" if "?" in url else "?") + urlencode(given)


_CONNINFO = re.compile(r"\s*(\w+)\s*=\s*('(?:[^'\\]|\\.)*'|[^\s']+)")


def conninfo_url(text: str) -> str:
    """libpq's ``key=value`` form (``host=db port=5433 dbname='my db'``) as the URL asyncpg reads: each value
    encoded as a query parameter, so that none can reach into another."""
    pairs, position = [], 0
    while position < len(text.rstrip()):
        match = _CONNINFO.match(text, position)
        if match is None:
            raise AnalysisError(
                "InvalidDSN",
                f"--dsn/-d: cannot read the connection string at {text[position:][:20]!r}",
                ExitCode.BAD_INPUT,
            )
        key, value = match.group(1), match.group(2)
        if value.startswith("'"):
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        pairs.append((key, value))
        position = match.end()
    return "postgresql://?" + urlencode(pairs)


def _database_name(args: argparse.Namespace) -> str | None:
    """The database's name for --emit-crs's default target name."""
    if args.dsn and "://" in args.dsn:
        return urlsplit(args.dsn).path.lstrip("/") or None
    if args.dbname and "=" not in args.dbname and "://" not in args.dbname:
        return str(args.dbname)
    return os.environ.get("PGDATABASE")


def _replica(text: str) -> str:
    """A replica's connection string as asyncpg reads it (libpq's ``key=value`` form converted like ``--dsn``'s)."""
    if text.startswith(("postgresql://", "postgres://")):
        return text
    if "=" in text:
        try:
            return conninfo_url(text)
        except AnalysisError as error:
            raise argparse.ArgumentTypeError(error.message.replace("--dsn/-d", "--replica")) from error
    raise argparse.ArgumentTypeError("must be a connection string: postgresql://user@host:port/database or key=value")


def _age(text: str) -> timedelta:
    try:
        return parse_duration(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from error


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _pattern(text: str) -> str:
    try:
        compile_pattern(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from error
    return text


def _budget(text: str | None) -> int | None:
    if text is None:
        return None
    normalised = text.strip().replace("iB", "i")
    if normalised.endswith("B") and not normalised.endswith("iB"):
        normalised = normalised[:-1]
    try:
        value = quantity_bytes(normalised)
    except ValueError as error:
        raise AnalysisError("InvalidBudget", f"--budget: {error}", ExitCode.BAD_INPUT) from error
    if value < 0:
        raise AnalysisError("InvalidBudget", "--budget: must not be negative", ExitCode.BAD_INPUT)
    return value


def run(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out, err = out or sys.stdout, err or sys.stderr
    progress = None if args.quiet else _Progress(err)
    try:
        options = AnalyzeOptions(
            min_calls=args.min_calls,
            top_statements=args.top,
            ignore_schemas=args.ignore_schema,
            ignore_statements=args.ignore_statement,
            budget_bytes=_budget(args.budget),
            max_indexes_per_table=args.max_indexes_per_table,
            sample_seconds=max(args.sample_seconds, 0.0),
            measure=local_sandbox if args.measure else None,
            replicas=args.replica,
            unused_min_statistics_age=args.unused_min_age,
        )
        result = asyncio.run(analyze(connection_string(args), options, progress))
    except AnalysisError as error:
        if progress:
            progress.done()
        print(f"optischema analyze: {error.message}", file=err)
        return int(error.exit_code)
    if progress:
        progress.done()
    if args.emit_crs:
        target = args.target or _database_name(args) or "database"
        written = emit_crs(result, args.emit_crs, target, args.namespace)
        print(f"wrote {written} TuningRecommendation file(s) to {args.emit_crs}", file=err)
    if args.format == "json":
        json.dump(document(result), out, indent=2)
        out.write("\n")
    elif args.format == "yaml":
        yaml.safe_dump(document(result), out, sort_keys=False, width=120, allow_unicode=True)
    else:
        out.write(table(result, describe_target(args.dsn)))
    return int(ExitCode.OK)


def document(result: AnalysisResult) -> dict[str, Any]:
    """The JSON/YAML document; its shape is documented in the README and versioned by ``version``."""
    return {
        "version": JSON_VERSION,
        "server_version": result.server_version,
        "mode": result.mode,
        "started_at": result.started_at.isoformat() if result.started_at else None,
        "duration_seconds": result.duration_seconds,
        "statements_seen": result.statements_seen,
        "statements_analysed": result.statements_analysed,
        "planner_calls": result.planner_calls,
        "notes": result.notes,
        "skipped": _skip_summary(result),
        "unplannable": result.unplannable,
        "recommendations": as_json(result.recommendations),
    }


def _skip_summary(result: AnalysisResult) -> dict[str, int]:
    summary: dict[str, int] = {}
    for item in result.skipped:
        kind = item.reason.split(":")[0].split(" (")[0]
        summary[kind] = summary.get(kind, 0) + 1
    return summary


def emit_crs(result: AnalysisResult, directory: Path, target: str, namespace: str | None) -> int:
    directory.mkdir(parents=True, exist_ok=True)
    for recommendation in result.recommendations:
        resource = recommendation.to_custom_resource(target, namespace)
        body = resource.model_dump(mode="json", by_alias=True, exclude_none=True)
        body["metadata"] = {k: v for k, v in body["metadata"].items() if v not in ({}, None)}
        path = directory / f"{resource.metadata.name}.yaml"
        path.write_text(yaml.safe_dump(body, sort_keys=False, width=120, allow_unicode=True))
    return len(result.recommendations)


def table(result: AnalysisResult, where: str) -> str:
    """The report for a person: what to do, why, and what was left out."""
    lines = [
        f"OptiSchema analysis of {where}: PostgreSQL {result.server_version}, "
        f"{_MODES.get(result.mode, result.mode)}, "
        f"{result.statements_analysed} of {result.statements_seen} statements analysed in "
        f"{result.duration_seconds:.1f}s",
        "",
    ]
    if not result.recommendations and not result.statements_analysed:
        lines.append("No recommendations: no statement needed analysing (see the note below).")
    elif not result.recommendations:
        lines.append("No recommendations: the workload is served well as it is.")
    for number, rec in enumerate(result.recommendations, 1):
        gain = "" if rec.estimated_improvement_percent is None else f"{rec.estimated_improvement_percent:+.1f}%"
        lines.append(
            f"{number:>2}. {rec.kind:<12} {rec.table or '(server)':<28} {gain:>8}  risk {rec.risk}  [{rec.id}]"
        )
        lines.append(textwrap.indent(rec.sql, "      "))
        if rec.rollback_sql:
            lines.append(textwrap.indent(f"rollback: {rec.rollback_sql}", "      "))
        lines += textwrap.wrap(rec.rationale, width=110, initial_indent="      ", subsequent_indent="      ")
        lines.append("")
    for note in result.notes:
        lines += textwrap.wrap(f"note: {note}", width=116)
    summary = _skip_summary(result)
    if summary:
        lines.append("skipped: " + ", ".join(f"{count} {reason}" for reason, count in sorted(summary.items())))
    if result.unplannable:
        lines.append(f"could not be planned: {len(result.unplannable)} statement(s) (see --format json)")
    return "\n".join(lines) + "\n"


class _Progress:
    """Progress on stderr: a rewritten line on a terminal, a line every few seconds otherwise."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.last = 0.0
        self.shown = False

    def __call__(self, stage: str, done: int, total: int) -> None:
        now = time.monotonic()
        if now - self.last < (0.2 if self.tty else 5.0):
            return
        self.last = now
        text = f"{stage} {done}/{total}" if total else stage
        if self.tty:
            self.stream.write(f"\r\033[K{text}")
        else:
            self.stream.write(f"{text}\n")
        self.stream.flush()
        self.shown = True

    def done(self) -> None:
        if self.tty and self.shown:
            self.stream.write("\r\033[K")
            self.stream.flush()
