"""Why an analysis could not run, said so that a person knows what to do next."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Exit codes of ``optischema analyze`` (documented in the README)."""

    OK = 0
    FAILED = 1  # an unexpected error
    BAD_INPUT = 2  # arguments or DSN
    UNREACHABLE = 3  # connection or authentication
    PREREQUISITE = 4  # pg_stat_statements missing or not loaded (nothing to analyse is a normal outcome: OK)


class AnalysisError(Exception):
    """An analysis that cannot run: ``reason`` is a CamelCase word (it becomes a condition reason), the message
    says what happened and how to fix it."""

    def __init__(self, reason: str, message: str, exit_code: ExitCode = ExitCode.FAILED) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.exit_code = exit_code

    def __str__(self) -> str:
        return self.message
