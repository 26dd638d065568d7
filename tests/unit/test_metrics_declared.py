"""Every metric telemetry.py declares is moved somewhere (incremented, set or observed) by the operator, and every
metric the Grafana board and the alerts query is one telemetry.py declares: a declared metric nobody moves is an empty
panel and an alert that can never fire (as optischema_statements_executed_total was)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.unit.test_dashboard import used

PACKAGE = Path(__file__).resolve().parents[2] / "operator/optischema"
TELEMETRY = PACKAGE / "telemetry.py"
METRIC_TYPES = {"Counter", "Gauge", "Histogram", "Summary", "Info", "Enum"}
#: What moves a metric (on it or on its ``.labels(...)`` child).
MOVES = {
    "inc",
    "dec",
    "set",
    "observe",
    "set_function",
    "time",
    "track_inprogress",
    "count_exceptions",
    "state",
    "info",
}

pytestmark = pytest.mark.unit


def declared(telemetry: Path = TELEMETRY) -> dict[str, str]:
    """Python name of each module-level metric in telemetry.py -> its Prometheus name."""
    found = {}
    for node in ast.parse(telemetry.read_text()).body:
        if (
            isinstance(node, ast.Assign)
            and isinstance(node.value, ast.Call)
            and isinstance(node.value.func, ast.Name)
            and node.value.func.id in METRIC_TYPES
            and isinstance(node.value.args[0], ast.Constant)
        ):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    found[target.id] = str(node.value.args[0].value)
    return found


def _metric_of(node: ast.expr) -> str | None:
    """The telemetry name a moved expression starts from: ``NAME``, ``telemetry.NAME``, ``NAME.labels(...)``."""
    while True:
        if isinstance(node, ast.Call):
            node = node.func
        elif isinstance(node, ast.Attribute) and node.attr == "labels":
            node = node.value
        elif isinstance(node, ast.Attribute):
            return node.attr
        elif isinstance(node, ast.Name):
            return node.id
        else:
            return None


def moved(package: Path = PACKAGE, telemetry: Path = TELEMETRY) -> dict[str, set[str]]:
    """Metric Python names moved anywhere in the package (telemetry.py aside) -> the modules that move them."""
    found: dict[str, set[str]] = {}
    for path in package.rglob("*.py"):
        if path == telemetry:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in MOVES:
                name = _metric_of(node.func.value)
                if name is not None:
                    found.setdefault(name, set()).add(str(path.relative_to(package)))
    return found


def test_every_declared_metric_is_moved_somewhere() -> None:
    unmoved = {python: name for python, name in declared().items() if python not in moved()}
    assert not unmoved, f"declared in telemetry.py but never incremented, set or observed: {unmoved}"


def test_the_board_and_the_alerts_query_only_declared_metrics() -> None:
    names = set(declared().values())
    series = names | {n + suffix for n in names for suffix in ("_bucket", "_sum", "_count")}
    for where, queried in used().items():
        assert queried <= series, f"{where} queries metrics telemetry.py does not declare: {sorted(queried - series)}"


def test_the_scan_sees_a_metric_nobody_moves(tmp_path: Path) -> None:
    """The audit itself: a metric only declared (or only read) is caught; moved in any of the usual ways, it is not."""
    telemetry = tmp_path / "telemetry.py"
    telemetry.write_text(
        "A = Counter('a_total', 'a', ['x'])\nB = Gauge('b', 'b')\nC = Histogram('c_seconds', 'c')\n"
        "D = Counter('d_total', 'd')\nE = Gauge('e', 'e', ['x'])\n"
    )
    (tmp_path / "user.py").write_text(
        "from telemetry import A, B, C, E\nimport telemetry\n"
        "A.labels('x').inc()\nB.set(1)\ntelemetry.C.observe(2)\nE.labels('x')\n"
    )
    assert set(declared(telemetry)) - set(moved(tmp_path, telemetry)) == {"D", "E"}
