"""A command's parameters, generated from the options dataclasses (charlstm.options): one Typer
parameter per field, its help rendered there, so nothing is declared twice."""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable
from dataclasses import MISSING, Field, fields
from typing import Annotated, Any, Literal

import typer

from charlstm.options import help_text


def _completes(values: tuple[str, ...]) -> Callable[[str], list[str]]:
    """The shell's completion of an option among `values`."""
    return lambda incomplete: [v for v in values if v.startswith(incomplete)]


def _parameter(f: Field, hint: Any) -> inspect.Parameter:
    meta, default = f.metadata, None if f.default is MISSING else f.default
    required = f.default is MISSING and f.default_factory is MISSING  # a TEXT... to give
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
        kind = kind | None if default is None and not required else kind
    elif bool in kinds:
        flags = meta["flags"] or ("--" + f.name.replace("_", "-"),)
        info = typer.Option(*flags, help=help_text(f), metavar="", show_default=False)
    else:
        info = typer.Option(*meta["flags"], help=help_text(f), show_default=default is not None,
                            **extra)  # fmt: skip
    optional = default is None and not required and kind is not list[str]
    kind = kind | None if optional or type(None) in kinds else kind
    given = inspect.Parameter.empty if required else default
    return inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=given,
                             annotation=Annotated[kind, info])  # fmt: skip


def options_of(*classes: type) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Give a command `def cmd(ctx, **options)` one parameter per field of `classes`, in their
    order (Typer reads `__signature__` and `__annotations__`), in the place of `**options`."""

    def decorate(func: Callable[..., None]) -> Callable[..., None]:
        own = list(inspect.signature(func, eval_str=True).parameters.values())
        lead = [p for p in own if p.kind is not inspect.Parameter.VAR_KEYWORD]  # ctx
        params = lead
        for cls in classes:
            hints = typing.get_type_hints(cls)
            params += [_parameter(f, hints[f.name]) for f in fields(cls)
                       if f.metadata.get("cli", True)]  # fmt: skip
        func.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        func.__annotations__ = {p.name: p.annotation for p in params}
        return func

    return decorate


def of(cls: type, options: dict[str, Any]) -> dict[str, Any]:
    """The options that are fields of `cls`, for a command whose options span two classes."""
    return {f.name: options[f.name] for f in fields(cls) if f.name in options}
