"""The README's security table names, for each attack, the test that holds it: every one it names must exist."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_test_the_security_table_names_exists() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Security") :]
    section = section[: section.index("\n## ", 1)]
    named, current = [], None
    for path, name, continued in re.findall(r"`(tests/[\w/]+\.py)(?:::(\w+))?`|`::(\w+)`", section):
        current = path or current
        assert current is not None, "a `::test` before any file"
        named.append((current, name or continued))
    assert len(named) >= 25
    missing = [
        f"{path}::{name}" if name else path
        for path, name in named
        if not (ROOT / path).exists() or (name and not re.search(rf"def {name}\b", (ROOT / path).read_text()))
    ]
    assert missing == []
