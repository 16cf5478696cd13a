"""The command line: options → config objects → library calls (api.py, runs.py), and display.
The only module that writes to the terminal: generated text (or JSON when asked) on stdout,
everything else on stderr (display.py draws it).

Exit codes: 0 success, 1 failure, 2 usage error, 130 interrupted.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from charlstm import __version__
from charlstm.config import (
    CELLS,
    CHECKPOINTS,
    ModelConfig,
    SampleConfig,
    ServeConfig,
    TrainConfig,
)
from charlstm.display import (
    TrainDisplay,
    err_console,
    info_lines,
    plot_metrics,
    print_summary,
)
from charlstm.errors import EXIT_INTERRUPTED, EXIT_USAGE, CharlstmError, UsageError

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
            sys.stderr.write(f"charlstm: error: {e}\n")
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


def _write_stdout(text: str) -> None:
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away (`| head`): stop quietly with success, as `yes | head` does.
        # (Left alone, click would turn the broken pipe into exit status 1.)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        raise typer.Exit(0) from None


class _StdoutConsole(Console):
    """A Rich console for the product on stdout: a reader that goes away (`| head`) ends the
    command quietly with status 0, as for plain text (Rich's own choice is status 1)."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        raise typer.Exit(0)


# Options several commands share.
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but errors.")]
Threads = Annotated[
    int,
    typer.Option(
        help="CPU threads; 0 = chosen for the work: one for a single stream (a sample, "
        "--per-line), all cores otherwise."
    ),
]
Device = Annotated[
    str,
    typer.Option(
        help="auto (a CUDA GPU, else Apple's MPS, else the CPU), cpu, cuda, cuda:N or mps."
    ),
]
ModelPath = Annotated[
    Path | None,
    typer.Option(
        "--model", "-m",
        help="Checkpoint file or run folder. Default: the newest best.pt under ./checkpoints.",
        show_default=False,
    ),
]  # fmt: skip
Encoding = Annotated[str, typer.Option(help="Text encoding of the files.")]
DecodeErrors = Annotated[
    str, typer.Option(help="Undecodable bytes: strict (stop), replace or ignore.")
]
Texts = Annotated[
    list[str],
    typer.Argument(help="Text: file(s), a folder, - for stdin, or a built-in corpus."),
]


def _opt(help: str, *names: str) -> Any:
    """An option whose absence (None) lets charlstm choose; `help` says what it chooses."""
    return typer.Option(*names, help=help, show_default=False)


# ----------------------------------------------------------------------------------- train


@_command
def train(
    corpus: Annotated[
        list[str] | None,
        typer.Argument(
            help="Text to learn from: file(s), a folder (its text files, recursively), "
            "- for stdin, or a built-in corpus: [bold]shakespeare[/], [bold]python[/].",
            show_default=False,
        ),
    ] = None,
    budget: Annotated[
        str | None,
        _opt(
            "Wall-clock limit, e.g. 135s, 10m, 2h. The learning rate decays to its floor as the "
            "budget runs out. Default: 10m when no --steps or --epochs is given."
        ),
    ] = None,
    steps: Annotated[int | None, _opt("Stop after this many optimizer steps.")] = None,
    epochs: Annotated[
        float | None, _opt("Stop after this many passes over the training split.")
    ] = None,
    tokenizer: Annotated[
        str | None,
        _opt(
            "Tokens: char (one per character; the default), word (whitespace-separated words with "
            "their spacing, via Hugging Face tokenizers) or bpe (byte-level subwords learnt from "
            "the corpus)."
        ),
    ] = None,
    vocab_size: Annotated[
        int | None,
        _opt(
            "word/bpe: the vocabulary's size (the most frequent words or merges of the training "
            "split). Default: 50000 for word, 4096 for bpe."
        ),
    ] = None,
    min_frequency: Annotated[
        int | None,
        _opt("word/bpe: leave out words (merges) seen fewer times. Default: 1 word, 2 bpe."),
    ] = None,
    cell: Annotated[
        str | None, _opt(f"Recurrent cell: {', '.join(CELLS)}. Default: {ModelConfig.cell}.")
    ] = None,
    hidden: Annotated[
        int | None,
        _opt(
            "Units per recurrent layer. Default: sized to the budget (char), "
            f"{ModelConfig.hidden_size} without one; word: 200."
        ),
    ] = None,
    layers: Annotated[
        int | None,
        _opt(
            f"Stacked recurrent layers. Default: sized to the budget (char), "
            f"{ModelConfig.num_layers} without one."
        ),
    ] = None,
    embed: Annotated[
        int | None,
        _opt(
            "Embedding size. Default: the hidden size when tied, else min(hidden, 128); word: 200."
        ),
    ] = None,
    dropout: Annotated[
        float | None,
        _opt(
            "Dropout between layers and before the head. Default: sized to the budget (char: 0 to "
            "0.2), 0 without one; word: 0.2; bpe: 0.3."
        ),
    ] = None,
    weight_drop: Annotated[
        float | None,
        _opt(
            "Drop this fraction of the recurrent (hidden-to-hidden) weights, a new mask each "
            "window (AWD-LSTM's weight-drop). Default: 0."
        ),
    ] = None,
    tie_weights: Annotated[
        bool | None,
        typer.Option(
            "--tie-weights/--no-tie-weights",
            show_default=False,
            help="Share the embedding matrix with the output layer. Default: off; bpe: on.",
        ),
    ] = None,
    softmax: Annotated[
        str | None,
        _opt(
            "Output layer: full (the default), or adaptive (frequent tokens get the full layer, "
            "rare ones smaller clusters: ~2.5x faster on a 13k-word vocabulary, but it overfit "
            "wikitext-2 in 130 s where the full tied layer did not)."
        ),
    ] = None,
    batch_size: Annotated[
        int | None,
        _opt(
            f"Parallel streams per step (B). Default: {TrainConfig.batch_size}; word: 20; bpe: 8.",
            "--batch-size",
            "-b",
        ),
    ] = None,
    window: Annotated[
        int | None,
        _opt(
            f"Steps per truncated-BPTT window (T). Default: {TrainConfig.window}; word: 35.",
            "--window",
            "-t",
        ),
    ] = None,
    lr: Annotated[
        float | None,
        _opt(
            "Peak learning rate. Default: the size's own when sized to the budget (3.2e-2 for "
            f"2×256 … 8e-3 for 2×1024), else {TrainConfig.lr:g}; word: 20; bpe: 3e-3."
        ),
    ] = None,
    min_lr_ratio: Annotated[
        float | None,
        _opt(
            f"Final learning rate as a fraction of --lr. Default: {TrainConfig.min_lr_ratio}; "
            "word, bpe: 0.1."
        ),
    ] = None,
    warmup: Annotated[
        int | None, _opt(f"Warm-up steps. Default: {TrainConfig.warmup_steps}; word: 0.")
    ] = None,
    weight_decay: Annotated[
        float | None,
        _opt(f"AdamW weight decay on matrices. Default: {TrainConfig.weight_decay}; word, bpe: 0."),
    ] = None,
    optimizer: Annotated[
        str | None,
        _opt(
            "adamw, or sgd (plain SGD, as PyTorch's word_language_model: with --lr 20 it beat "
            "AdamW on word models). Default: adamw; word: sgd."
        ),
    ] = None,
    clip: Annotated[
        float | None,
        _opt(f"Clip the gradient norm to this value. Default: {TrainConfig.clip}; word: 0.25."),
    ] = None,
    val_fraction: Annotated[
        float | None,
        _opt(f"Tail of the corpus held out for validation. Default: {TrainConfig.val_fraction}."),
    ] = None,
    eval_every: Annotated[
        int | None,
        _opt(
            "Steps between validations. Default: 0 = up to ten times per run, in at most ~2% of "
            "its time."
        ),
    ] = None,
    val_tokens: Annotated[
        int | None,
        _opt(
            "Validate on at most this many tokens from the start of the validation split (0 = all "
            f"of it), so a big corpus does not spend hours validating. Default: "
            f"{TrainConfig.val_tokens:,}."
        ),
    ] = None,
    patience: Annotated[
        int | None,
        _opt(
            "Stop early after this many validations in a row without a new best (0 = never, the "
            "default); best.pt keeps the best model."
        ),
    ] = None,
    state_reset: Annotated[
        float | None,
        _opt(
            "Chance per window that a stream starts again from a zero state, so the model also "
            "learns to start from nothing (as a sample does). Default: "
            f"{TrainConfig.state_reset:g}."
        ),
    ] = None,
    seed: Annotated[
        int | None,
        _opt(
            f"Random seed (weights, dropout, batch offsets, resets). Default: {TrainConfig.seed}."
        ),
    ] = None,
    name: Annotated[
        str | None, _opt("Run name: checkpoints go to CHECKPOINTS/NAME. Default: corpus-date-time.")
    ] = None,
    checkpoints: Annotated[
        Path, typer.Option(help="Folder that holds the run folders.")
    ] = CHECKPOINTS,
    resume: Annotated[
        Path | None, _opt("Continue the run in this folder from its last.pt.")
    ] = None,
    encoding: Encoding = "utf-8",
    errors: DecodeErrors = "strict",
    threads: Annotated[
        int, typer.Option(help="CPU threads; 0 = all cores (shared among torchrun's processes).")
    ] = 0,
    device: Device = "auto",
    precision: Annotated[
        str,
        typer.Option(
            help="auto (bf16 on a CPU with bf16 instructions, where it trains 1.25-1.45x faster "
            "to the same loss; fp32 elsewhere), fp32, or mixed precision: bf16, or fp16 on a GPU "
            "(with loss scaling). fp32 on CUDA uses TF32 tensor cores."
        ),
    ] = "auto",
    quiet: Quiet = False,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print the final summary as JSON on stdout.")
    ] = False,
) -> None:
    """Train a model on CORPUS; checkpoints go to [bold]checkpoints/RUN/[/] (best.pt, last.pt,
    metrics.jsonl). Stops at --budget, --steps or --epochs, whichever comes first; Ctrl-C saves
    last.pt and stops (resume with --resume).

    Several processes: [bold]torchrun --nproc-per-node N -m charlstm train ...[/] trains with
    DistributedDataParallel (the B streams split among the ranks; rank 0 prints and saves)."""
    options = {k: v for k, v in locals().items() if k not in ("quiet", "json_out")}
    from charlstm.config import TrainOptions

    opts = TrainOptions(**{**options, "corpus": corpus or []})
    from charlstm import runs  # imports torch: after the options are known to be good

    err = err_console(quiet)
    display = TrainDisplay(err)
    stop = _StopFlag()
    previous = signal.signal(signal.SIGINT, stop.handle)
    try:
        summary = runs.train(opts, report=display, should_stop=stop.is_set)
    finally:
        display.close()
        signal.signal(signal.SIGINT, previous)
    if summary["rank"] != 0:
        return
    if stop.is_set():
        summary["stop_reason"] = "interrupted"
    print_summary(err, summary)
    if json_out:
        _write_stdout(json.dumps(summary) + "\n")
    if stop.is_set():
        resume = f"charlstm train --resume {summary['run_dir']}"
        err.print(f"interrupted: last.pt saved; continue with: {resume}")
        raise typer.Exit(EXIT_INTERRUPTED)


