"""`charlstm sample`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from rich.console import Console

from charlstm.cli.app import _command
from charlstm.cli.display import err_console
from charlstm.cli.options import Checkpoints, ModelPath, Quiet, Threads, options_of
from charlstm.cli.output import _blas_threads, _load, _stdin_note, _stream, _write_stdout
from charlstm.config import CHECKPOINTS, SampleConfig
from charlstm.errors import CharlstmError, OptionError, UsageError
from charlstm.options import SampleOptions


@_command
@options_of(SampleOptions)
def sample(
    model: ModelPath = None,
    *,
    checkpoints: Checkpoints = CHECKPOINTS,
    threads: Threads = 0,
    quiet: Quiet = False,
    **options: Any,
) -> None:
    """Stream generated text to stdout, one token at a time."""
    opts = SampleOptions(**options)
    _blas_threads(threads, opts.num_samples)  # before numpy loads (charlstm.api imports it)
    from charlstm.api import SamplingOptions, check_adapt, check_sampling, random_seed

    err = err_console(quiet)
    choice = {k: getattr(opts, k) for k in SamplingOptions.__annotations__}
    check_sampling(**choice)  # before loading
    prime = _read_prime(opts.prime, opts.prime_file, err)
    if opts.adapt and opts.engine == "numpy":
        raise OptionError("{adapt} learns with torch; drop {engine=numpy}")
    # Adapting learns and samples with torch: load torch's model (and say so), not numpy's.
    engine = "torch" if opts.adapt else opts.engine
    net = _load(model, threads, err, streams=opts.num_samples, checkpoints=checkpoints,
                engine=engine)  # fmt: skip
    ids = net.encode_prime(prime, opts.on_unknown)  # a prime it cannot read ends here
    check_adapt(opts.adapt, prime, ids)  # before the line that says it learns
    seed = random_seed() if opts.seed is None else opts.seed
    err.print(f"seed {seed}")
    choice.update(seed=seed, stop=opts.stop or ())
    if opts.adapt:
        err.print(f"learning from the prime ({opts.adapt} pass{'es' if opts.adapt > 1 else ''})…")
    head = (prime or "") if opts.echo_prime else ""
    if opts.num_samples == 1 and not opts.json_out:
        pieces = net.generate(prime, **choice)  # options checked before anything is written
        _stream(pieces, head)
        _say_cut(opts, [pieces.finish_reason], err)
        return
    texts = net.samples(opts.num_samples, prime, **choice)
    for i, text in enumerate(texts, start=1):
        if opts.json_out:
            _write_stdout(json.dumps({"sample": i, "seed": seed, "text": head + text}) + "\n")
        else:  # a sample's own last newline ends its line: no second one (--json is exact)
            end = "" if (head + text).endswith("\n") else "\n"
            _write_stdout(("\n" if i > 1 else "") + f"--- sample {i} ---\n{head}{text}{end}")
    _say_cut(opts, texts.finish_reasons, err)


def _say_cut(opts: SampleOptions, reasons: list[str | None], err: Console) -> None:
    """Under a pattern, a sample that reached --length before its match ended is cut: say so."""
    cut = [str(i) for i, reason in enumerate(reasons, start=1) if reason == "length"]
    if cut and (opts.regex is not None or opts.json_schema is not None):
        if len(reasons) == 1:
            which = "the sample was"
        else:
            which = f"sample {cut[0]} was" if len(cut) == 1 else f"samples {', '.join(cut)} were"
        length = SampleConfig.length if opts.length is None else opts.length
        err.print(f"{which} cut at --length {length} tokens before the model "
                  "ended its match: it may be only the start of one", markup=False)


def _read_prime(prime: str | None, prime_file: Path | None, err: Console) -> str | None:
    if prime is not None and prime_file is not None:
        raise UsageError("give the prime with --prime or with --prime-file, not both")
    if prime_file is not None:
        try:
            return prime_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            why = getattr(e, "strerror", None) or str(e).splitlines()[0]
            raise CharlstmError(f"cannot read the prime from '{prime_file}': {why}") from None
    if prime == "-":
        _stdin_note("-", err)
        return sys.stdin.read()
    return prime
