"""`charlstm evaluate`."""

from __future__ import annotations

import time
from typing import Any

from charlstm.cli.app import _command
from charlstm.cli.loading import _load, _read_texts
from charlstm.cli.options import options_of
from charlstm.config import DynamicConfig
from charlstm.display.console import err_console
from charlstm.display.evaluation import speed, write_report, write_scores
from charlstm.display.reading import unknown_notes
from charlstm.options import EvaluateOptions


@_command
@options_of(EvaluateOptions)
def evaluate(**options: Any) -> None:
    """Loss (nats per token), perplexity and bits per character of a held-out text."""
    o = EvaluateOptions(**options)
    err = err_console(o.quiet)
    o.check()
    how = DynamicConfig.build(**o.tuned()) if o.dynamic else None
    from charlstm.api import torch_device

    body = _read_texts(o.text, o.encoding, o.errors, err)
    streams = 1 if o.per_line or o.per_token or o.dynamic else o.streams
    net = _load(o, err, torch_device(o.device), streams)
    encoded = net.encode_text(body)
    unknown_notes(encoded, err)
    t0 = time.perf_counter()
    with err.status(f"evaluating {len(encoded.ids):,} tokens…"):
        if o.per_token:
            scores = [{"token": t.text, "logprob": t.logprob}
                      for t in net.token_logprobs(encoded)]  # fmt: skip
        elif o.per_line:
            scores = net.score_lines(encoded, dynamic=how)
        else:
            result = net.evaluate(encoded, streams=o.streams, reset_every=o.reset_every,
                                  precision=o.precision, dynamic=how)  # fmt: skip
    if o.per_token or o.per_line:
        write_scores(scores)
        err.print(speed(len(encoded.ids), time.perf_counter() - t0), style="dim")
        return
    seconds = time.perf_counter() - t0
    settings = {"reset_every": o.reset_every, "precision": o.precision}  # streams: the result's
    write_report(result, seconds, o.json_out, settings)
    err.print(speed(result.tokens, seconds), style="dim")