class _StopFlag:
    """First Ctrl-C asks the loop to save and stop; a second one stops at once."""

    def __init__(self) -> None:
        self._set = False

    def handle(self, signum: int, frame: Any) -> None:
        self._set = True
        signal.signal(signal.SIGINT, signal.default_int_handler)

    def is_set(self) -> bool:
        return self._set


# ----------------------------------------------------------------------------------- sample


@_command
def sample(
    model: ModelPath = None,
    prime: Annotated[
        str | None, _opt("Text that starts the sample and warms the state; - reads stdin.")
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
        bool, typer.Option(help="Always take the most likely token (= --temp 0).")
    ] = False,
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
        typer.Option(
            "--json",
            help='One JSON object per sample per line: {"sample": I, "seed": SEED, '
            '"text": prime + generated text}.',
        ),
    ] = False,
    echo_prime: Annotated[
        bool, typer.Option(help="Print the prime text before the sample.")
    ] = True,
    on_unknown: Annotated[
        str, typer.Option(help="Prime characters the model never saw: error or skip.")
    ] = "error",
    threads: Threads = 0,
    quiet: Quiet = False,
) -> None:
    """Stream generated text to stdout, one token at a time."""
    from charlstm.api import random_seed

    err = err_console(quiet)
    SampleConfig.build(length, temp, top_k, top_p, greedy=greedy)  # check before loading
    if prime == "-":
        prime = sys.stdin.read()
    net = _load(model, threads, err, streams=num_samples)
    net.encode_prime(prime, on_unknown)  # a prime it cannot read ends here, before the seed
    if seed is None:
        seed = random_seed()
    err.print(f"seed {seed}")
    choice = {"length": length, "temp": temp, "top_k": top_k, "top_p": top_p, "greedy": greedy,
              "seed": seed, "on_unknown": on_unknown}  # fmt: skip
    if num_samples == 1 and not json_out:
        pieces = net.generate(prime, **choice)  # checks the prime before anything is written
        if prime and echo_prime:
            _write_stdout(prime)
        _stream(pieces)
        return
    texts = net.samples(num_samples, prime, **choice)
    for i, text in enumerate(texts, start=1):
        if json_out:
            _write_stdout(
                json.dumps({"sample": i, "seed": seed, "text": (prime or "") + text}) + "\n"
            )
        else:
            head = (prime or "") if echo_prime else ""
            _write_stdout(("\n" if i > 1 else "") + f"--- sample {i} ---\n{head}{text}\n")


