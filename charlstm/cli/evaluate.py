"""`charlstm evaluate`."""

from __future__ import annotations

import json
import time
from typing import Annotated

import typer

from charlstm.cli.app import _command
from charlstm.cli.display import err_console
from charlstm.cli.options import (
    Checkpoints,
    DecodeErrors,
    Device,
    Encoding,
    EvalPrecision,
    Json,
    ModelPath,
    Quiet,
    Threads,
    _flag,
    _opt,
)
from charlstm.cli.output import _load, _note_unknown, _read_texts, _write_stdout
from charlstm.config import CHECKPOINTS, DYNAMIC_LR, DynamicConfig
from charlstm.errors import UsageError


@_command
def evaluate(
    text: Annotated[
        list[str],
        typer.Argument(help="Held-out text: file(s), a folder, - for stdin, or a built-in corpus."),
    ],
    model: ModelPath = None,
    streams: Annotated[
        int,
        typer.Option(
            help="Parallel streams, each carrying its state; 1 = one sequential pass. Each stream "
            "first reads the 256 tokens before its start, unscored, so the figure matches one pass "
            "closely (within 1e-4 nats on a character model) at a fraction of the time."
        ),
    ] = 64,
    encoding: Encoding = "utf-8",
    errors: DecodeErrors = "strict",
    json_out: Json = False,
    per_line: Annotated[
        bool,
        _flag(
            "--per-line",
            help='One JSON object per input line: {"line": TEXT, "tokens": N, "nats": TOTAL, '
            '"bits_per_char": BPC}. One sequential pass carries the state through the whole text; '
            "a line's newline counts in that line; the text's first character is not predicted.",
        ),
    ] = False,
    precision: Annotated[
        EvalPrecision,
        typer.Option(
            help="fp32 (exact), or bf16: about twice as fast on a GPU or a CPU with bf16 "
            "instructions, the loss within 1e-4 of fp32's on a trained model (BENCHMARKS.md)."
        ),
    ] = "fp32",
    reset_every: Annotated[
        int,
        typer.Option(
            help="Score the text in blocks of this many tokens, each from a zero state, so a "
            "prediction sees at most that much context (64: what nanoGPT's CPU recipe sees). 0 = "
            "carry the state through the text."
        ),
    ] = 0,
    dynamic: Annotated[
        bool,
        typer.Option(
            "--dynamic",
            help="Dynamic evaluation (Krause et al. 2018): read the text as one stream, and after "
            "scoring each segment take a gradient step on it, so the model keeps learning the "
            "text as it reads it. Every token is scored before it is learnt from; the "
            "checkpoint file is not changed.",
        ),
    ] = False,
    dynamic_rule: Annotated[
        str | None,
        _opt(
            "--dynamic: rms (the paper's rule: steps scaled by the training split's gradient "
            "sizes, decaying towards the trained weights) or sgd. Default: "
            f"{DynamicConfig.rule}."
        ),
    ] = None,
    dynamic_lr: Annotated[
        float | None,
        _opt(
            f"--dynamic: step size. Default: {DYNAMIC_LR['rms']:g} (rms), "
            f"{DYNAMIC_LR['sgd']:g} (sgd)."
        ),
    ] = None,
    dynamic_decay: Annotated[
        float | None,
        _opt(
            "--dynamic: pull towards the trained weights at each step (0 = none). Default: "
            f"{DynamicConfig.decay:g}."
        ),
    ] = None,
    dynamic_segment: Annotated[
        int | None,
        _opt(f"--dynamic: tokens per gradient step. Default: {DynamicConfig.segment}."),
    ] = None,
    checkpoints: Checkpoints = CHECKPOINTS,
    threads: Threads = 0,
    device: Device = "auto",
    quiet: Quiet = False,
) -> None:
    """Loss (nats per token), perplexity and bits per character of a held-out text."""
    err = err_console(quiet)
    if reset_every and per_line:
        raise UsageError("--per-line scores one pass carrying the state; drop --reset-every")
    tuned = {"rule": dynamic_rule, "lr": dynamic_lr, "decay": dynamic_decay,
             "segment": dynamic_segment}  # fmt: skip
    if not dynamic and any(v is not None for v in tuned.values()):
        raise UsageError("--dynamic-rule/-lr/-decay/-segment tune --dynamic; add --dynamic")
    how = DynamicConfig.build(**tuned) if dynamic else None
    from charlstm.api import torch_device

    body = _read_texts(text, encoding, errors, err)
    net = _load(model, threads, err, torch_device(device), 1 if per_line or dynamic else streams,
                checkpoints)  # fmt: skip
    encoded = net.encode_text(body)
    _note_unknown(encoded, err)
    t0 = time.perf_counter()
    if per_line:
        with err.status(f"evaluating {len(encoded.ids):,} tokens…"):
            rows = net.score_lines(encoded, dynamic=how)
        _write_stdout("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
        err.print(f"{len(encoded.ids) / (time.perf_counter() - t0):,.0f} tokens/s", style="dim")
        return
    with err.status(f"evaluating {len(encoded.ids):,} tokens…"):
        result = net.evaluate(encoded, streams=streams, reset_every=reset_every,
                              precision=precision, dynamic=how)  # fmt: skip
    seconds = time.perf_counter() - t0
    if json_out:
        out = {**result.to_dict(), "seconds": round(seconds, 3),
               "streams": 1 if how else streams, "reset_every": reset_every,
               "precision": precision}  # fmt: skip
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
