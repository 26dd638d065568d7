"""Structured logs (structlog) and Prometheus metrics, configured once by the entry point.

Every log line about a resource carries its namespace and name (bound with ``log_for``); metric names are the
contract the Grafana board and the alerts are written against.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog
from prometheus_client import Counter, Gauge, Histogram, start_http_server

ANALYSIS_SECONDS = Histogram(
    "optischema_analysis_duration_seconds",
    "Duration of analyses",
    ["namespace", "target"],
    buckets=(1, 2, 5, 10, 30, 60, 120, 300, 600, 1800),
)
ANALYSIS_FAILURES = Counter(
    "optischema_analysis_failures_total", "Analyses that failed", ["namespace", "target", "reason"]
)
RECOMMENDATIONS = Gauge("optischema_recommendations", "Recommendations by phase", ["namespace", "target", "phase"])
INDEX_CHANGES_CREATED = Counter(
    "optischema_index_changes_created_total", "IndexChanges created on approval", ["namespace"]
)
CHANGES_FINISHED = Counter(
    "optischema_index_changes_finished_total",
    "IndexChanges that reached a final phase (Applied, RolledBack, Failed, Superseded)",
    ["namespace", "target", "phase"],
)
ROLLBACKS = Counter("optischema_rollbacks_total", "Automatic rollbacks after a regression", ["namespace", "target"])
STATEMENTS_EXECUTED = Counter(
    "optischema_statements_executed_total", "Statements executed on databases", ["namespace", "target", "outcome"]
)
CHANGES_WAITING = Gauge(
    "optischema_index_changes_waiting", "IndexChanges waiting for a maintenance window", ["namespace", "target"]
)
BENCHMARKS = Counter(
    "optischema_benchmarks_total",
    "Sandbox benchmarks by outcome (Measured or the failure reason)",
    ["namespace", "target", "outcome"],
)
BENCHMARK_SECONDS = Histogram(
    "optischema_benchmark_duration_seconds",
    "Duration of sandbox benchmarks, preparation included",
    ["namespace", "target"],
    buckets=(5, 10, 30, 60, 120, 300, 600, 1800),
)
SANDBOXES_RUNNING = Gauge("optischema_sandboxes_running", "Sandboxes running now", ["namespace", "target"])
LLM_CALLS = Counter("optischema_llm_calls_total", "LLM calls by outcome", ["namespace", "target", "outcome"])
LLM_CALL_SECONDS = Histogram(
    "optischema_llm_call_duration_seconds",
    "Time an LLM call took, failovers and retries included",
    ["namespace", "target"],
    buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 120),
)
LLM_TOKENS = Counter(
    "optischema_llm_tokens_total", "LLM tokens used (providers' usage reports)", ["namespace", "target"]
)
LLM_CACHE_HITS = Counter(
    "optischema_llm_cache_hits_total", "Analyses answered from the LLM cache", ["namespace", "target"]
)
LLM_FAILOVERS = Counter(
    "optischema_llm_failovers_total", "Providers given up on for the next one", ["namespace", "target"]
)
LLM_COST = Counter(
    "optischema_llm_cost_estimate_total",
    "Estimated LLM cost: tokens times the provider's costPerMillionTokens",
    ["namespace", "target"],
)
LLM_BUDGET_SPENT = Counter(
    "optischema_llm_budget_exhausted_total",
    "Analyses that went on without the LLM because a daily token budget was spent",
    ["namespace", "target", "scope"],
)
LLM_SUGGESTIONS = Counter(
    "optischema_llm_suggestions_total",
    "LLM suggestions by fate: accepted, or rejected with the kind of reason",
    ["namespace", "target", "kind", "outcome"],
)
NOTIFICATIONS = Counter(
    "optischema_notifications_total",
    "Notification deliveries by sink and outcome",
    ["namespace", "target", "sink", "outcome"],
)
REPORTS = Counter("optischema_reports_total", "Scheduled reports written", ["namespace", "target"])
TARGET_READY = Gauge("optischema_target_ready", "1 when the target is Ready", ["namespace", "target"])


#: A logged exception (``exc_info=True``, ``log.exception``) as JSON: its type, message and frames (file, line,
#: function), chained causes included — never the frames' local variables (structlog's ``dict_tracebacks`` shows
#: them by default), which may hold a password, a DSN or a row of the database.
TRACEBACKS = structlog.processors.ExceptionRenderer(
    structlog.tracebacks.ExceptionDictTransformer(show_locals=False, use_rich=False)
)


def configure(log_format: str = "json", metrics_port: int = 0, *, verbose: bool = False) -> None:
    # The console renderer prints a logged exception itself; the JSON one needs it turned into data first, or the
    # traceback is lost (``exc_info`` would be rendered as ``true``).
    renderers: list[Any] = (
        [structlog.processors.StackInfoRenderer(), TRACEBACKS, structlog.processors.JSONRenderer()]
        if log_format == "json"
        else [structlog.dev.ConsoleRenderer()]
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            *renderers,
        ],
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    if metrics_port:
        start_http_server(metrics_port)


def log_for(namespace: str | None, name: str | None, **fields: Any) -> Any:
    """A logger whose every line names the resource."""
    return structlog.get_logger("optischema").bind(namespace=namespace, name=name, **fields)