def _stream(pieces: Any) -> None:
    """Write generated pieces as they come, every 20 ms rather than every token: as live to a
    reader, with far fewer calls; a newline ends the text."""
    pending: list[str] = []
    due = time.perf_counter()
    for piece in pieces:
        pending.append(piece)
        if time.perf_counter() >= due:
            _write_stdout("".join(pending))
            pending.clear()
            due = time.perf_counter() + 0.02
    _write_stdout("".join(pending) + "\n")


def _load(
    model: Path | None, threads: int, err: Console, device: Any = "cpu", streams: int = 1
) -> Any:
    """The model, loaded through the API, on `threads` CPU threads (0: chosen for `streams`)."""
    from charlstm.api import load
    from charlstm.device import set_threads

    set_threads(threads, streams)
    net = load(model, device=device)
    err.print(f"model {net.path}", style="dim")
    return net


# ----------------------------------------------------------------------------------- evaluate


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
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    per_line: Annotated[
        bool,
        typer.Option(
            "--per-line",
            help='One JSON object per input line: {"line": TEXT, "tokens": N, "nats": TOTAL, '
            '"bits_per_char": BPC}. One sequential pass carries the state through the whole text; '
            "a line's newline counts in that line; the text's first character is not predicted.",
        ),
    ] = False,
    precision: Annotated[
        str,
        typer.Option(
            help="fp32 (exact), or bf16: about twice as fast on a GPU or a CPU with bf16 "
            "instructions, the loss within ~1e-4 of fp32's (BENCHMARKS.md)."
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
    threads: Threads = 0,
    device: Device = "auto",
    quiet: Quiet = False,
) -> None:
    """Loss (nats per token), perplexity and bits per character of a held-out text."""
    err = err_console(quiet)
    if reset_every and per_line:
        raise UsageError("--per-line scores one pass carrying the state; drop --reset-every")
    from charlstm.device import resolve_device

    body = _read_texts(text, encoding, errors, err)
    net = _load(model, threads, err, resolve_device(device), 1 if per_line else streams)
    encoded = net.encode_text(body)
    _note_unknown(encoded, err)
    t0 = time.perf_counter()
    if per_line:
        with err.status(f"evaluating {len(encoded.ids):,} tokens…"):
            rows = net.score_lines(encoded)
        _write_stdout("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
        err.print(f"{len(encoded.ids) / (time.perf_counter() - t0):,.0f} tokens/s", style="dim")
        return
    with err.status(f"evaluating {len(encoded.ids):,} tokens…"):
        result = net.evaluate(encoded, streams=streams, reset_every=reset_every,
                              precision=precision)  # fmt: skip
    seconds = time.perf_counter() - t0
    if json_out:
        out = {**result.to_dict(), "seconds": round(seconds, 3), "streams": streams,
               "reset_every": reset_every, "precision": precision}  # fmt: skip
        _write_stdout(json.dumps(out) + "\n")
    else:
        _write_stdout(
            f"loss        {result.loss:.4f} nats/token\n"
            f"perplexity  {result.perplexity:.3f}\n"
            f"bits/char   {result.bits_per_char:.4f}\n"
            f"tokens      {result.tokens:,}\n"
        )
    err.print(f"{result.tokens / seconds:,.0f} tokens/s", style="dim")


def _read_texts(args: list[str], encoding: str, errors: str, err: Console) -> str:
    from charlstm.config import CORPORA
    from charlstm.corpus import load_corpus

    with err.status("reading text…"):
        return load_corpus(args, cache_dir=CORPORA, encoding=encoding, errors=errors).text


def _note_unknown(encoded: Any, err: Console) -> None:
    """Say on stderr what of a text the model cannot read (skipped, or scored as unknown)."""
    if encoded.skipped_chars:
        err.print(f"[yellow]note:[/] skipping {encoded.skipped_chars:,} characters the model "
                  f"never saw: {''.join(encoded.unknown[:20])!r}")  # fmt: skip
    if encoded.unknown_words:
        err.print(f"[yellow]note:[/] {encoded.unknown_words:,} words outside the vocabulary "
                  "count as unknown")  # fmt: skip


# ----------------------------------------------------------------------------------- info


@_command
def info(
    model: Annotated[
        Path | None,
        typer.Argument(help="Checkpoint file or run folder. Default: the newest best.pt."),
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    plot: Annotated[
        Path | None,
        _opt(
            "Also draw the training and validation loss against step into this image (PNG, SVG, "
            "PDF; needs matplotlib: pip install 'charlstm\\[plot]')."
        ),
    ] = None,
    quiet: Quiet = False,
) -> None:
    """What a checkpoint holds, read without running any pickled code."""
    from charlstm.api import info as read_info

    data = read_info(model)
    if plot is not None:
        plot_metrics(data["metrics"], plot, title=data["path"])
        err_console(quiet).print(f"wrote {plot}", style="dim")
    if json_out:
        _write_stdout(json.dumps(data) + "\n")
    else:
        _write_stdout(info_lines(data))


# ----------------------------------------------------------------------------------- visualize


@_command
def visualize(
    text: Texts,
    model: ModelPath = None,
    layer: Annotated[
        int | None, _opt("Layer to trace, counting from 0. Default: the last.")
    ] = None,
    kind: Annotated[
        str,
        typer.Option(
            help="What to colour by: hidden, cell, forget, input or output (gru: update, reset)."
        ),
    ] = "cell",
    unit: Annotated[
        int | None, _opt("Unit to show. Default: the best 5 with --find, else 0.")
    ] = None,
    find: Annotated[
        bool,
        typer.Option(
            "--find",
            help="Rank every unit and gate by correlation with simple properties of the text (in "
            "quotes, in brackets, line position, word starts) and show the best 5.",
        ),
    ] = False,
    html_out: Annotated[
        Path | None,
        _opt(
            "Also write the shown units as one self-contained HTML page (hover for values).",
            "--html",
        ),
    ] = None,
    max_chars: Annotated[
        int,
        typer.Option(help="Trace only the first N characters (one step each: slow on long text)."),
    ] = 2000,
    encoding: Encoding = "utf-8",
    errors: DecodeErrors = "strict",
    threads: Threads = 0,
    quiet: Quiet = False,
) -> None:
    """Colour a text by what a unit of the model holds at each character."""
    kinds = ("hidden", "cell", "forget", "input", "output", "update", "reset")
    if kind not in kinds:
        raise UsageError(f"--kind must be one of {', '.join(kinds)}, got {kind!r}")
    err = err_console(quiet)
    net = _load(model, threads, err)
    body = _read_texts(text, encoding, errors, err)
    if net.tokenizer.kind == "char":
        _note_unknown(net.encode_text(body), err)
    with err.status(f"tracing {min(len(body), max_chars):,} characters…"):
        traced = net.trace(body, layer=layer, max_chars=max_chars)
    acts, body = traced.activations, traced.text
    if kind not in acts:
        raise UsageError(
            f"{net.config.cell} layers have no {kind!r}; choose one of {', '.join(acts)}"
        )
    hidden = acts[kind].shape[1]
    if unit is not None and not 0 <= unit < hidden:
        raise UsageError(f"--unit must be between 0 and {hidden - 1}, got {unit}")
    shown = [{"kind": kind, "unit": unit or 0}]
    if find:
        shown = _find(acts, body, traced.layer, unit, err) or shown
    _show_units(body, acts, shown, traced.layer, net.config.cell, html_out, err)


def _find(acts: dict, body: str, layer: int, unit: int | None, err: Console) -> list[dict]:
    """Rank the units by how well they track properties of the text; print the best 5 (stderr)
    and return them unless a --unit was given."""
    from rich.table import Table

    from charlstm.visualize import find_units, properties

    best = find_units(acts, properties(body), top=5)
    table = Table(title=f"layer {layer}: units that track the text", title_style="bold")
    for col in ("kind", "unit", "property", "r"):
        table.add_column(col, justify="right" if col in ("unit", "r") else "left")
    for b in best:
        table.add_row(b["kind"], str(b["unit"]), b["property"], f"{b['correlation']:+.3f}")
    err.print(table if best else "no unit varies with any property of this text")
    return best if unit is None else []


def _show_units(
    body: str, acts: dict, shown: list[dict], layer: int, cell: str, html_out: Path | None,
    err: Console,
) -> None:  # fmt: skip
    """The text coloured by each shown unit, on stdout; and the same as a page with --html."""
    from charlstm.visualize import render_html, render_terminal

    rows = []
    for s in shown:
        label = f"layer {layer} · {s['kind']} · unit {s['unit']}"
        if "correlation" in s:
            label += f" · r={s['correlation']:+.2f} with {s['property']}"
        rows.append((label, acts[s["kind"]][:, s["unit"]], s["kind"]))
    out = _StdoutConsole(file=sys.stdout, highlight=False)  # Rich drops the colour when piped
    for label, values, k in rows:
        out.print(label, style="bold", markup=False)
        end = "" if body.endswith("\n") else "\n"  # the text's own last newline ends it
        out.print(render_terminal(body, values, kind=k), soft_wrap=True, end=end)
    if html_out is not None:
        title = f"charlstm · {cell} · layer {layer}"
        page = render_html(body, [r[:2] for r in rows], title, kinds=[r[2] for r in rows])
        try:
            html_out.write_text(page, encoding="utf-8")
        except OSError as e:
            raise CharlstmError(f"cannot write {html_out}: {e.strerror or e}") from None
        err.print(f"wrote {html_out}", style="dim")


# ----------------------------------------------------------------------------------- serve


@_command
def serve(
    runs: Annotated[
        list[Path] | None,
        typer.Argument(
            help="Run folders or checkpoint files to serve, each under its folder's name (the "
            'request\'s "model"). Default: the newest run under ./checkpoints.',
            show_default=False,
        ),
    ] = None,
    host: Annotated[
        str, typer.Option(help="Address to listen on; 0.0.0.0 opens it to the network.")
    ] = ServeConfig.host,
    port: Annotated[int, typer.Option(help="Port; 0: any free one.")] = ServeConfig.port,
    api_key: Annotated[
        str | None,
        typer.Option(
            envvar="CHARLSTM_API_KEY",
            help="Require 'Authorization: Bearer KEY' on every request.",
            show_default=False,
        ),
    ] = None,
    max_batch: Annotated[
        int, typer.Option(help="Samples stepped together per model (also the largest n).")
    ] = ServeConfig.max_batch,
    queue: Annotated[
        int, typer.Option(help="Requests that may wait for room; beyond: 503 + Retry-After.")
    ] = ServeConfig.queue,
    max_tokens: Annotated[
        int, typer.Option(help="The most tokens a request may ask for (max_tokens).")
    ] = ServeConfig.max_tokens,
    grace: Annotated[
        float,
        typer.Option(help="Seconds running requests get to finish after Ctrl-C or SIGTERM."),
    ] = ServeConfig.grace,
    device: Device = "auto",
    threads: Threads = 0,
    quiet: Quiet = False,
) -> None:
    """Serve models over HTTP: OpenAI-style /v1/completions (streaming too), /score, /health."""
    cfg = ServeConfig(host=host, port=port, api_key=api_key, max_batch=max_batch, queue=queue,
                 max_tokens=max_tokens, grace=grace)  # fmt: skip
    try:
        from charlstm import serve as server
    except ImportError as e:
        raise CharlstmError(
            f"serve needs the [serve] extra ({e.name} is missing): pip install 'charlstm[serve]'"
        ) from None
    from charlstm.device import resolve_device, set_threads

    err = err_console(quiet)
    set_threads(threads, streams=max_batch)
    models = server.load_models(list(runs or []), device=resolve_device(device))
    for name, model in models.items():
        err.print(f"model {name}: {model.path}", style="dim")
    server.run(models, cfg, _serve_report(quiet))


def _serve_report(quiet: bool) -> Callable[[str, dict], None]:
    """What the server reports, as plain lines on stderr: where it listens, one line per
    request (status, method, path, model, tokens, seconds, seconds to the first token,
    client), errors (even --quiet)."""

    def report(event: str, data: dict) -> None:
        line = ""
        if event == "error":
            line = f"charlstm serve: {data['message']}\n{data['traceback']}"
        elif quiet:
            return
        elif event == "listening":
            key = ", API key required" if data["api_key"] else ""
            models = ", ".join(data["models"])
            line = (f"listening on {data['url']} (models: {models}; batch {data['max_batch']}, "
                    f"queue {data['queue']}{key}); Ctrl-C stops")  # fmt: skip
        elif event == "request":
            model = f" {data['model']}" if data["model"] else ""
            tokens = "" if data["tokens"] is None else f" {data['tokens']} tokens"
            first = "" if data["first"] is None else f" (first {data['first']:.3f} s)"
            line = (f"{data['status']} {data['method']} {data['path']}{model}{tokens} "
                    f"{data['seconds']:.3f} s{first} {data['client']}")  # fmt: skip
        elif event == "stopped":
            line = "stopped"
        if line:
            sys.stderr.write(line.rstrip("\n") + "\n")

    return report


# ----------------------------------------------------------------------------------- entry


def main() -> None:
    """Console entry point: expected errors become one stderr line and an exit code."""
    try:
        code = app(standalone_mode=False)
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
        # The reader went away (e.g. `| head`): stop quietly, and keep Python from
        # complaining while it flushes stdout at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        code = 0
    if code == EXIT_INTERRUPTED:
        # Already on the way out: a further Ctrl-C must not kill the process mid-exit (which
        # would end it by the signal instead of with status 130).
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.exit(code if isinstance(code, int) else 0)
