"""`charlstm sample`."""

from __future__ import annotations

from typing import Any

from rich.console import Console

from charlstm.cli.app import _command
from charlstm.cli.loading import _blas_threads, _load
from charlstm.cli.options import options_of
from charlstm.config import DEFAULT_ITEMS
from charlstm.display.console import err_console
from charlstm.display.generating import (
    adapting,
    cut_note,
    items_drawn,
    items_short,
    write_beams,
    write_items,
    write_samples,
)
from charlstm.display.reading import stdin_note
from charlstm.display.stdout import stream
from charlstm.errors import CharlstmError
from charlstm.options import SampleOptions


@_command
@options_of(SampleOptions)
def sample(**options: Any) -> None:
    """Stream generated text to stdout, one token at a time."""
    opts = SampleOptions(**options)
    _blas_threads(opts.threads, opts.num_samples)  # before numpy loads (charlstm.api imports it)
    from charlstm.api import SamplingOptions, check_adapt, check_sampling, random_seed

    err = err_console(opts.quiet)
    choice = {k: getattr(opts, k) for k in SamplingOptions.__annotations__}
    check_sampling(**choice)  # before loading
    opts.check()
    if opts.beam is not None:  # the K most likely texts: no draws
        _beams(opts, err)
        return
    prime = _prime(opts, err)
    # Adapting learns and samples with torch: load torch's model (and say so), not numpy's.
    engine = "torch" if opts.adapt else opts.engine
    net = _load(opts, err, streams=opts.num_samples, engine=engine)
    ids = net.encode_prime(prime, opts.on_unknown)  # a prime it cannot read ends here
    check_adapt(opts.adapt, prime, ids)  # before the line that says it learns
    seed = random_seed() if opts.seed is None else opts.seed
    err.print(f"seed {seed}")
    choice.update(seed=seed, stop=opts.stop or ())
    if opts.adapt:
        adapting(err, opts.adapt)
    if opts.items is not None or opts.novel or (net.item_kind and prime is None):
        _items(net, opts, choice, err)
        return
    head = (prime or "") if opts.echo_prime else ""
    if opts.num_samples == 1 and not opts.json_out:
        pieces = net.generate(prime, **choice)  # options checked before anything is written
        stream(pieces, head)
        cut_note(err, [pieces.finish_reason], opts.constrained, opts.length)
        return
    texts = net.samples(opts.num_samples, prime, **choice)
    write_samples(texts, head, seed, opts.json_out, logprobs=opts.logprobs is not None)
    reasons = texts.finish_reasons
    cut_note(err, reasons, opts.constrained, opts.length)


def _prime(opts: SampleOptions, err: Console) -> str | None:
    """The prime (api.read_prime), saying first when it waits for stdin on a terminal."""
    from charlstm.api import read_prime

    if opts.prime_file is None:  # given both, read_prime's error comes first, alone
        stdin_note(opts.prime, err)
    return read_prime(opts.prime, opts.prime_file)


def _beams(opts: SampleOptions, err: Console) -> None:
    """`--beam K`: the K most likely continuations (generate/beam.py), best first, each whole."""
    from charlstm.api import check_beam

    k = check_beam(opts.beam, **vars(opts))  # before loading
    prime = _prime(opts, err)
    net = _load(opts, err, streams=k, engine=opts.engine)
    beams = net.beam(prime, k, opts.length, stop=opts.stop, on_unknown=opts.on_unknown)
    write_beams(beams, (prime or "") if opts.echo_prime else "", opts.json_out)


def _items(net: Any, opts: SampleOptions, choice: dict[str, Any], err: Console) -> None:
    """An item model's items, one per line (--json: one object each), and on stderr how many
    candidates they took; too few new ones is a failure (exit 1), after what was found."""
    n = DEFAULT_ITEMS if opts.items is None else opts.items
    got = net.items(n, novel=opts.novel, **choice)
    write_items(got.items, choice["seed"], opts.json_out)
    items_drawn(err, got, opts.novel)
    if got.short:
        raise CharlstmError(items_short(got, n, opts.novel))
