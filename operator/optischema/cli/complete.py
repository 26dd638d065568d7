"""``kubectl_complete-optischema``: shell completion for the plugin, the way kubectl ≥ 1.26 asks for it.

When the user presses TAB after ``kubectl optischema …``, kubectl runs ``kubectl_complete-optischema`` (found on
``PATH``) with the words typed after the plugin's name, the last one being the word being completed (empty after
a space), and shows what it prints in Cobra's ``__complete`` format: one candidate a line, then ``:<directive>``
(``4``: no file completion; ``0``: the shell's default, files, for ``--kubeconfig`` and ``--output-file``).

Subcommands and flags come from the plugin's own parser (``plugin_args``), so they cannot drift from it; names come
from the cluster with the flags typed so far (``-n``, ``--kubeconfig``, ``--context``, ``--as``): recommendations
for ``show``/``approve``/``reject``/``export``, targets for ``analyze``/``status``/``report``/``top`` and
``--target``, IndexChanges for ``retry``/``rollback``, namespaces for ``-n``, contexts for ``--context``. A
completion never fails loudly: when the cluster cannot be asked it offers what it knows offline.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Sequence

from optischema.kube.client import Kube

from .plugin_args import build_parser
from .plugin_connect import Options, connect, contexts

#: Cobra's directives.
DEFAULT, NO_FILES = 0, 4
#: What each command's positional argument names.
POSITIONAL = {
    "show": "tuningrecommendations",
    "approve": "tuningrecommendations",
    "reject": "tuningrecommendations",
    "export": "tuningrecommendations",
    "analyze": "postgrestargets",
    "status": "postgrestargets",
    "report": "postgrestargets",
    "top": "postgrestargets",
    "retry": "indexchanges",
    "rollback": "indexchanges",
}
FILES = frozenset({"--kubeconfig", "--output-file"})

Lister = Callable[[str, Options], list[str]]


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _flags(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {option: action for action in parser._actions for option in action.option_strings}


def _takes_value(action: argparse.Action) -> bool:
    return action.nargs != 0


def names(plural: str, options: Options) -> list[str]:
    """Names of ``plural`` (or ``namespaces``) in the namespace the flags select; empty when the cluster says no."""
    try:
        connection = connect(options)
        kube = Kube(api_client=connection.api_client)
        if plural == "namespaces":
            found = kube.core.list_namespace(_request_timeout=5)
            return sorted(str(n.metadata.name) for n in found.items or [] if n.metadata is not None)
        items = asyncio.run(kube.list(plural, connection.namespace))
        return sorted(str(item["metadata"]["name"]) for item in items)
    except Exception:  # completion must never print an error into the user's shell
        return []


def complete(words: Sequence[str], lister: Lister = names) -> tuple[list[str], int]:
    """The candidates for the last of ``words`` and Cobra's directive."""
    words = list(words) or [""]
    *typed, current = words
    parser = build_parser()
    commands = _subparsers(parser)
    command: str | None = None
    given: dict[str, str] = {}
    flags = _flags(parser)
    expecting: argparse.Action | None = None
    previous = ""
    for word in typed:
        if expecting is not None:
            given[expecting.dest] = word
            expecting = None
        elif word.startswith("-"):
            option, _, value = word.partition("=")
            action = flags.get(option)
            if action is not None and _takes_value(action) and not value:
                expecting = action
                previous = option
            elif action is not None and value:
                given[action.dest] = value
        elif command is None and word in commands:
            command = word
            flags = _flags(commands[word])
    options = Options(
        kubeconfig=given.get("kubeconfig"),
        context=given.get("context"),
        namespace=given.get("namespace"),
        as_user=given.get("as_user"),
    )
    if expecting is not None:  # the word being typed is a flag's value
        return _value(expecting, previous, current, options, lister)
    if current.startswith("-"):
        option, equals, value = current.partition("=")
        action = flags.get(option)
        if equals and action is not None:
            found, directive = _value(action, option, value, options, lister)
            return [f"{option}={v}" for v in found], directive
        return sorted(f for f in flags if f.startswith(current)), NO_FILES
    if command is None:
        return sorted(c for c in commands if c.startswith(current)), NO_FILES
    plural = POSITIONAL.get(command)
    if plural is None:
        return [], NO_FILES
    return [n for n in lister(plural, options) if n.startswith(current)], NO_FILES


def _value(
    action: argparse.Action, option: str, current: str, options: Options, lister: Lister
) -> tuple[list[str], int]:
    if option in FILES:
        return [], DEFAULT
    if action.choices:
        return [str(c) for c in action.choices if str(c).startswith(current)], NO_FILES
    if action.dest == "namespace":
        return [n for n in lister("namespaces", options) if n.startswith(current)], NO_FILES
    if action.dest == "context":
        return [c for c in contexts(options) if c.startswith(current)], NO_FILES
    if action.dest == "target":
        return [n for n in lister("postgrestargets", options) if n.startswith(current)], NO_FILES
    return [], NO_FILES


def main(argv: Sequence[str] | None = None) -> int:
    found, directive = complete(sys.argv[1:] if argv is None else argv)
    print("\n".join([*found, f":{directive}"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
