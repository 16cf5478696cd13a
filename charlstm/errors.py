"""The one base class for expected failures (bad input, missing files, diverged training).

The CLI turns any of them into one line on stderr and a non-zero exit; anything else is a bug
and keeps its traceback. No torch import here: the CLI imports this at start-up.
"""

from __future__ import annotations

import re

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


class OptionError(UsageError):
    """A bad option, named as its caller knows it: str(e) names Python's keyword arguments
    (`on_unknown="skip"`), `e.for_cli()` the command line's flags (`--on-unknown skip`). One
    message, written with {name} or {name=value} for each option it names; other text in it
    goes through `literal` (a brace is doubled)."""

    def __init__(
        self, template: str, *, flags: dict[str, str] | None = None, code: int | None = None
    ) -> None:
        self.template = template
        self.flags = flags or {}  # keyword -> flag, where the flag is not --keyword-with-dashes
        super().__init__(self._render(cli=False), code)

    @staticmethod
    def literal(value: object) -> str:
        """Text for a template, as it is (a value the user gave, say)."""
        return str(value).replace("{", "{{").replace("}", "}}")

    def for_cli(self) -> str:
        return self._render(cli=True)

    def _render(self, cli: bool) -> str:
        def name(match: re.Match[str]) -> str:
            if match.group(0) in ("{{", "}}"):
                return match.group(0)[0]
            key, value = match.group(1), match.group(2)
            if cli:
                flag = self.flags.get(key, "--" + key.replace("_", "-"))
                return flag if value is None else f"{flag} {value}"
            if value is None:
                return key
            return f"{key}={value}" if _is_number(value) else f'{key}="{value}"'

        return _OPTION.sub(name, self.template)


_OPTION = re.compile(r"\{\{|\}\}|\{([a-z_]+)(?:=([^{}]*))?\}")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
