"""The command line: options → config objects → library calls. The only module that writes to
the terminal: generated text (or JSON when asked) on stdout, everything else on stderr.

Exit codes: 0 success, 1 failure, 2 usage error, 130 interrupted.
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
import shutil
import signal
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console

from charlstm import __version__
from charlstm.config import (
    CELLS,
    TOKENIZER_PRESETS,
    TOKENIZERS,
    ModelConfig,
    SampleConfig,
    TrainConfig,
    adaptive_cutoffs,
)
from charlstm.errors import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_USAGE, CharlstmError

app = typer.Typer(
    name="charlstm",
    help="Train character-level LSTM language models on any text, stream samples, measure loss.",
    rich_markup_mode="rich",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

DEFAULT_BUDGET = 600.0  # seconds, when no --budget, --steps or --epochs is given

DeviceOption = Annotated[
    str,
    typer.Option(
        help="auto (a CUDA GPU, else Apple's MPS, else the CPU), cpu, cuda, cuda:N or mps."
    ),
]


def _err_console(quiet: bool = False) -> Console:
    # NO_COLOR and non-terminals are honoured by Rich itself.
    return Console(stderr=True, quiet=quiet, highlight=False)


def _fail(message: str, code: int = EXIT_FAILURE) -> NoReturn:
    raise CharlstmError(message, code)


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


def parse_duration(text: str) -> float:
    """'135s', '10m', '2h', '1h30m' or a plain number of seconds → seconds."""
    text = text.strip().lower().replace(" ", "")
    number = r"(\d+(?:\.\d+)?)"
    match = re.fullmatch(number, text) or re.fullmatch(
        f"(?:{number}h)?(?:{number}m)?(?:{number}s)?", text
    )
    if not text or not match:
        _fail(f"--budget: cannot read {text!r}; use e.g. 135s, 10m, 2h or 1h30m", EXIT_USAGE)
    if match.re.groups == 1:
        seconds = float(match[1])
    else:
        seconds = sum(float(v or 0) * k for v, k in zip(match.groups(), (3600, 60, 1), strict=True))
    if not seconds > 0:
        _fail("--budget must be positive", EXIT_USAGE)
    return seconds


def _given(ctx: typer.Context, *names: str) -> list[str]:
    """The parameters among `names` that were set on the command line (not left at default)."""
    return [n for n in names if getattr(ctx.get_parameter_source(n), "name", "") == "COMMANDLINE"]


def sparkline(values: list[float]) -> str:
    """A one-line chart of `values`, lowest ▁ to highest █; non-finite values show as a space."""
    bars = "▁▂▃▄▅▆▇█"
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return ""
    lo, hi = min(finite), max(finite)
    span = hi - lo
    out = []
    for v in values:
        if v is None or not math.isfinite(v):
            out.append(" ")
        else:
            out.append(bars[round((v - lo) / span * (len(bars) - 1)) if span > 0 else 0])
    return "".join(out)


def _set_threads(threads: int) -> None:
    import torch

    from charlstm.distributed import local_size

    # All cores by default, shared among the processes torchrun started on this machine.
    torch.set_num_threads(threads if threads > 0 else max(1, (os.cpu_count() or 1) // local_size()))


# ----------------------------------------------------------------------------------- train


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
        typer.Option(
            "--budget",
            help="Wall-clock limit, e.g. 135s, 10m, 2h. The learning rate decays to its floor "
            "as the budget runs out. Default: 10m when no --steps or --epochs is given.",
            show_default=False,
        ),
    ] = None,
    steps: Annotated[int | None, typer.Option(help="Stop after this many optimizer steps.")] = None,
    epochs: Annotated[
        float | None, typer.Option(help="Stop after this many passes over the training split.")
    ] = None,
    tokenizer: Annotated[
        str,
        typer.Option(
            help="Tokens: char (one per character), word (whitespace-separated words with "
            "their spacing, via Hugging Face tokenizers) or bpe (byte-level subwords learnt "
            "from the corpus)."
        ),
    ] = "char",
    vocab_size: Annotated[
        int | None,
        typer.Option(
            help="word/bpe: the vocabulary's size (the most frequent words or merges of the "
            "training split). Default: 50000 for word, 4096 for bpe.",
            show_default=False,
        ),
    ] = None,
    min_frequency: Annotated[
        int | None,
        typer.Option(
            help="word/bpe: leave out words (merges) seen fewer times. Default: 1 word, 2 bpe.",
            show_default=False,
        ),
    ] = None,
    cell: Annotated[
        str, typer.Option(help=f"Recurrent cell: {', '.join(CELLS)}.")
    ] = ModelConfig.cell,
    hidden: Annotated[
        int, typer.Option(help="Units per recurrent layer.")
    ] = ModelConfig.hidden_size,
    layers: Annotated[int, typer.Option(help="Stacked recurrent layers.")] = ModelConfig.num_layers,
    embed: Annotated[
        int, typer.Option(help="Embedding size; 0 = hidden size when tied, else min(hidden, 128).")
    ] = ModelConfig.embed_size,
    dropout: Annotated[
        float, typer.Option(help="Dropout between layers and before the head.")
    ] = ModelConfig.dropout,
    weight_drop: Annotated[
        float,
        typer.Option(
            help="Drop this fraction of the recurrent (hidden-to-hidden) weights, a new mask "
            "each window (AWD-LSTM's weight-drop)."
        ),
    ] = ModelConfig.weight_drop,
    tie_weights: Annotated[
        bool, typer.Option(help="Share the embedding matrix with the output layer.")
    ] = ModelConfig.tie_weights,
    softmax: Annotated[
        str,
        typer.Option(
            help="Output layer: full, or adaptive (frequent tokens get the full layer, rare "
            "ones smaller clusters: ~2.5x faster on a 13k-word vocabulary, but it overfit "
            "wikitext-2 in 130 s where the full tied layer did not)."
        ),
    ] = "full",
    batch_size: Annotated[
        int, typer.Option("--batch-size", "-b", help="Parallel streams per step (B).")
    ] = TrainConfig.batch_size,
    window: Annotated[
        int, typer.Option("--window", "-t", help="Steps per truncated-BPTT window (T).")
    ] = TrainConfig.window,
    lr: Annotated[float, typer.Option(help="Peak learning rate (AdamW).")] = TrainConfig.lr,
    min_lr_ratio: Annotated[
        float, typer.Option(help="Final learning rate as a fraction of --lr.")
    ] = TrainConfig.min_lr_ratio,
    warmup: Annotated[int, typer.Option(help="Warm-up steps.")] = TrainConfig.warmup_steps,
    weight_decay: Annotated[
        float, typer.Option(help="AdamW weight decay on matrices.")
    ] = TrainConfig.weight_decay,
    optimizer: Annotated[
        str,
        typer.Option(
            help="adamw, or sgd (plain SGD, as PyTorch's word_language_model: with --lr 20 it "
            "beat AdamW on word models)."
        ),
    ] = TrainConfig.optimizer,
    clip: Annotated[
        float, typer.Option(help="Clip the gradient norm to this value.")
    ] = TrainConfig.clip,
    val_fraction: Annotated[
        float, typer.Option(help="Tail of the corpus held out for validation.")
    ] = TrainConfig.val_fraction,
    eval_every: Annotated[
        int,
        typer.Option(
            help="Steps between validations; 0 = up to ten times per run, in at most ~2% of "
            "its time."
        ),
    ] = TrainConfig.eval_every,
    val_tokens: Annotated[
        int,
        typer.Option(
            help="Validate on at most this many tokens from the start of the validation split "
            "(0 = all of it), so a big corpus does not spend hours validating."
        ),
    ] = TrainConfig.val_tokens,
    patience: Annotated[
        int,
        typer.Option(
            help="Stop early after this many validations in a row without a new best "
            "(0 = never); best.pt keeps the best model."
        ),
    ] = TrainConfig.patience,
    state_reset: Annotated[
        float,
        typer.Option(
            help="Chance per window that a stream starts again from a zero state, so the model "
            "also learns to start from nothing (as a sample or evaluation does)."
        ),
    ] = TrainConfig.state_reset,
    seed: Annotated[
        int, typer.Option(help="Random seed (weights, dropout, batch offsets, resets).")
    ] = TrainConfig.seed,
    name: Annotated[
        str | None,
        typer.Option(
            help="Run name: checkpoints go to CHECKPOINTS/NAME. Default: corpus-date-time."
        ),
    ] = None,
    checkpoints: Annotated[Path, typer.Option(help="Folder that holds the run folders.")] = Path(
        "checkpoints"
    ),
    resume: Annotated[
        Path | None,
        typer.Option(help="Continue the run in this folder from its last.pt.", show_default=False),
    ] = None,
    encoding: Annotated[str, typer.Option(help="Text encoding of the corpus files.")] = "utf-8",
    errors: Annotated[
        str, typer.Option(help="Undecodable bytes: strict (stop), replace or ignore.")
    ] = "strict",
    threads: Annotated[int, typer.Option(help="CPU threads; 0 = all cores.")] = 0,
    device: DeviceOption = "auto",
    precision: Annotated[
        str,
        typer.Option(
            help="auto (bf16 on a CPU with bf16 instructions, where it trains 1.25-1.45x "
            "faster to the same loss; fp32 elsewhere), fp32, or mixed precision: bf16, or fp16 "
            "on a GPU (with loss scaling). fp32 on CUDA uses TF32 tensor cores."
        ),
    ] = "auto",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but errors.")] = False,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print the final summary as JSON on stdout.")
    ] = False,
) -> None:
    """Train a model on CORPUS; checkpoints go to [bold]checkpoints/RUN/[/] (best.pt, last.pt,
    metrics.jsonl). Stops at --budget, --steps or --epochs, whichever comes first; Ctrl-C saves
    last.pt and stops (resume with --resume).

    Several processes: [bold]torchrun --nproc-per-node N -m charlstm train ...[/] trains with
    DistributedDataParallel (the B streams split among the ranks; rank 0 prints and saves)."""
    err = _err_console(quiet)
    stop_kwargs = {
        "budget": parse_duration(budget) if budget is not None else None,
        "steps": steps,
        "epochs": epochs,
    }
    if steps is not None and steps < 1:
        _fail("--steps must be at least 1", EXIT_USAGE)
    if epochs is not None and not epochs > 0:
        _fail("--epochs must be positive", EXIT_USAGE)
    for flag, value in (
        ("--hidden", hidden),
        ("--layers", layers),
        ("--batch-size", batch_size),
        ("--window", window),
    ):
        if value < 1:
            _fail(f"{flag} must be at least 1, got {value}", EXIT_USAGE)
    if not lr > 0 or not math.isfinite(lr):
        _fail(f"--lr must be a positive number, got {lr}", EXIT_USAGE)
    if not clip > 0:
        _fail(f"--clip must be positive, got {clip}", EXIT_USAGE)
    if not 0 <= state_reset <= 1:
        _fail(f"--state-reset must be a probability in [0, 1], got {state_reset}", EXIT_USAGE)
    for flag, value in (("--patience", patience), ("--val-tokens", val_tokens)):
        if value < 0:
            _fail(f"{flag} must be 0 (off) or more, got {value}", EXIT_USAGE)
    if optimizer not in ("adamw", "sgd"):
        _fail(f"--optimizer must be adamw or sgd; got {optimizer!r}", EXIT_USAGE)
    if softmax not in ("full", "adaptive"):
        _fail(f"--softmax must be full or adaptive; got {softmax!r}", EXIT_USAGE)
    if tokenizer not in TOKENIZERS:
        _fail(f"--tokenizer must be {', '.join(TOKENIZERS)}; got {tokenizer!r}", EXIT_USAGE)
    if tokenizer == "char" and _given(ctx, "vocab_size", "min_frequency"):
        _fail("--vocab-size and --min-frequency are for --tokenizer word or bpe", EXIT_USAGE)
    if resume is not None:
        shape = _given(ctx, "hidden", "layers", "cell", "embed", "weight_drop", "tie_weights",
                       "softmax", "tokenizer", "vocab_size", "min_frequency")  # fmt: skip
        if shape:
            flags = ", ".join("--" + n.replace("_", "-") for n in shape)
            _fail(f"--resume continues the checkpoint's model as it is; drop {flags}", EXIT_USAGE)

    t_start = time.perf_counter()
    import torch

    from charlstm import distributed
    from charlstm.device import check_precision, configure, resolve_device, resolve_precision
    from charlstm.model import LanguageModel, ModelConfig
    from charlstm.train import Run, TrainConfig, fit

    _set_threads(threads)
    target = resolve_device(device)
    precision = resolve_precision(precision, target)
    check_precision(precision, target)
    world = distributed.init_world(target)
    configure(world.device)
    if not world.is_main:
        err = _err_console(quiet=True)  # rank 0 speaks for all
    prepared: dict[str, Any] = {}  # how the tokens were made, for the JSON summary
    if resume is not None:
        run, resume_state = _load_run_for_resume(
            resume, corpus, stop_kwargs, (encoding, errors), err
        )
    else:
        if not corpus:
            _fail(
                "train needs a CORPUS: a file, folder, - for stdin, or shakespeare/python",
                EXIT_USAGE,
            )
        if stop_kwargs["budget"] is None and steps is None and epochs is None:
            stop_kwargs["budget"] = DEFAULT_BUDGET
        preset = {
            k: v
            for k, v in TOKENIZER_PRESETS.get(tokenizer, {}).items()
            if not _given(ctx, k) and not (k == "tie_weights" and softmax == "adaptive")
        }
        if preset:
            opts = {"batch_size": batch_size, "window": window, "lr": lr, "clip": clip,
                    "warmup": warmup, "optimizer": optimizer, "hidden": hidden, "embed": embed,
                    "dropout": dropout, "tie_weights": tie_weights,
                    "weight_decay": weight_decay, "min_lr_ratio": min_lr_ratio,
                    **preset}  # fmt: skip
            batch_size, window, lr, clip = (opts["batch_size"], opts["window"], opts["lr"],
                                            opts["clip"])  # fmt: skip
            warmup, optimizer, hidden, embed = (opts["warmup"], opts["optimizer"],
                                                opts["hidden"], opts["embed"])  # fmt: skip
            dropout, tie_weights = opts["dropout"], opts["tie_weights"]
            weight_decay, min_lr_ratio = opts["weight_decay"], opts["min_lr_ratio"]
            chosen = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in preset.items())
            err.print(f"{tokenizer} model defaults: {chosen} (override with their flags)")
        train_cfg = TrainConfig(
            batch_size=batch_size, window=window, lr=lr, min_lr_ratio=min_lr_ratio,
            warmup_steps=warmup, weight_decay=weight_decay, clip=clip, optimizer=optimizer,
            val_fraction=val_fraction, eval_every=eval_every, val_tokens=val_tokens,
            patience=patience,
            state_reset=state_reset,
            seed=seed, **stop_kwargs,
        )  # fmt: skip
        from charlstm.corpus import CorpusStream
        from charlstm.tokens import tokenize_corpus

        t_tok = time.perf_counter()
        with err.status(f"reading and tokenizing ({tokenizer})…"):
            # Read a piece at a time: a corpus larger than memory streams into the id file.
            stream = CorpusStream(corpus, cache_dir=Path("corpora"), encoding=encoding,
                                  errors=errors)  # fmt: skip
            tokenized = tokenize_corpus(
                stream, kind=tokenizer, vocab_size=vocab_size, min_frequency=min_frequency,
                val_fraction=val_fraction, cache_dir=Path("corpora") / "cache",
                signature=stream.signature(),
            )  # fmt: skip
        corpus_info = {"fingerprint": tokenized.fingerprint, "sources": list(stream.sources)[:20],
                       "n_sources": len(stream.sources), "chars": tokenized.chars}  # fmt: skip
        ids, train_ids, val_ids = tokenized.ids, tokenized.train_ids, tokenized.val_ids
        took = time.perf_counter() - t_tok
        prepared = {"tokenize_seconds": round(took, 3), "tokens_from_cache": tokenized.cached}
        how = "read from the cache" if tokenized.cached else f"{took:.1f}s"
        if tokenizer == "char" and took > 2:
            err.print(f"char tokenizer: {len(ids):,} tokens · {how} · "
                      f"{tokenized.chars / took / 1e6:.0f}M chars/s")  # fmt: skip
        if tokenizer != "char":
            err.print(
                f"{tokenizer} tokenizer: vocabulary {tokenized.tokenizer.vocab_size:,} · "
                f"{len(ids):,} tokens ({corpus_info['chars'] / max(len(ids), 1):.2f} chars "
                f"per token) · {how}"
            )
        if len(val_ids) < 2 and val_fraction > 0:
            _fail(
                f"the corpus is too short for a validation split ({len(ids)} tokens); "
                "give more text or --val-fraction 0",
            )
        val_ids, val_chars = _validation_part(
            val_ids, tokenized.val_chars, val_tokens, tokenized.tokenizer, err
        )
        corpus_info.update(tokenizer=tokenizer, n_train=tokenized.n_train, val_chars=val_chars)
        try:
            vocab = tokenized.tokenizer.vocab_size
            cutoffs = None
            if softmax == "adaptive":
                cutoffs = adaptive_cutoffs(vocab) or [max(1, vocab // 4)]
            model_cfg = ModelConfig(
                vocab_size=vocab, cell=cell, hidden_size=hidden, num_layers=layers,
                embed_size=embed, dropout=dropout, weight_drop=weight_drop,
                tie_weights=tie_weights, softmax_cutoffs=cutoffs,
            )  # fmt: skip
        except ValueError as e:
            _fail(str(e), EXIT_USAGE)
        given = _given(ctx, "hidden", "layers", "lr", "dropout")
        if tokenizer == "char" and train_cfg.budget and len(given) < 4:
            if world.active:
                err.print("note: budget-aware sizing runs in one process only; using the "
                          "default size (set --hidden, --layers, --lr, --dropout)")  # fmt: skip
            else:
                model_cfg, prepared["chosen"] = _size_to_budget(
                    model_cfg, train_cfg, given, embed, len(train_ids), world.device, precision,
                    err,
                )  # fmt: skip
        torch.manual_seed(seed)
        model = LanguageModel(model_cfg)
        # The default name has a time in it: every rank takes rank 0's.
        run_dir = distributed.broadcast(world, checkpoints / (name or _default_run_name(corpus)))
        if (run_dir / "last.pt").exists():
            _fail(
                f"'{run_dir}' already holds a run; continue it with --resume {run_dir} "
                "or choose another --name"
            )
        if world.is_main:
            run_dir.mkdir(parents=True, exist_ok=True)

            _keep_tokens(ids, tokenized.path, run_dir / "tokens.npy")  # --resume needs no corpus
        run = Run(
            model=model, model_cfg=model_cfg, train_cfg=train_cfg,
            tokenizer=tokenized.tokenizer.to_dict(), train_ids=train_ids, val_ids=val_ids,
            corpus=corpus_info, run_dir=run_dir,
        )  # fmt: skip
        resume_state = None

    run.world, run.precision = world, precision
    display = _TrainDisplay(err, run.train_cfg, time.perf_counter() - t_start)
    stop = _StopFlag()
    previous = signal.signal(signal.SIGINT, stop.handle)
    finished = False
    try:
        summary = fit(run, report=display, should_stop=stop.is_set, resume=resume_state)
        finished = True
    finally:
        display.close()
        signal.signal(signal.SIGINT, previous)
        distributed.shutdown(world, clean=finished)
    if not world.is_main:
        return
    summary["stop_reason"] = summary["stop_reason"] if not stop.is_set() else "interrupted"
    summary.update(prepared)
    _print_summary(err, summary, run)
    if json_out:
        _write_stdout(json.dumps(summary) + "\n")
    if stop.is_set():
        err.print(
            f"interrupted: last.pt saved; continue with: charlstm train --resume {run.run_dir}"
        )
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


def _default_run_name(corpus: list[str]) -> str:
    first = corpus[0]
    stem = "stdin" if first == "-" else Path(first.rstrip("/")).stem or "corpus"
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", stem)[:40]
    return f"{stem}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def _size_to_budget(
    model_cfg: Any,
    train_cfg: Any,
    given: list[str],
    embed: int,
    train_tokens: int,
    device: Any,
    precision: str,
    err: Console,
) -> tuple[Any, str]:
    """Choose the size, learning rate and dropout for the budget (charlstm.sizing), leaving
    what the user set; updates train_cfg (lr, and the budget less the time spent measuring) and
    returns the new model settings and one line saying what was chosen."""
    from dataclasses import asdict

    from charlstm import sizing
    from charlstm.model import ModelConfig

    t0 = time.perf_counter()
    rungs = sizing.LADDER
    if "hidden" in given or "layers" in given:
        rungs = (sizing.Rung(model_cfg.hidden_size, model_cfg.num_layers,
                             sizing.lr_for(model_cfg.hidden_size)),)  # fmt: skip
    with err.status("measuring this machine's speed to size the model to the budget…"):
        choice = sizing.choose(
            train_cfg.budget, train_tokens,
            rate=lambda r: sizing.measure_rate(
                r, model_cfg, train_cfg, device, precision,
                warmup_seconds=0.25 if r == rungs[0] else 0.0,  # the process's first steps
            ),
            params=lambda r: sizing.count_parameters(r, model_cfg), rungs=rungs,
        )  # fmt: skip
    spent = time.perf_counter() - t0
    train_cfg.budget = max(1.0, train_cfg.budget - spent)
    if "lr" not in given:
        train_cfg.lr = sizing.cell_lr(choice.rung, model_cfg.cell)
    dropout = model_cfg.dropout if "dropout" in given else choice.dropout
    sized = ModelConfig(**{**asdict(model_cfg), "hidden_size": choice.rung.hidden,
                           "num_layers": choice.rung.layers, "embed_size": embed,
                           "dropout": dropout})  # fmt: skip
    chosen = f"{choice.rung}, lr {train_cfg.lr:g}, dropout {dropout:g}"
    err.print(
        f"sized for the budget: {chosen} (~{choice.epochs:.1f} passes over the training split); "
        f"{choice.why}; {spent:.1f}s measuring, counted in the budget. Each yields to its flag "
        "(--hidden, --layers, --lr, --dropout)."
    )
    return sized, chosen


def _validation_part(
    val_ids: Any, val_chars: int, limit: int, tokenizer: Any, err: Console
) -> tuple[Any, int]:
    """The validation ids training scores (at most `limit` from the start; 0 = all), and the
    characters their predicted tokens spell."""
    if not limit or len(val_ids) <= limit:
        return val_ids, val_chars
    err.print(f"validating on the first {limit:,} of {len(val_ids):,} validation tokens "
              "(--val-tokens)")  # fmt: skip
    part = val_ids[:limit]
    if tokenizer.kind == "char":
        return part, len(part) - 1
    return part, len(tokenizer.decode(part[1:]))


def _keep_tokens(ids: Any, cached: Path | None, dest: Path) -> None:
    """The run's own copy of its token ids: a hard link to the cache file where one can be made
    (no second copy of a big corpus on disk), else a copy."""
    if cached is not None:
        try:
            os.link(cached, dest)
            return
        except OSError:
            shutil.copyfile(cached, dest)  # another file system, or no hard links there
            return
    import numpy as np

    np.save(dest, ids)


def _read_corpus(
    args: list[str], encoding: str, errors: str, err: Console
) -> tuple[str, dict[str, Any]]:
    from charlstm.corpus import load_corpus

    if errors not in ("strict", "replace", "ignore"):
        _fail(f"--errors must be strict, replace or ignore, got {errors!r}", EXIT_USAGE)
    with err.status("reading corpus…"):
        corpus = load_corpus(args, cache_dir=Path("corpora"), encoding=encoding, errors=errors)
    info = {
        "fingerprint": corpus.fingerprint,
        "sources": list(corpus.sources)[:20],
        "n_sources": len(corpus.sources),
        "chars": len(corpus.text),
    }
    return corpus.text, info


def _load_run_for_resume(
    run_dir: Path,
    corpus: list[str] | None,
    stop_kwargs: dict[str, Any],
    decoding: tuple[str, str],
    err: Console,
) -> tuple[Any, dict[str, Any]]:
    import numpy as np

    from charlstm.checkpoint import load_checkpoint
    from charlstm.data import split_ids
    from charlstm.model import model_from_checkpoint
    from charlstm.train import Run, TrainConfig

    if not (run_dir / "last.pt").is_file():
        _fail(f"cannot resume: no last.pt in '{run_dir}'")
    ckpt = load_checkpoint(run_dir / "last.pt")
    if "resume" not in ckpt:
        _fail(f"cannot resume: '{run_dir / 'last.pt'}' holds no training state")
    tokens = run_dir / "tokens.npy"
    if not tokens.is_file():
        _fail(f"cannot resume: '{tokens}' (the run's token ids) is missing")
    ids = np.load(tokens, mmap_mode="r")
    if corpus:
        from charlstm.corpus import CorpusStream
        from charlstm.tokens import fingerprint_of

        stream = CorpusStream(corpus, cache_dir=Path("corpora"), encoding=decoding[0],
                              errors=decoding[1])  # fmt: skip
        with err.status("checking the corpus…"):
            same = fingerprint_of(stream) == ckpt["corpus"]["fingerprint"]
        if not same:
            _fail("cannot resume: the corpus given differs from the one this run was trained on")
    # Runs saved before --val-tokens validated on the whole split.
    train_cfg = TrainConfig(**{"val_tokens": 0, **ckpt["train_config"]})
    # New stop limits replace the old ones (e.g. a longer budget to train on).
    if any(v is not None for v in stop_kwargs.values()):
        train_cfg.budget, train_cfg.steps, train_cfg.epochs = (
            stop_kwargs["budget"],
            stop_kwargs["steps"],
            stop_kwargs["epochs"],
        )
    model = model_from_checkpoint(ckpt)
    if "n_train" in ckpt["corpus"]:  # where the text was cut before tokenizing
        n_train = ckpt["corpus"]["n_train"]
        train_ids, val_ids = ids[:n_train], ids[n_train:]
        if train_cfg.val_tokens:  # the part the run validated on; its val_chars are saved
            val_ids = val_ids[: train_cfg.val_tokens]
    else:
        train_ids, val_ids = split_ids(np.asarray(ids), train_cfg.val_fraction)
    run = Run(
        model=model, model_cfg=model.cfg, train_cfg=train_cfg, tokenizer=ckpt["tokenizer"],
        train_ids=train_ids, val_ids=val_ids, corpus=ckpt["corpus"], run_dir=run_dir,
        metrics=list(ckpt["metrics"]),
    )  # fmt: skip
    return run, ckpt["resume"]


def _step_line(step: int, elapsed: float, loss: float) -> str:
    """The start of every plain log line of a run: where it is and its latest training loss."""
    return f"step {step:>7,} · {_fmt_seconds(elapsed):>6} · train {loss:.4f}"


class _TrainDisplay:
    """Receives the trainer's events; a live progress bar on a terminal, plain lines otherwise."""

    def __init__(self, console: Console, cfg: Any, setup_seconds: float) -> None:
        self.console = console
        self.cfg = cfg
        self.setup_seconds = setup_seconds
        self.progress = None
        self.task = None
        self.last_val: float | None = None
        # Off a terminal (a log file, CI) the bar is replaced by a plain line now and then: only
        # where validations, capped at ~2% of the run's time, leave a gap of over 15% of it.
        self.progress_now = 0.0
        self.progress_at_last_line = 0.0

    def __call__(self, event: str, data: dict[str, Any]) -> None:
        getattr(self, f"_on_{event}")(data)

    def _on_note(self, data: dict[str, Any]) -> None:
        self.console.print(f"[yellow]note:[/] {data['message']}")

    def _on_start(self, d: dict[str, Any]) -> None:
        limits = []
        if self.cfg.budget:
            limits.append(f"budget {_fmt_seconds(self.cfg.budget)}")
        if self.cfg.steps:
            limits.append(f"{self.cfg.steps:,} steps")
        if self.cfg.epochs:
            limits.append(f"{self.cfg.epochs:g} epochs")
        resumed = f" · resumed at step {d['resumed_at']:,}" if d["resumed_at"] is not None else ""
        self.console.print(
            f"vocabulary {d['vocab_size']:,} · parameters {d['parameters']:,} · "
            f"{d['streams']} streams × {d['window']} steps = "
            f"{d['tokens_per_step']:,} tokens/step · "
            f"{d['train_tokens']:,} train / {d['val_tokens']:,} validation tokens · "
            f"{' or '.join(limits)}{resumed} · {d['where']} · ready in {self.setup_seconds:.1f}s"
        )
        if self.console.is_terminal and not self.console.quiet:
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

            self.progress = Progress(
                TextColumn("[bold]train"),
                BarColumn(),
                TextColumn("{task.percentage:>3.0f}%"),
                TimeRemainingColumn(),
                TextColumn("{task.fields[status]}"),
                console=self.console,
                transient=True,
            )
            self.progress.start()
            self.task = self.progress.add_task("train", total=1.0, status="")

    def _on_progress(self, d: dict[str, Any]) -> None:
        self.progress_now = d["progress"]
        if self.progress is None:
            if 1.0 > d["progress"] >= self.progress_at_last_line + 0.15 - 1e-9:
                self.console.print(
                    f"{_step_line(d['step'], d['elapsed'], d['loss'])} · "
                    f"{d['tokens_per_s']:,.0f} tok/s"
                )
                self.progress_at_last_line = d["progress"]
            return
        val = f" · val {self.last_val:.3f}" if self.last_val is not None else ""
        status = (
            f"step {d['step']:,} · loss {d['loss']:.3f}{val} · "
            f"{d['tokens_per_s']:,.0f} tok/s · epoch {d['epoch']:.2f}"
        )
        self.progress.update(self.task, completed=d["progress"], status=status)

    def _on_eval(self, d: dict[str, Any]) -> None:
        self.progress_at_last_line = self.progress_now
        if d["val_loss"] is not None:
            self.last_val = d["val_loss"]
            val = f"val {d['val_loss']:.4f} ({d['val_bpc']:.3f} bpc)"
        else:
            val = "no validation split"
        mark = " [green]best[/]" if d["best"] else ""
        self.console.print(f"{_step_line(d['step'], d['elapsed'], d['train_loss'])} · {val}{mark}")

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


