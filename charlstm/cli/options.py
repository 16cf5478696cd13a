"""Options several commands share, as Annotated types, and the choices they offer."""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable
from dataclasses import MISSING, Field, fields
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from charlstm.config import DECODE_ERRORS, DEVICES
from charlstm.options import TrainOptions, help_text

Errors = Literal[DECODE_ERRORS]  # the choices of --errors, shown in --help


def _flag(*names: str, help: str) -> Any:
    """A boolean flag, shown without a value (`--json`, not `--json <bool>`)."""
    return typer.Option(*names, help=help, metavar="")


def _completes(values: tuple[str, ...]) -> Callable[[str], list[str]]:
    """The shell's completion of an option among `values`."""
    return lambda incomplete: [v for v in values if v.startswith(incomplete)]


def _help(name: str) -> str:
    """The help of a TrainOptions field (the options every command shares are declared there)."""
    return help_text(next(f for f in fields(TrainOptions) if f.name == name))


# Options several commands share.
Quiet = Annotated[bool, _flag("--quiet", "-q", help="Print nothing but errors.")]
Threads = Annotated[
    int,
    typer.Option(
        help="CPU threads; 0 = chosen for the work: one for a single stream (a sample, "
        "--per-line), all cores otherwise."
    ),
]
Device = Annotated[str, typer.Option(help=_help("device"), autocompletion=_completes(DEVICES))]
ModelPath = Annotated[
    Path | None,
    typer.Option(
        "--model", "-m",
        help="Checkpoint file or run folder. Default: the newest best.pt under --checkpoints.",
        show_default=False,
    ),
]  # fmt: skip
Checkpoints = Annotated[
    Path, typer.Option(envvar="CHARLSTM_CHECKPOINTS", help=_help("checkpoints"))
]
Encoding = Annotated[str, typer.Option(help=_help("encoding"))]
DecodeErrors = Annotated[Errors, typer.Option(help=_help("errors"))]
Texts = Annotated[
    list[str],
    typer.Argument(
        help="Text: file(s), a folder, - for stdin, or a built-in corpus.",
        metavar="TEXT...",
        show_default=False,
    ),
]


# The parameters of a command, generated from an options dataclass (options.py): one Typer
# parameter per field, its help rendered there, so nothing is declared twice.
SHARED = {"checkpoints": Checkpoints, "encoding": Encoding, "errors": DecodeErrors,
          "device": Device}  # fmt: skip


def _parameter(f: Field, hint: Any) -> inspect.Parameter:
    meta, default = f.metadata, None if f.default is MISSING else f.default
    if f.name in SHARED:
        return inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=default,
                                 annotation=SHARED[f.name])  # fmt: skip
    union = typing.get_origin(hint) in (typing.Union, types.UnionType)
    kinds = set(typing.get_args(hint)) if union else {hint}
    kind = str if str in kinds else next(k for k in kinds if k is not type(None))
    if typing.get_origin(kind) is tuple:  # repeatable: a list on the command line
        kind, default = list[str], None
    extra = {k: meta[k] for k in ("metavar", "envvar") if meta.get(k)}
    if meta.get("completes"):
        extra["autocompletion"] = _completes(meta["completes"])
    if meta["choices"]:
        kind = Literal[meta["choices"]]
    if meta["argument"]:
        info = typer.Argument(help=help_text(f), show_default=False, **extra)
        kind = kind | None if default is None else kind
    elif bool in kinds:
        flags = meta["flags"] or ("--" + f.name.replace("_", "-"),)
        info = typer.Option(*flags, help=help_text(f), metavar="", show_default=False)
    else:
        info = typer.Option(*meta["flags"], help=help_text(f), show_default=default is not None,
                            **extra)  # fmt: skip
    optional = default is None and kind is not list[str]
    kind = kind | None if optional or type(None) in kinds else kind
    return inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=default,
                             annotation=Annotated[kind, info])  # fmt: skip


def options_of(cls: type) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Give a command `def cmd(ctx, *, quiet…, **options)` one parameter per field of `cls`
    (Typer reads `__signature__` and `__annotations__`), in the place of `**options`."""

    def decorate(func: Callable[..., None]) -> Callable[..., None]:
        own = list(inspect.signature(func, eval_str=True).parameters.values())
        hints = typing.get_type_hints(cls)
        made = [_parameter(f, hints[f.name]) for f in fields(cls) if f.metadata.get("cli", True)]
        lead = [p for p in own if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]
        rest = [p for p in own if p.kind is inspect.Parameter.KEYWORD_ONLY]
        params = [*lead, *made, *rest]
        func.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        func.__annotations__ = {p.name: p.annotation for p in params}
        return func

    return decorate
