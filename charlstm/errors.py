"""The one base class for expected failures (bad input, missing files, diverged training).

The CLI turns any of them into one line on stderr and a non-zero exit; anything else is a bug
and keeps its traceback. No torch import here: the CLI imports this at start-up.
"""

from __future__ import annotations

EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130


class CharlstmError(Exception):
    """An expected failure; str(e) is one line for the user, `code` the exit status."""

    code = EXIT_FAILURE

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class UsageError(CharlstmError):
    """An option or combination of options that cannot work; exit status 2, as click's own."""

    code = EXIT_USAGE
