"""`charlstm train`."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from charlstm.cli.app import _command
from charlstm.cli.display import TrainDisplay, err_console, print_summary
from charlstm.cli.options import (
    Cell,
    Checkpoints,
    DecodeErrors,
    Device,
    Encoding,
    Optimizer,
    Precision,
    Quiet,
    Softmax,
    Tokenizer,
    _flag,
    _opt,
)
from charlstm.cli.output import _stdin_note, _write_stdout
from charlstm.config import CHECKPOINTS, ModelConfig, TrainConfig
from charlstm.errors import EXIT_INTERRUPTED


@_command
def train(
    ctx: typer.Context,
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
        Tokenizer | None,
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
    cell: Annotated[Cell | None, _opt(f"Recurrent cell. Default: {ModelConfig.cell}.")] = None,
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
    mogrifier_rounds: Annotated[
        int | None,
        _opt(
            "--cell mogrifier: rounds in which the input and the previous output gate each other "
            f"before each LSTM step (0 = a plain LSTM). Default: {ModelConfig.mogrifier_rounds}."
        ),
    ] = None,
    tie_weights: Annotated[
        bool | None,
        typer.Option(
            "--tie-weights/--no-tie-weights",
            show_default=False,
            metavar="",
            help="Share the embedding matrix with the output layer. Default: off; bpe: on.",
        ),
    ] = None,
    softmax: Annotated[
        Softmax | None,
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
        Optimizer | None,
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
    checkpoints: Checkpoints = CHECKPOINTS,
    overwrite: Annotated[
        bool, _flag("--overwrite", help="Replace the run of the same --name, if there is one.")
    ] = False,
    init_from: Annotated[
        Path | None,
        _opt(
            "Fine-tune: start from this run's (or checkpoint's) weights and tokenizer instead of "
            "random ones. Its shape is kept; fine-tuning's own defaults apply (see the README)."
        ),
    ] = None,
    keep_eval: Annotated[
        list[str] | None,
        _opt(
            "Also score this text at every validation (give it again for more), e.g. the base's "
            "own held-out text: how much of the old skill fine-tuning costs."
        ),
    ] = None,
    resume: Annotated[
        Path | None,
        _opt(
            "Continue the run in this folder from its last.pt: exactly where it stopped, or "
            "with --steps/--budget/--epochs that much more (see the README, 'Resuming')."
        ),
    ] = None,
    encoding: Encoding = "utf-8",
    errors: DecodeErrors = "strict",
    threads: Annotated[
        int, typer.Option(help="CPU threads; 0 = all cores (shared among torchrun's processes).")
    ] = 0,
    device: Device = "auto",
    precision: Annotated[
        Precision,
        typer.Option(
            help="auto (bf16 on a CPU with bf16 instructions, where it trains 1.25-1.45x faster "
            "to the same loss; fp32 elsewhere), fp32, or mixed precision: bf16, or fp16 on a GPU "
            "(with loss scaling). fp32 on CUDA uses TF32 tensor cores."
        ),
    ] = "auto",
    quiet: Quiet = False,
    json_out: Annotated[
        bool, _flag("--json", help="Print the final summary as JSON on stdout.")
    ] = False,
) -> None:
    """Train a model on CORPUS; checkpoints go to [bold]checkpoints/RUN/[/] (best.pt, last.pt,
    metrics.jsonl). Stops at --budget, --steps or --epochs, whichever comes first; Ctrl-C saves
    last.pt and stops (resume with --resume).

    Several processes: [bold]torchrun --nproc-per-node N -m charlstm train ...[/] trains with
    DistributedDataParallel (the B streams split among the ranks; rank 0 prints and saves)."""
    options = {k: v for k, v in locals().items() if k not in ("ctx", "quiet", "json_out")}
    # The budget is the whole run: from the process's start where this command is the process
    # (Python and the imports included: main() passes it), else from here.
    started = (ctx.obj or {}).get("process_start", time.perf_counter())
    from charlstm.config import TrainOptions

    opts = TrainOptions(**{**options, "corpus": corpus or []})
    err = err_console(quiet)
    _stdin_note(corpus, err)
    from charlstm.training import runs  # imports torch: after the options are known to be good

    display = TrainDisplay(err)
    stop = _StopFlag()
    previous = signal.signal(signal.SIGINT, stop.handle)
    try:
        summary = runs.train(opts, report=display, should_stop=stop.is_set, started=started)
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
