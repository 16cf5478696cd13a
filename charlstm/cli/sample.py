"""`charlstm sample`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from charlstm.cli.app import _command
from charlstm.cli.display import err_console
from charlstm.cli.options import (
    Checkpoints,
    Engine,
    ModelPath,
    OnUnknown,
    Quiet,
    Threads,
    _flag,
    _opt,
)
from charlstm.cli.output import _blas_threads, _load, _stdin_note, _stream, _write_stdout
from charlstm.config import CHECKPOINTS, SampleConfig
from charlstm.errors import CharlstmError, OptionError, UsageError


@_command
def sample(
    model: ModelPath = None,
    prime: Annotated[
        str | None, _opt("Text that starts the sample and warms the state; - reads stdin.")
    ] = None,
    prime_file: Annotated[
        Path | None, _opt("Read the prime from this file (UTF-8) instead.")
    ] = None,
    length: Annotated[
        int | None,
        _opt(
            "Tokens to generate: characters for a char model, words or runs of spacing for word, "
            f"subwords for bpe. Default: {SampleConfig.length}.",
            "--length",
            "-n",
        ),
    ] = None,
    temp: Annotated[
        float | None,
        _opt(
            "Temperature: 0 = greedy, lower = safer, higher = wilder. Default: "
            f"{SampleConfig.temperature}.",
            "--temp",
        ),
    ] = None,
    top_k: Annotated[
        int | None, _opt("Sample among the k most likely tokens. Default: 0 = all.")
    ] = None,
    top_p: Annotated[
        float | None,
        _opt("Sample among the most likely tokens whose probability sums to p. Default: 1 = all."),
    ] = None,
    greedy: Annotated[
        bool, _flag("--greedy", help="Always take the most likely token (= --temp 0).")
    ] = False,
    stop: Annotated[
        list[str] | None,
        _opt(
            "End the sample before this text (give it again for more); the text itself is not "
            "printed. E.g. --stop $'\\n\\n' for one paragraph."
        ),
    ] = None,
    seed: Annotated[
        int | None, _opt("Random seed; random when absent and reported on stderr.")
    ] = None,
    num_samples: Annotated[
        int,
        typer.Option(
            "--num-samples",
            "-N",
            help="Independent samples, generated together in one batch from the same prime. With "
            "more than one, each is printed whole under a line [bold]--- sample I ---[/] (I from "
            "1), samples separated by a blank line; only a single sample streams.",
        ),
    ] = 1,
    json_out: Annotated[
        bool,
        _flag(
            "--json",
            help='One JSON object per sample per line: {"sample": I, "seed": SEED, '
            '"text": prime + generated text} (without the prime with --no-echo-prime).',
        ),
    ] = False,
    echo_prime: Annotated[
        bool,
        typer.Option(
            "--echo-prime/--no-echo-prime", metavar="", help="Print the prime before the sample."
        ),
    ] = True,
    on_unknown: Annotated[
        OnUnknown, typer.Option(help="Prime characters the model never saw: error or skip.")
    ] = "error",
    adapt: Annotated[
        int,
        typer.Option(
            help="Learn from the prime first, reading it this many times with dynamic "
            "evaluation's updates, so a page of text steers the style (0 = off). The "
            "checkpoint is not changed.",
            metavar="PASSES",
        ),
    ] = 0,
    engine: Annotated[
        Engine,
        typer.Option(
            help="What generates: numpy (from the run's model.safetensors, without loading "
            "torch: the first character in a fraction of a second), torch, or auto: numpy when "
            "model.safetensors is there and up to date."
        ),
    ] = "auto",
    checkpoints: Checkpoints = CHECKPOINTS,
    threads: Threads = 0,
    quiet: Quiet = False,
) -> None:
    """Stream generated text to stdout, one token at a time."""
    _blas_threads(threads, num_samples)  # before numpy loads (charlstm.api imports it)
    from charlstm.api import check_adapt, check_sampling, random_seed

    err = err_console(quiet)
    check_sampling(length=length, temp=temp, top_k=top_k, top_p=top_p, greedy=greedy,
                   seed=seed, stop=stop, on_unknown=on_unknown, adapt=adapt)  # before loading
    prime = _read_prime(prime, prime_file, err)
    if adapt and engine == "numpy":
        raise OptionError("{adapt} learns with torch; drop {engine=numpy}")
    # Adapting learns and samples with torch: load torch's model (and say so), not numpy's.
    engine = "torch" if adapt else engine
    net = _load(model, threads, err, streams=num_samples, checkpoints=checkpoints, engine=engine)
    ids = net.encode_prime(prime, on_unknown)  # a prime it cannot read ends here, before the seed
    check_adapt(adapt, prime, ids)  # before the line that says it learns
    if seed is None:
        seed = random_seed()
    err.print(f"seed {seed}")
    choice = {"length": length, "temp": temp, "top_k": top_k, "top_p": top_p, "greedy": greedy,
              "seed": seed, "on_unknown": on_unknown, "stop": stop or (),
              "adapt": adapt}  # fmt: skip
    if adapt:
        err.print(f"learning from the prime ({adapt} pass{'es' if adapt > 1 else ''})…")
    head = (prime or "") if echo_prime else ""
    if num_samples == 1 and not json_out:
        pieces = net.generate(prime, **choice)  # checks the options before anything is written
        _stream(pieces, head)
        return
    texts = net.samples(num_samples, prime, **choice)
    for i, text in enumerate(texts, start=1):
        if json_out:
            _write_stdout(json.dumps({"sample": i, "seed": seed, "text": head + text}) + "\n")
        else:  # a sample's own last newline ends its line: no second one (--json is exact)
            end = "" if (head + text).endswith("\n") else "\n"
            _write_stdout(("\n" if i > 1 else "") + f"--- sample {i} ---\n{head}{text}{end}")


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
