"""The Typer app, the one error wrapper every command goes through, and main().

Exit codes: 0 success, 1 failure, 2 usage error, 130 interrupted.
"""

from __future__ import annotations

import functools
import gc
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from charlstm import __version__
from charlstm.errors import EXIT_INTERRUPTED, EXIT_USAGE, CharlstmError, OptionError

app = typer.Typer(
    name="charlstm",
    help="Train character-level LSTM language models on any text, stream samples, measure loss.",
    rich_markup_mode="rich",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _command(func: Callable[..., None]) -> Callable[..., None]:
    """Register a command whose expected failures end as one stderr line and an exit code."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        try:
            func(*args, **kwargs)
        except CharlstmError as e:
            what = e.for_cli() if isinstance(e, OptionError) else e  # named as flags here
            sys.stderr.write(f"charlstm: error: {what}\n")
            raise typer.Exit(e.code) from None
        except KeyboardInterrupt:
            # A second Ctrl-C (the first one only asks training to stop): no traceback.
            sys.stderr.write("charlstm: interrupted\n")
            raise typer.Exit(EXIT_INTERRUPTED) from None

    return app.command()(wrapper)


def _version_callback(value: bool) -> None:
    if value:
        sys.stdout.write(f"charlstm {__version__}\n")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version_callback, is_eager=True, help="Print the version."
        ),
    ] = False,
) -> None:
    """Train character-level LSTM language models on any text, stream samples, measure loss."""



def _process_age() -> float:
    """Seconds since this command started (Linux: /proc), else 0: under torchrun, since the
    launcher (this process's parent) started, as `torchrun ... --budget` is the command."""
    launched = "TORCHELASTIC_RUN_ID" in os.environ
    try:
        stat = Path(f"/proc/{os.getppid() if launched else 'self'}/stat").read_text()
        ticks = int(stat.rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return max(0.0, uptime - ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return 0.0


def main() -> None:
    """Console entry point: expected errors become one stderr line and an exit code."""
    # Ctrl-C ends every command (status 130), also when this process was started with SIGINT
    # ignored, as a shell script's background job (`cmd &`) is: Python then keeps it ignored,
    # and a stream sent SIGINT would run on to its end.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    process_start = time.perf_counter() - _process_age()
    try:
        code = app(standalone_mode=False, obj={"process_start": process_start})
    except Exception as e:
        # Typer vendors its own click, so its exceptions are matched by class name.
        kinds = {cls.__name__ for cls in type(e).__mro__}
        if "NoArgsIsHelpError" in kinds:  # the help is already on screen
            code = EXIT_USAGE
        elif "UsageError" in kinds:
            ctx = getattr(e, "ctx", None)
            where = f"charlstm {ctx.info_name} --help" if ctx and ctx.parent else "charlstm --help"
            sys.stderr.write(f"charlstm: {e.format_message()} (see {where})\n")
            code = EXIT_USAGE
        elif "Abort" in kinds:
            sys.stderr.write("charlstm: interrupted\n")
            code = EXIT_INTERRUPTED
        else:
            raise
    except KeyboardInterrupt:
        sys.stderr.write("charlstm: interrupted\n")
        code = EXIT_INTERRUPTED
    except BrokenPipeError:
        from charlstm.display.stdout import reader_gone

        reader_gone()
        code = 0
    if code == EXIT_INTERRUPTED:
        # Already on the way out: a further Ctrl-C must not kill the process mid-exit (which
        # would end it by the signal instead of with status 130).
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Python's exit collects every object torch made, many times over (5-6 s of a budgeted
    # run's wall time on a busy machine, against 0.7-1 s frozen); exit handlers still run.
    gc.freeze()
    sys.exit(code if isinstance(code, int) else 0)