def _print_summary(err: Console, s: dict[str, Any], run: Any) -> None:
    from rich.table import Table

    table = Table(title="training summary", show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    best = s["best_val_loss"]
    kind = run.tokenizer.get("kind", "char")
    unit = {"char": "char", "word": "word"}.get(kind, "token")
    rows = [
        ("stopped", s["stop_reason"]),
        ("parameters", f"{s['parameters']:,}"),
        ("steps", f"{s['steps']:,} ({s['epochs']:.2f} epochs)"),
        ("tokens seen", f"{s['tokens_seen']:,}"),
        ("time", _fmt_seconds(s["elapsed"])),
        ("speed", f"{s['tokens_per_s'] or 0:,.0f} tokens/s training · "
         f"{s['tokens_seen'] / max(s['elapsed'], 1e-9):,.0f} with validation"),
        ("device", f"{s['device']}" + (f" × {s['processes']} processes" if s["processes"] > 1
         else "") + f" · {s['precision']}" + (f" · peak memory {s['peak_gpu_memory_mb']:,.0f} MiB"
         if s["peak_gpu_memory_mb"] is not None else "")),
        ("best validation", "—" if best is None else
         f"{best:.4f} nats/{unit} · {s['best_val_bpc']:.3f} bits/char · "
         f"perplexity {math.exp(best):.2f}"),
        ("validation curve", _val_curve(run.metrics)),
        ("checkpoints", f"{run.run_dir}/best.pt, last.pt, metrics.jsonl"),
        ("sample", f"charlstm sample -m {run.run_dir}"),
    ]  # fmt: skip
    for k, v in rows:
        if v:
            table.add_row(k, v)
    err.print(table)


def _val_curve(metrics: list[dict[str, Any]]) -> str:
    values = [m["val_loss"] for m in metrics if m.get("val_loss") is not None]
    if len(values) < 2:
        return ""
    return f"{sparkline(values[-60:])}  {values[0]:.3f} → {values[-1]:.3f}"


def _fmt_seconds(s: float) -> str:
    s = int(round(s))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


# ----------------------------------------------------------------------------------- sample


ModelOption = Annotated[
    Path | None,
    typer.Option(
        "--model", "-m",
        help="Checkpoint file or run folder. Default: the newest best.pt under ./checkpoints.",
        show_default=False,
    ),
]  # fmt: skip


@_command
def sample(
    ctx: typer.Context,
    model: ModelOption = None,
    prime: Annotated[
        str | None,
        typer.Option(help="Text that starts the sample and warms the state; - reads stdin."),
    ] = None,
    length: Annotated[
        int,
        typer.Option(
            "--length",
            "-n",
            help="Tokens to generate: characters for a char model, words or "
            "runs of spacing for word, subwords for bpe.",
        ),
    ] = SampleConfig.length,
    temp: Annotated[
        float,
        typer.Option("--temp", help="Temperature: 0 = greedy, lower = safer, higher = wilder."),
    ] = SampleConfig.temperature,
    top_k: Annotated[
        int, typer.Option(help="Sample among the k most likely tokens (0 = all).")
    ] = SampleConfig.top_k,
    top_p: Annotated[
        float, typer.Option(help="Sample among the most likely tokens whose probability sums to p.")
    ] = SampleConfig.top_p,
    greedy: Annotated[
        bool, typer.Option(help="Always take the most likely token (= --temp 0).")
    ] = False,
    seed: Annotated[
        int | None, typer.Option(help="Random seed; random when absent and reported on stderr.")
    ] = None,
    num_samples: Annotated[
        int,
        typer.Option(
            "--num-samples",
            "-N",
            help="Independent samples, generated together in one batch from the same prime. "
            "With more than one, each is printed whole under a line [bold]--- sample I ---[/] "
            "(I from 1), samples separated by a blank line; only a single sample streams.",
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
    threads: Annotated[
        int,
        typer.Option(help="CPU threads; 0 = all cores (fastest here even for one sample)."),
    ] = 0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but errors.")] = False,
) -> None:
    """Stream generated text to stdout, one token at a time."""
    err = _err_console(quiet)
    if greedy:
        given = _given(ctx, "temp", "top_k", "top_p")
        clash = [
            flag
            for flag, name, neutral in (("--temp", "temp", temp == 0), ("--top-k", "top_k",
                top_k == 0), ("--top-p", "top_p", top_p == 1))
            if name in given and not neutral
        ]  # fmt: skip
        if clash:
            _fail(f"--greedy always takes the most likely token; drop {', '.join(clash)}",
                  EXIT_USAGE)  # fmt: skip
    if not 1 <= num_samples <= 10_000:
        _fail(f"--num-samples must be between 1 and 10,000, got {num_samples}", EXIT_USAGE)
    if math.isnan(temp) or temp < 0:
        _fail(f"--temp must be 0 or more, got {temp}", EXIT_USAGE)
    if not 0 < top_p <= 1:
        _fail(f"--top-p must be in (0, 1], got {top_p}", EXIT_USAGE)
    if top_k < 0:
        _fail(f"--top-k must be 0 or more, got {top_k}", EXIT_USAGE)
    if not 0 <= length <= 100_000_000:
        _fail(f"--length must be between 0 and 100,000,000, got {length}", EXIT_USAGE)
    if num_samples > 1 and length * num_samples > 100_000_000:
        _fail("--length × --num-samples must be at most 100,000,000 tokens", EXIT_USAGE)
    if on_unknown not in ("error", "skip"):
        _fail(f"--on-unknown must be error or skip, got {on_unknown!r}", EXIT_USAGE)
    if prime == "-":
        prime = sys.stdin.read()

    import torch

    from charlstm.sample import SampleConfig, generate

    _set_threads(threads)
    net, tokenizer, _ = _load_model(model, err)
    prime_ids = _encode_prime(tokenizer, prime, on_unknown)
    if seed is None:
        seed = int.from_bytes(os.urandom(4), "little") & 0x7FFFFFFF
    err.print(f"seed {seed}")
    generator = torch.Generator().manual_seed(seed)
    cfg = SampleConfig(length=length, temperature=0.0 if greedy else temp, top_k=top_k, top_p=top_p)
    if num_samples == 1 and not json_out:
        if prime and echo_prime:
            _write_stdout(prime)
        stream = tokenizer.stream_decoder()  # holds back a character split across tokens
        # Written every 20 ms rather than every token: as live to a reader, far fewer calls.
        pending: list[str] = []
        due = time.perf_counter()
        for token in generate(net, prime_ids, cfg, generator):
            pending.append(stream.push(token.item()))
            if time.perf_counter() >= due:
                _write_stdout("".join(pending))
                pending.clear()
                due = time.perf_counter() + 0.02
        _write_stdout("".join(pending) + stream.flush() + "\n")
        return
    rows: list[list[int]] = [[] for _ in range(num_samples)]
    for tokens in generate(net, prime_ids, cfg, generator, batch=num_samples):  # (N,)
        for row, token in zip(rows, tokens.tolist(), strict=True):
            row.append(token)
    for i, row in enumerate(rows, start=1):
        text = tokenizer.decode(row)
        if json_out:
            _write_stdout(
                json.dumps({"sample": i, "seed": seed, "text": (prime or "") + text}) + "\n"
            )
        else:
            head = (prime or "") if echo_prime else ""
            _write_stdout(("\n" if i > 1 else "") + f"--- sample {i} ---\n{head}{text}\n")


def _load_model(model: Path | None, err: Console) -> tuple[Any, Any, dict[str, Any]]:
    from charlstm.checkpoint import load_checkpoint, resolve_checkpoint
    from charlstm.model import model_from_checkpoint
    from charlstm.tokenizer import tokenizer_from_dict

    path = resolve_checkpoint(model)
    ckpt = load_checkpoint(path)
    try:
        net = model_from_checkpoint(ckpt)
        tokenizer = tokenizer_from_dict(ckpt["tokenizer"])
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        _fail(f"'{path}' is damaged or from an incompatible version: {str(e).splitlines()[0]}")
    net.eval()
    err.print(f"model {path}", style="dim")
    return net, tokenizer, ckpt


def _note_unknown(tokenizer: Any, body: str, err: Console) -> set[str]:
    """Say on stderr which characters of `body` the model never saw (they will be skipped)."""
    unknown = tokenizer.unknown(body)
    if unknown:
        n = sum(body.count(ch) for ch in unknown)
        err.print(
            f"[yellow]note:[/] skipping {n:,} characters the model never saw: "
            f"{''.join(unknown[:20])!r}"
        )
    return set(unknown)


def _encode_prime(tokenizer: Any, prime: str | None, on_unknown: str) -> Any:
    import torch

    if prime:
        unknown = tokenizer.unknown(prime)
        if unknown and on_unknown == "error":
            what = "words" if tokenizer.kind == "word" else "characters"
            shown = " ".join(unknown[:10]) if tokenizer.kind == "word" else "".join(unknown[:20])
            _fail(
                f"the prime text has {what} the model never saw: {shown!r}; "
                "remove them or pass --on-unknown skip"
            )
        ids = tokenizer.encode(prime, skip_unknown=True)
        if len(ids):
            return torch.from_numpy(ids.astype("int64"))
    # No prime: start after a newline, as at the start of a line, when the model knows one.
    newline = tokenizer.encode("\n", skip_unknown=True)
    return torch.tensor([int(newline[-1]) if len(newline) else 0])


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


# ----------------------------------------------------------------------------------- evaluate


@_command
def evaluate(
    text: Annotated[
        list[str],
        typer.Argument(help="Held-out text: file(s), a folder, - for stdin, or a built-in corpus."),
    ],
    model: ModelOption = None,
    streams: Annotated[
        int,
        typer.Option(
            help="Parallel streams, each carrying its state; 1 = one sequential pass. Each stream "
            "first reads the 256 tokens before its start, unscored, so the figure matches one "
            "pass closely (within 1e-4 nats on a character model) at a fraction of the time."
        ),
    ] = 64,
    encoding: Annotated[str, typer.Option(help="Text encoding of the files.")] = "utf-8",
    errors: Annotated[
        str, typer.Option(help="Undecodable bytes: strict (stop), replace or ignore.")
    ] = "strict",
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    per_line: Annotated[
        bool,
        typer.Option(
            "--per-line",
            help='One JSON object per input line: {"line": TEXT, "tokens": N, "nats": TOTAL, '
            '"bits_per_char": BPC}. One sequential pass carries the state through the whole '
            "text; a line's newline counts in that line; the text's first character is not "
            "predicted.",
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
            "prediction sees at most that much context (64: what nanoGPT's CPU recipe sees). "
            "0 = carry the state through the text.",
        ),
    ] = 0,
    threads: Annotated[int, typer.Option(help="CPU threads; 0 = all cores.")] = 0,
    device: DeviceOption = "auto",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but errors.")] = False,
) -> None:
    """Loss (nats per token), perplexity and bits per character of a held-out text."""
    err = _err_console(quiet)
    if streams < 1:
        _fail(f"--streams must be at least 1, got {streams}", EXIT_USAGE)
    if reset_every < 0:
        _fail(f"--reset-every must be 0 (never) or more, got {reset_every}", EXIT_USAGE)
    if reset_every and per_line:
        _fail("--per-line scores one pass carrying the state; drop --reset-every", EXIT_USAGE)
    import numpy as np

    from charlstm.device import autocast, check_precision, resolve_device
    from charlstm.evaluate import evaluate_ids
    from charlstm.tokens import spelled_chars

    _set_threads(threads)
    target = resolve_device(device)  # full fp32 (no TF32) unless asked: figures are exact
    check_precision(precision, target)
    if precision == "fp16":
        _fail("evaluate takes --precision fp32 or bf16", EXIT_USAGE)
    net, tokenizer, ckpt = _load_model(model, err)
    net.to(target)
    body, _ = _read_corpus(text, encoding, errors, err)
    if tokenizer.kind == "word":
        # An unknown word is the unknown token, and is scored as such (as word-level models
        # are usually evaluated); a char model skips characters it never saw.
        ids = tokenizer.encode(body, on_unknown="token")
        oov = int(np.isin(ids, tokenizer.unknown_ids).sum())
        if oov:
            err.print(f"[yellow]note:[/] {oov:,} words outside the vocabulary count as unknown")
    else:
        _note_unknown(tokenizer, body, err)
        ids = tokenizer.encode(body, skip_unknown=True)
    if len(ids) < 2:
        _fail("the text is too short to evaluate: it needs at least 2 known tokens")
    t0 = time.perf_counter()
    if per_line:
        from charlstm.evaluate import score_lines, token_losses

        with err.status(f"evaluating {len(ids):,} tokens…"):
            losses = token_losses(net, ids)
        pieces = [tokenizer.piece(int(t)) for t in ids]
        scores = score_lines(pieces, losses)
        # Show each line as written, skipped unknown characters included, when lines match up.
        written = body.split("\n")
        if written and written[-1] == "":
            written.pop()
        same = len(written) == len(scores)
        rows = [{**line.to_dict(), **({"line": written[i]} if same else {})}
                for i, line in enumerate(scores)]  # fmt: skip
        _write_stdout("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
        err.print(f"{len(ids) / (time.perf_counter() - t0):,.0f} tokens/s", style="dim")
        return
    chars = spelled_chars(tokenizer, body, ids)
    with err.status(f"evaluating {len(ids):,} tokens…"), autocast(target, precision):
        result = evaluate_ids(net, ids, streams=streams, chars=chars, block=reset_every)
    seconds = time.perf_counter() - t0
    out = {**result.to_dict(), "seconds": round(seconds, 3), "streams": streams,
           "reset_every": reset_every, "precision": precision}  # fmt: skip
    if json_out:
        _write_stdout(json.dumps(out) + "\n")
    else:
        _write_stdout(
            f"loss        {result.loss:.4f} nats/token\n"
            f"perplexity  {result.perplexity:.3f}\n"
            f"bits/char   {result.bits_per_char:.4f}\n"
            f"tokens      {result.tokens:,}\n"
        )
    err.print(f"{result.tokens / seconds:,.0f} tokens/s", style="dim")


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
        typer.Option(
            help="Also draw the training and validation loss against step into this image "
            "(PNG, SVG, PDF; needs matplotlib: pip install 'charlstm[plot]').",
            show_default=False,
        ),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but errors.")] = False,
) -> None:
    """What a checkpoint holds, read without running any pickled code."""
    from charlstm.checkpoint import load_checkpoint, resolve_checkpoint

    path = resolve_checkpoint(model)
    ckpt = load_checkpoint(path)
    if plot is not None:
        _plot_metrics(ckpt.get("metrics") or [], plot, title=str(path))
        _err_console(quiet).print(f"wrote {plot}", style="dim")
    n_params = sum(t.numel() for k, t in ckpt["model"].items() if k != "head.weight"
                   or not ckpt["model_config"].get("tie_weights"))  # fmt: skip
    tok = ckpt["tokenizer"]
    best = ckpt.get("best_val_loss")
    data = {
        "path": str(path),
        "charlstm_version": ckpt.get("charlstm_version"),
        "format_version": ckpt.get("format_version"),
        "model": ckpt["model_config"],
        "parameters": n_params,
        "tokenizer": {"kind": tok.get("kind"), "vocab_size": ckpt["model_config"]["vocab_size"]},
        "corpus": ckpt.get("corpus"),
        "steps": ckpt.get("step"),
        "tokens_seen": ckpt.get("tokens_seen"),
        "best_val_loss": best if best is not None and math.isfinite(best) else None,
        "train_config": ckpt.get("train_config"),
        "resumable": "resume" in ckpt,
    }
    if json_out:
        _write_stdout(json.dumps(data) + "\n")
        return
    m = data["model"]
    lines = [
        f"checkpoint   {path} (charlstm {data['charlstm_version']}, "
        f"format {data['format_version']})",
        f"model        {m['cell']} {m['num_layers']}×{m['hidden_size']}, embedding "
        f"{m['embed_size']}, dropout {m['dropout']}, weight-drop {m.get('weight_drop', 0.0)}, "
        f"tied {m['tie_weights']}",
        f"parameters   {n_params:,}",
        f"tokenizer    {data['tokenizer']['kind']}, vocabulary {data['tokenizer']['vocab_size']:,}",
        f"corpus       {(data['corpus'] or {}).get('chars', 0):,} chars, fingerprint "
        f"{(data['corpus'] or {}).get('fingerprint')}",
        f"trained      {data['steps']:,} steps, {data['tokens_seen']:,} tokens",
        "best val     " + ("—" if data["best_val_loss"] is None else
                           f"{data['best_val_loss']:.4f} nats/token"),
        f"resumable    {'yes (last.pt)' if data['resumable'] else 'no'}",
    ]  # fmt: skip
    _write_stdout("\n".join(lines) + "\n")


def _plot_metrics(metrics: list[dict[str, Any]], out: Path, title: str) -> None:
    try:
        import matplotlib
    except ImportError:
        _fail("--plot needs matplotlib: pip install 'charlstm[plot]'")
    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    if not metrics:
        _fail("the checkpoint holds no metrics to plot")
    fig, ax = plt.subplots(figsize=(7, 4))
    for key, label in (("train_loss", "train"), ("val_loss", "validation")):
        pts = [(m["step"], m[key]) for m in metrics
               if m.get(key) is not None and math.isfinite(m[key])]  # fmt: skip
        if pts:
            ax.plot(*zip(*pts, strict=True), marker="." if len(pts) < 50 else None, label=label)
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/token)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    try:
        fig.savefig(out)
    except (OSError, ValueError) as e:
        _fail(f"could not write '{out}': {getattr(e, 'strerror', None) or e}")
    finally:
        plt.close(fig)


# ----------------------------------------------------------------------------------- visualize


@_command
def visualize(
    text: Annotated[
        list[str],
        typer.Argument(
            help="Text to look at: file(s), a folder, - for stdin, or a built-in corpus."
        ),
    ],
    model: ModelOption = None,
    layer: Annotated[
        int | None,
        typer.Option(
            help="Layer to trace, counting from 0. Default: the last.", show_default=False
        ),
    ] = None,
    kind: Annotated[
        str,
        typer.Option(
            help="What to colour by: hidden, cell, forget, input or output (gru: update, reset)."
        ),
    ] = "cell",
    unit: Annotated[
        int | None,
        typer.Option(
            help="Unit to show. Default: the best 5 with --find, else 0.", show_default=False
        ),
    ] = None,
    find: Annotated[
        bool,
        typer.Option(
            "--find",
            help="Rank every unit and gate by correlation with simple properties of the text "
            "(in quotes, in brackets, line position, word starts) and show the best 5.",
        ),
    ] = False,
    html_out: Annotated[
        Path | None,
        typer.Option(
            "--html",
            help="Also write the shown units as one self-contained HTML page (hover for values).",
            show_default=False,
        ),
    ] = None,
    max_chars: Annotated[
        int,
        typer.Option(help="Trace only the first N characters (one step each: slow on long text)."),
    ] = 2000,
    encoding: Annotated[str, typer.Option(help="Text encoding of the files.")] = "utf-8",
    errors: Annotated[
        str, typer.Option(help="Undecodable bytes: strict (stop), replace or ignore.")
    ] = "strict",
    threads: Annotated[int, typer.Option(help="CPU threads; 0 = all cores.")] = 0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but errors.")] = False,
) -> None:
    """Colour a text by what a unit of the model holds at each character."""
    err = _err_console(quiet)
    kinds = ("hidden", "cell", "forget", "input", "output", "update", "reset")
    if kind not in kinds:
        _fail(f"--kind must be one of {', '.join(kinds)}, got {kind!r}", EXIT_USAGE)
    if max_chars < 1:
        _fail(f"--max-chars must be at least 1, got {max_chars}", EXIT_USAGE)
    import torch
    from rich.table import Table

    from charlstm.visualize import find_units, properties, render_html, render_terminal, trace

    _set_threads(threads)
    net, tokenizer, _ = _load_model(model, err)
    if tokenizer.kind != "char":
        _fail(f"visualize colours characters: it needs a char model, not {tokenizer.kind}")
    n_layers = net.cfg.num_layers
    layer = n_layers - 1 if layer is None else layer
    if not 0 <= layer < n_layers:
        _fail(f"--layer must be between 0 and {n_layers - 1}, got {layer}", EXIT_USAGE)
    body, _ = _read_corpus(text, encoding, errors, err)
    unknown = _note_unknown(tokenizer, body, err)
    if unknown:
        body = "".join(ch for ch in body if ch not in unknown)
    body = body[:max_chars]
    if not body:
        _fail("nothing to visualize: the text has no characters the model knows")
    ids = tokenizer.encode(body)
    if len(ids) != len(body):
        _fail("visualize needs a character-level model (one token per character)")
    with err.status(f"tracing {len(body):,} characters…"):
        acts = trace(net, torch.from_numpy(ids.astype("int64")), layer=layer)
    if kind not in acts:
        _fail(
            f"{net.cfg.cell} layers have no {kind!r}; choose one of {', '.join(acts)}", EXIT_USAGE
        )
    hidden = acts[kind].shape[1]
    if unit is not None and not 0 <= unit < hidden:
        _fail(f"--unit must be between 0 and {hidden - 1}, got {unit}", EXIT_USAGE)

    shown = [{"kind": kind, "unit": unit or 0}]
    if find:
        best = find_units(acts, properties(body), top=5)
        table = Table(title=f"layer {layer}: units that track the text", title_style="bold")
        for col in ("kind", "unit", "property", "r"):
            table.add_column(col, justify="right" if col in ("unit", "r") else "left")
        for b in best:
            table.add_row(b["kind"], str(b["unit"]), b["property"], f"{b['correlation']:+.3f}")
        err.print(table if best else "no unit varies with any property of this text")
        if unit is None and best:
            shown = best

    rows = []
    for s in shown:
        label = f"layer {layer} · {s['kind']} · unit {s['unit']}"
        if "correlation" in s:
            label += f" · r={s['correlation']:+.2f} with {s['property']}"
        rows.append((label, acts[s["kind"]][:, s["unit"]], s["kind"]))
    out = Console(file=sys.stdout, highlight=False)  # Rich drops the colour when piped
    for label, values, k in rows:
        out.print(label, style="bold", markup=False)
        end = "" if body.endswith("\n") else "\n"  # the text's own last newline ends it
        out.print(render_terminal(body, values, kind=k), soft_wrap=True, end=end)
    if html_out is not None:
        title = f"charlstm · {net.cfg.cell} · layer {layer}"
        page = render_html(body, [r[:2] for r in rows], title, kinds=[r[2] for r in rows])
        try:
            html_out.write_text(page, encoding="utf-8")
        except OSError as e:
            _fail(f"cannot write {html_out}: {e.strerror or e}")
        err.print(f"wrote {html_out}", style="dim")


# ----------------------------------------------------------------------------------- compress
# Two thin commands over charlstm.compress (the format and the coding) and charlstm.quantized
# (the integer-exact model); only reading, writing and display live here.

CompressInput = Annotated[str, typer.Argument(help="The file to read; - (default) reads stdin.")]
ThreadsOption = Annotated[
    int,
    typer.Option(
        help="CPU threads of the torch engine; 0 = all cores. (numpy's BLAS follows "
        "OPENBLAS_NUM_THREADS.)"
    ),
]
EngineOption = Annotated[
    str,
    typer.Option(
        help="torch or numpy: either one, on any machine and any number of threads, codes the "
        "very same bytes (the model runs in exact integer arithmetic)."
    ),
]


def _read_input(source: str) -> bytes:
    if source == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(source).read_bytes()
    except OSError as e:
        _fail(f"cannot read '{source}': {e.strerror or e}")


def _write_stdout_bytes(data: bytes) -> None:
    try:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        raise typer.Exit(0) from None


class _CodingBar:
    """The library's progress callback: a bar on a terminal for long inputs, else nothing."""

    def __init__(self, err: Console, what: str) -> None:
        self.err, self.what, self.progress, self.task = err, what, None, None
        self.started = False

    def __call__(self, done: int, total: int) -> None:
        if not self.started:
            self.started = True
            if self.err.is_terminal and not self.err.quiet and total >= 20_000:
                from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

                self.progress = Progress(
                    TextColumn(f"[bold]{self.what}"),
                    BarColumn(),
                    TextColumn("{task.percentage:>3.0f}%"),
                    TimeRemainingColumn(),
                    console=self.err,
                    transient=True,
                )
                self.progress.start()
                self.task = self.progress.add_task(self.what, total=total)
        if self.progress is not None:
            self.progress.update(self.task, completed=done)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()


def _load_codec(model: Path | None, engine: str) -> tuple[Path, Any]:
    """The checkpoint's path and the model ready to code. Quietly: a failure later must leave
    one line on stderr, so the path is said in the summary instead."""
    from charlstm.checkpoint import resolve_checkpoint
    from charlstm.compress import Codec

    net, tokenizer, _ = _load_model(model, _err_console(quiet=True))
    return resolve_checkpoint(model), Codec(net, tokenizer, engine=engine)


@_command
def compress(
    source: CompressInput = "-",
    model: ModelOption = None,
    segments: Annotated[
        int,
        typer.Option(
            help="Code the input as this many segments side by side, each from a zero state "
            "(several times faster in a batch; about 16 bits each). 0 = one per 2,048 tokens, "
            "at most 256.",
        ),
    ] = 0,
    engine: EngineOption = "torch",
    threads: ThreadsOption = 0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but errors.")] = False,
) -> None:
    """Compress a text with the model (exactly decodable on any machine) to stdout."""
    err = _err_console(quiet)
    if segments < 0:
        _fail(f"--segments must be 0 (from the length) or more, got {segments}", EXIT_USAGE)
    if sys.stdout.isatty():  # as gzip does: binary on a terminal helps no one
        _fail("refusing to write compressed data to a terminal; redirect it: > FILE.clz")
    from charlstm.compress import read_header, require_constriction

    require_constriction()
    _set_threads(threads)
    data = _read_input(source)
    path, codec = _load_codec(model, engine)
    bar = _CodingBar(err, "compress")
    t0 = time.perf_counter()
    try:
        blob = codec.compress(data, segments=segments or None, progress=bar)
    finally:
        bar.close()
    seconds = time.perf_counter() - t0
    _write_stdout_bytes(blob)
    header = read_header(blob)
    chars = len(data.decode("utf-8", errors="surrogateescape"))
    err.print(
        f"{path}: {len(data):,} → {len(blob):,} bytes "
        f"({8 * len(blob) / max(chars, 1):.3f} bits/char) "
        f"in {seconds:.1f}s ({len(data) / 1000 / max(seconds, 1e-9):,.1f} KB/s) · "
        f"{header.segments} segments",
        style="dim",
        soft_wrap=True,
    )


@_command
def decompress(
    source: CompressInput = "-",
    model: ModelOption = None,
    engine: EngineOption = "torch",
    threads: ThreadsOption = 0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but errors.")] = False,
) -> None:
    """Decompress a file made by `charlstm compress` with the same model, to stdout. Nothing is
    written unless the whole text matches the checksum the file carries."""
    err = _err_console(quiet)
    from charlstm.compress import read_header, require_constriction

    require_constriction()
    _set_threads(threads)
    blob = _read_input(source)
    read_header(blob)  # a file that is no compressed file fails before the model loads
    path, codec = _load_codec(model, engine)
    bar = _CodingBar(err, "decompress")
    t0 = time.perf_counter()
    try:
        data = codec.decompress(blob, progress=bar)
    finally:
        bar.close()
    seconds = time.perf_counter() - t0
    _write_stdout_bytes(data)
    err.print(
        f"{path}: {len(blob):,} → {len(data):,} bytes in {seconds:.1f}s "
        f"({len(data) / 1000 / max(seconds, 1e-9):,.1f} KB/s)",
        style="dim",
        soft_wrap=True,
    )


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
