"""`charlstm sample`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from rich.console import Console

from charlstm.cli.app import _command
from charlstm.cli.options import Checkpoints, ModelPath, Quiet, Threads, options_of
from charlstm.cli.output import _blas_threads, _load, _stdin_note, _stream, _write_stdout
from charlstm.config import CHECKPOINTS, DEFAULT_ITEMS, MAX_ITEMS, SampleConfig
from charlstm.display.console import err_console
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
    from charlstm.api import (
        SamplingOptions,
        check_adapt,
        check_sampling,
        openai_logprobs,
        random_seed,
    )

    err = err_console(quiet)
    choice = {k: getattr(opts, k) for k in SamplingOptions.__annotations__}
    check_sampling(**choice)  # before loading
    if opts.logprobs is not None and not opts.json_out:
        raise OptionError("{logprobs} are shown in JSON: add {json}")
    if opts.beam is not None:  # the K most likely texts: no draws
        _beams(model, opts, err, checkpoints, threads)
        return
    prime = _read_prime(opts.prime, opts.prime_file, err)
    if (opts.items is not None or opts.novel) and prime is not None:
        raise OptionError("{items} starts every item from the start; drop the prime")
    if opts.items is not None and opts.num_samples != 1:  # before loading
        raise OptionError("{items} prints items, one per line; drop {num_samples}",
                          flags={"num_samples": "--num-samples"})  # fmt: skip
    if opts.items is not None and not 1 <= opts.items <= MAX_ITEMS:
        raise OptionError(f"{{items}} must be between 1 and {MAX_ITEMS:,}, got {opts.items}")
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
    if opts.items is not None or opts.novel or (net.item_kind and prime is None):
        _print_items(net, opts, choice, err)
        return
    head = (prime or "") if opts.echo_prime else ""
    if opts.num_samples == 1 and not opts.json_out:
        pieces = net.generate(prime, **choice)  # options checked before anything is written
        _stream(pieces, head)
        _say_cut(opts, [pieces.finish_reason], err)
        return
    texts = net.samples(opts.num_samples, prime, **choice)
    for i, text in enumerate(texts, start=1):
        if opts.logprobs is not None:  # each sample is its tokens (text_offset: in "text")
            scored = openai_logprobs(text, len(head))
            line = {"sample": i, "seed": seed, "text": head + "".join(scored["tokens"]),
                    "logprobs": scored}  # fmt: skip
            _write_stdout(json.dumps(line, ensure_ascii=False) + "\n")
        elif opts.json_out:
            _write_stdout(json.dumps({"sample": i, "seed": seed, "text": head + text}) + "\n")
        else:
            _write_whole(i, f"sample {i}", head + text)
    _say_cut(opts, getattr(texts, "finish_reasons", []), err)


def _write_whole(i: int, header: str, text: str) -> None:
    """Text I (from 1) of several, printed whole under its header line, after a blank line
    (from the second on). Its own last newline ends its line: no second one (--json is exact)."""
    end = "" if text.endswith("\n") else "\n"
    _write_stdout(("\n" if i > 1 else "") + f"--- {header} ---\n{text}{end}")


def _beams(model: Path | None, opts: SampleOptions, err: Console, checkpoints: Path,
           threads: int) -> None:  # fmt: skip
    """`--beam K`: the K most likely continuations (generate/beam.py), best first, each whole."""
    from charlstm.api import check_beam

    k = check_beam(opts.beam, **vars(opts))  # before loading
    prime = _read_prime(opts.prime, opts.prime_file, err)
    net = _load(model, threads, err, streams=k, checkpoints=checkpoints, engine=opts.engine)
    beams = net.beam(prime, k, opts.length, stop=opts.stop, on_unknown=opts.on_unknown)
    head = (prime or "") if opts.echo_prime else ""
    for i, beam in enumerate(beams, start=1):
        if opts.json_out:
            _write_stdout(json.dumps({"beam": i, "logprob": beam.logprob, "tokens": beam.tokens,
                                      "text": head + beam.text}) + "\n")  # fmt: skip
        else:
            _write_whole(i, f"beam {i} · log-prob {beam.logprob:.3f}", head + beam.text)


def _print_items(net: Any, opts: SampleOptions, choice: dict[str, Any], err: Console) -> None:
    """An item model's items, one per line (--json: one object each), and on stderr how many
    candidates they took; too few new ones is a failure (exit 1), after what was found."""
    from charlstm.generate.items import MAX_DRAWS

    n = DEFAULT_ITEMS if opts.items is None else opts.items
    got = net.items(n, novel=opts.novel, **choice)
    for i, item in enumerate(got.items, start=1):
        line = {"item": i, "seed": choice["seed"], "text": item} if opts.json_out else None
        _write_stdout((item if line is None else json.dumps(line)) + "\n")
    what = "new items" if opts.novel else "items"
    err.print(f"{len(got.items):,} {what} from {got.drawn:,} candidates", highlight=False)
    if got.short:
        why = ("a higher --temp strays further from the training list" if opts.novel else
               "the others were empty or ran to --length without ending")  # fmt: skip
        raise CharlstmError(
            f"only {len(got.items):,} {what} of the {n:,} asked for: the model gave no more in "
            f"{got.drawn:,} candidates ({MAX_DRAWS} per item at most); {why}"
        )


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
