"""``optischema``: the operator's command line. Subcommands arrive with the engine and the operator."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from optischema import __version__
from optischema.api import crdgen
from optischema.cli import analyze, analyze_target, benchmark, run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="optischema", description="Tune PostgreSQL the way a careful DBA would.")
    parser.add_argument("--version", action="version", version=f"optischema {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    crds = commands.add_parser("crds", help="write the CustomResourceDefinitions generated from the API models")
    crds.add_argument("directory", nargs="?", type=Path, default=Path("crds"), help="where to write (default: crds)")
    analyze.add_parser(commands)
    benchmark.add_parser(commands)
    run.add_parser(commands)
    analyze_target.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "crds":
        return crdgen.main([str(args.directory)])
    if hasattr(args, "run"):
        return int(args.run(args))
    parser.print_help(sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
