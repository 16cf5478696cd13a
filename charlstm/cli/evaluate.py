"""`charlstm evaluate`."""

from __future__ import annotations

import json
import time
from typing import Annotated, Any

import typer

from charlstm.cli.app import _command
from charlstm.cli.options import Checkpoints, Device, ModelPath, Quiet, Threads, options_of
from charlstm.cli.output import _load, _note_unknown, _read_texts, _write_stdout
from charlstm.config import CHECKPOINTS, DynamicConfig
from charlstm.display.console import err_console
from charlstm.errors import UsageError
from charlstm.options import EvaluateOptions


@_command
@options_of(EvaluateOptions)
def evaluate(
    text: Annotated[
        list[str],
        typer.Argument(help="Held-out text: file(s), a folder, - for stdin, or a built-in corpus."),
    ],
    model: ModelPath = None,
    *,
    checkpoints: Checkpoints = CHECKPOINTS,
    threads: Threads = 0,
    device: Device = "auto",
    quiet: Quiet = False,
    **options: Any,
) -> None:
    """Loss (nats per token), perplexity and bits per character of a held-out text."""
    err = err_console(quiet)
    o = EvaluateOptions(**options)
    if o.reset_every and (o.per_line or o.per_token):
        raise UsageError("--per-line and --per-token score one pass carrying the state; drop "
                         "--reset-every")  # fmt: skip
    if o.per_token and (o.per_line or o.dynamic):
        raise UsageError("--per-token scores each token of one plain pass; drop --per-line and "
                         "--dynamic")  # fmt: skip
    if not o.dynamic and o.tuned():
        raise UsageError("--dynamic-rule/-lr/-decay/-segment tune --dynamic; add --dynamic")
    how = DynamicConfig.build(**o.tuned()) if o.dynamic else None
    from charlstm.api import torch_device

    body = _read_texts(text, o.encoding, o.errors, err)
    streams = 1 if o.per_line or o.per_token or o.dynamic else o.streams
    net = _load(model, threads, err, torch_device(device), streams, checkpoints)
    encoded = net.encode_text(body)
    _note_unknown(encoded, err)
    t0 = time.perf_counter()
    if o.per_token:
        with err.status(f"evaluating {len(encoded.ids):,} tokens…"):
            tokens = net.token_logprobs(encoded)
        _write_stdout("".join(json.dumps({"token": t.text, "logprob": t.logprob},
                                         ensure_ascii=False) + "\n" for t in tokens))  # fmt: skip
        err.print(f"{len(encoded.ids) / (time.perf_counter() - t0):,.0f} tokens/s", style="dim")
        return
    if o.per_line:
        with err.status(f"evaluating {len(encoded.ids):,} tokens…"):
            rows = net.score_lines(encoded, dynamic=how)
        _write_stdout("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
        err.print(f"{len(encoded.ids) / (time.perf_counter() - t0):,.0f} tokens/s", style="dim")
        return
    with err.status(f"evaluating {len(encoded.ids):,} tokens…"):
        result = net.evaluate(encoded, streams=o.streams, reset_every=o.reset_every,
                              precision=o.precision, dynamic=how)  # fmt: skip
    seconds = time.perf_counter() - t0
    if o.json_out:
        out = {**result.to_dict(), "seconds": round(seconds, 3),
               "streams": 1 if how else o.streams, "reset_every": o.reset_every,
               "precision": o.precision}  # fmt: skip
        _write_stdout(json.dumps(out) + "\n")
    else:
        d = result.dynamic
        _write_stdout(
            f"loss        {result.loss:.4f} nats/token\n"
            f"perplexity  {result.perplexity:.3f}\n"
            f"bits/char   {result.bits_per_char:.4f}\n"
            f"tokens      {result.tokens:,}\n"
            + (f"dynamic     {d['rule']}, segment {d['segment']}, lr {d['lr']:g}, decay "
               f"{d['decay']:g}\n" if d else "")
        )  # fmt: skip
    err.print(f"{result.tokens / seconds:,.0f} tokens/s", style="dim")
