"""The command line: options → config objects → library calls (api.py, runs.py), and display.
The only module that writes to the terminal: generated text (or JSON when asked) on stdout,
everything else on stderr (display.py draws it).

Exit codes: 0 success, 1 failure, 2 usage error, 130 interrupted.
"""

from __future__ import annotations

import functools
import gc
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from rich.console import Console

from charlstm import __version__
from charlstm.cli.display import (
    TrainDisplay,
    err_console,
    info_lines,
    plot_metrics,
    print_summary,
)
from charlstm.config import (
    CELLS,
    CHECKPOINTS,
    DECODE_ERRORS,
    DYNAMIC_LR,
    OPTIMIZERS,
    PRECISIONS,
    SOFTMAXES,
    TOKENIZERS,
    DynamicConfig,
    ModelConfig,
    SampleConfig,
    ServeConfig,
    TrainConfig,
)
from charlstm.errors import (
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    CharlstmError,
    OptionError,
    UsageError,
)

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
            what = e.for_cli() if isinstance(e, OptionError) else e  # named as flags here
            sys.stderr.write(f"charlstm: error: {what}\n")
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


# Choices, shown in --help and offered by shell completion.
Cell = Literal[CELLS]
Tokenizer = Literal[TOKENIZERS]
Optimizer = Literal[OPTIMIZERS]
Softmax = Literal[SOFTMAXES]
Precision = Literal[PRECISIONS]
EvalPrecision = Literal["fp32", "bf16"]
Errors = Literal[DECODE_ERRORS]
Engine = Literal["auto", "numpy", "torch"]
OnUnknown = Literal["error", "skip"]
VisualFormat = Literal["ansi", "tsv", "json"]  # visualize.FORMATS
DEVICES = ("auto", "cpu", "cuda", "mps")


def _flag(*names: str, help: str) -> Any:
    """A boolean flag, shown without a value (`--json`, not `--json <bool>`)."""
    return typer.Option(*names, help=help, metavar="")


def _complete_device(incomplete: str) -> list[str]:
    return [d for d in DEVICES if d.startswith(incomplete)]


def _complete_activation(incomplete: str) -> list[str]:
    kinds = ("hidden", "cell", "forget", "input", "output", "update", "reset", "normalizer",
             "stabilizer")  # fmt: skip
    return [k for k in kinds if k.startswith(incomplete)]


# Options several commands share.
Quiet = Annotated[bool, _flag("--quiet", "-q", help="Print nothing but errors.")]
Json = Annotated[bool, _flag("--json", help="Print one JSON object.")]
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
        help="auto (a CUDA GPU, else Apple's MPS, else the CPU), cpu, cuda, cuda:N or mps.",
        autocompletion=_complete_device,
    ),
]
ModelPath = Annotated[
    Path | None,
    typer.Option(
        "--model", "-m",
        help="Checkpoint file or run folder. Default: the newest best.pt under --checkpoints.",
        show_default=False,
    ),
]  # fmt: skip
Checkpoints = Annotated[
    Path,
    typer.Option(
        envvar="CHARLSTM_CHECKPOINTS",
        help="Folder that holds the run folders (every command looks there; "
        "CHARLSTM_CHECKPOINTS sets it for all).",
    ),
]
Encoding = Annotated[str, typer.Option(help="Text encoding of the files.")]
DecodeErrors = Annotated[
    Errors, typer.Option(help="Undecodable bytes: strict (stop), replace or ignore.")
]
Texts = Annotated[
    list[str],
    typer.Argument(
        help="Text: file(s), a folder, - for stdin, or a built-in corpus.",
        metavar="TEXT...",
        show_default=False,
    ),
]


def _stdin_note(args: list[str] | str | None, err: Console) -> None:
    """Reading stdin from a terminal waits for the user: say so, and how to end it."""
    if args and "-" in ([args] if isinstance(args, str) else args) and sys.stdin.isatty():
        err.print("reading stdin; end with Ctrl-D", style="dim")


def _opt(help: str, *names: str) -> Any:
    """An option whose absence (None) lets charlstm choose; `help` says what it chooses."""
    return typer.Option(*names, help=help, show_default=False)


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


def _process_age() -> float:
    """Seconds since this command started (Linux: /proc), else 0: under torchrun, since the
    launcher (this process's parent) started, as `torchrun ... --budget` is the command."""
    launched = "TORCHELASTIC_RUN_ID" in os.environ
    try:
        stat = Path(f"/proc/{os.getppid() if launched else 'self'}/stat").read_text()
        ticks = int(stat.rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return max(0.0, uptime - ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return 0.0


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
    from charlstm.api import check_adapt, random_seed
    from charlstm.generate.choose import check_seed

    err = err_console(quiet)
    SampleConfig.build(length, temp, top_k, top_p, greedy=greedy)  # check before loading
    check_seed(seed)
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


def _stream(pieces: Any, head: str = "", end_line: bool = False) -> None:
    """Write `head`, then generated pieces as they come, every 20 ms rather than every token:
    as live to a reader, with far fewer calls. stdout gets exactly that text; a newline ends a
    text that lacks one only on a terminal (so the shell's prompt and a Ctrl-C message start
    on a line of their own), or always with `end_line` (chat's turns, one after another)."""
    pending: list[str] = []
    last = _flush_pending([head], "")
    due = time.perf_counter()
    try:
        for piece in pieces:
            pending.append(piece)
            if time.perf_counter() >= due:
                last = _flush_pending(pending, last)
                due = time.perf_counter() + 0.02
    finally:
        last = _flush_pending(pending, last)
        if last != "\n" and (end_line or (last and _stdout_is_terminal())):
            _write_stdout("\n")


def _flush_pending(pending: list[str], last: str) -> str:
    """Write what is pending; the last character written so far."""
    text = "".join(pending)
    pending.clear()
    if text:
        _write_stdout(text)
    return text[-1:] or last


def _stdout_is_terminal() -> bool:
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False


def _load(
    model: Path | None,
    threads: int,
    err: Console,
    device: Any = "cpu",
    streams: int = 1,
    checkpoints: Path = CHECKPOINTS,
    engine: str = "torch",
) -> Any:
    """The model, loaded through the API, on `threads` CPU threads (0: chosen for `streams`)."""
    from charlstm.api import load

    net = load(model, device=device, checkpoints=checkpoints, engine=engine)
    if net.engine == "torch":
        from charlstm.device import set_threads

        set_threads(threads, streams)
    used = f"numpy, {net.portable.path.name}" if net.engine == "numpy" else "torch"
    err.print(f"model {net.path} ({used})", style="dim")
    return net


def _blas_threads(threads: int, streams: int) -> None:
    """numpy's BLAS takes its thread count from the environment once, when numpy loads: one
    thread for a single stream (a second core does not speed up a matrix-vector product, and a
    busy one slows it many times), `--threads` when given, else its own default."""
    if "numpy" in sys.modules:
        return
    if threads > 0:
        os.environ["OPENBLAS_NUM_THREADS"] = str(threads)
    elif streams == 1:
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


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
    from charlstm.device import resolve_device

    body = _read_texts(text, encoding, errors, err)
    net = _load(model, threads, err, resolve_device(device), 1 if per_line or dynamic else streams,
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


def _read_texts(args: list[str], encoding: str, errors: str, err: Console) -> str:
    from charlstm.config import CORPORA
    from charlstm.data.corpus import load_corpus

    _stdin_note(args, err)
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
        typer.Argument(
            help="Checkpoint file or run folder. Default: the newest best.pt under --checkpoints."
        ),
    ] = None,
    json_out: Json = False,
    plot: Annotated[
        Path | None,
        _opt(
            "Also draw the training and validation loss against step into this image (PNG, SVG, "
            "PDF; needs matplotlib: pip install 'charlstm\\[plot]')."
        ),
    ] = None,
    checkpoints: Checkpoints = CHECKPOINTS,
    quiet: Quiet = False,
) -> None:
    """What a checkpoint holds, read without running any pickled code."""
    from charlstm.api import info as read_info

    data = read_info(model, checkpoints=checkpoints)
    if plot is not None:
        if not data["metrics"] and data["path"].endswith(".safetensors"):
            raise CharlstmError(
                f"a model file keeps no training curve to plot: plot its run's checkpoint "
                f"(charlstm info {Path(data['path']).with_name('best.pt')} --plot {plot})"
            )
        plot_metrics(data["metrics"], plot, title=data["path"], curve=data["train_curve"])
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
            help="What to colour by: hidden, cell, forget, input or output (gru: update, reset; "
            "slstm also: normalizer, stabilizer).",
            autocompletion=_complete_activation,
        ),
    ] = "cell",
    unit: Annotated[
        int | None, _opt("Unit to show. Default: the best 5 with --find, else 0.")
    ] = None,
    find: Annotated[
        bool,
        _flag(
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
    output_format: Annotated[
        VisualFormat | None,
        _opt(
            "What stdout gets: ansi (the text coloured by each unit), tsv (a header, then one "
            "row per character: position, the character escaped, each unit's value) or json "
            "(one object per character). Default: ansi on a terminal, tsv otherwise.",
            "--format",
        ),
    ] = None,
    encoding: Encoding = "utf-8",
    errors: DecodeErrors = "strict",
    checkpoints: Checkpoints = CHECKPOINTS,
    threads: Threads = 0,
    quiet: Quiet = False,
) -> None:
    """Colour a text by what a unit of the model holds at each character (the values
    themselves into a pipe or a file)."""
    form = output_format or ("ansi" if _stdout_is_terminal() else "tsv")
    err = err_console(quiet)
    net = _load(model, threads, err, checkpoints=checkpoints)
    body = _read_texts(text, encoding, errors, err)
    if net.tokenizer.kind == "char":
        _note_unknown(net.encode_text(body), err)
    with err.status(f"tracing {min(len(body), max_chars):,} characters…"):
        traced = net.trace(body, layer=layer, max_chars=max_chars)
    acts, body = traced.activations, traced.text
    if kind not in acts:
        raise UsageError(
            f"--kind: {net.config.cell} layers have no {kind!r}; choose one of {', '.join(acts)}"
        )
    hidden = acts[kind].shape[1]
    if unit is not None and not 0 <= unit < hidden:
        raise UsageError(f"--unit must be between 0 and {hidden - 1}, got {unit}")
    shown = [{"kind": kind, "unit": unit or 0}]
    if find:
        shown = _find(acts, body, traced.layer, unit, err) or shown
    _show_units(body, acts, shown, traced.layer, net.config.cell, html_out, err, form)


def _find(acts: dict, body: str, layer: int, unit: int | None, err: Console) -> list[dict]:
    """Rank the units by how well they track properties of the text; print the best 5 (stderr)
    and return them unless a --unit was given."""
    from rich.table import Table

    from charlstm.evaluation.visualize import find_units, properties

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
    err: Console, form: str = "ansi",
) -> None:  # fmt: skip
    """The text coloured by each shown unit on stdout (or their values, `form` tsv or json);
    and the coloured text as a page with --html."""
    from charlstm.evaluation.visualize import render_html, render_terminal, value_lines

    rows = []
    for s in shown:
        label = f"layer {layer} · {s['kind']} · unit {s['unit']}"
        if "correlation" in s:
            label += f" · r={s['correlation']:+.2f} with {s['property']}"
        rows.append((label, acts[s["kind"]][:, s["unit"]], s["kind"]))
    if form != "ansi":
        columns = [(f"{s['kind']} {s['unit']}", values) for s, (_, values, _) in zip(shown, rows,
                   strict=True)]  # fmt: skip
        pending: list[str] = []
        for line in value_lines(body, columns, form):
            pending.append(line)
            if len(pending) >= 1000:
                _flush_pending(pending, "")
        _flush_pending(pending, "")
    # Colours also into a pipe when asked for (--format ansi); NO_COLOR still drops them.
    out = _StdoutConsole(file=sys.stdout, highlight=False, force_terminal=form == "ansi")
    for label, values, k in rows if form == "ansi" else ():
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


# ----------------------------------------------------------------------------------- runs


@_command
def runs(
    delete: Annotated[
        list[str] | None, _opt("Delete this run's folder (give it again for more runs).")
    ] = None,
    slim: Annotated[
        list[str] | None,
        _opt(
            "Keep only this run's best.pt (all that sampling needs) and delete last.pt and "
            "tokens.npy (only resuming needs them: about three quarters of a run's disk)."
        ),
    ] = None,
    slim_finished: Annotated[
        bool, _flag("--slim-finished", help="Slim every run that reached its limits.")
    ] = False,
    json_out: Annotated[bool, _flag("--json", help="One JSON object per run per line.")] = False,
    checkpoints: Checkpoints = CHECKPOINTS,
    quiet: Quiet = False,
) -> None:
    """The runs under the checkpoints folder (newest first): corpus, tokenizer, model, steps,
    best validation, age and disk use; and taking away what is no longer wanted."""
    from charlstm.formats.run_folder import delete_run, list_runs, slim_run

    err = err_console(quiet)
    names = list(slim or [])
    if slim_finished:
        names += [r.name for r in list_runs(checkpoints) if r.finished and r.last_bytes]
    for name in delete or []:
        freed = delete_run(checkpoints, name)
        err.print(f"deleted {checkpoints / name} ({_mb(freed)})")
    for name in names:
        freed = slim_run(checkpoints, name)
        err.print(f"slimmed {checkpoints / name}: kept best.pt, freed {_mb(freed)}; it can no "
                  "longer be resumed")  # fmt: skip
    if delete or names:
        return
    found = list_runs(checkpoints)
    if json_out:
        _write_stdout("".join(json.dumps(r.to_dict()) + "\n" for r in found))
        return
    if not found:
        err.print(f"no runs under '{checkpoints}'; train one with: charlstm train CORPUS")
        return
    _write_stdout(_runs_table(found))
    for r in found:
        if r.damaged:
            from rich.markup import escape

            err.print(f"[yellow]note:[/] {escape(f'{r.name}: {r.damaged}')}; listed from its files")
    total, resumable = sum(r.bytes for r in found), sum(r.last_bytes for r in found)
    err.print(
        f"{len(found)} runs, {_mb(total)}; {_mb(resumable)} of it is last.pt and tokens.npy, "
        "which only resuming needs (charlstm runs --slim-finished frees it for finished runs)",
        style="dim",
    )


def _runs_table(found: list[Any]) -> str:
    from charlstm.formats.run_folder import age

    rows = [("name", "corpus", "tokens", "model", "steps", "best", "bits/char", "age", "disk")]
    for r in found:
        name = r.name + (" (damaged run.json)" if r.damaged else "")
        rows.append((name, r.corpus[:32], r.tokenizer, r.model,
                     "—" if r.steps is None else f"{r.steps:,}",
                     "—" if r.best_val_loss is None else f"{r.best_val_loss:.4f}",
                     "—" if r.best_val_bpc is None else f"{r.best_val_bpc:.3f}",
                     age(r.modified), _mb(r.bytes)))  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() + "\n"
                   for row in rows)  # fmt: skip


def _mb(n: int) -> str:
    return f"{n / 2**20:,.1f} MB"


# ----------------------------------------------------------------------------------- chat


@_command
def chat(
    model: ModelPath = None,
    length: Annotated[int, typer.Option("--length", "-n", help="Tokens at most per reply.")] = 400,
    stop: Annotated[
        list[str] | None,
        _opt("A reply ends before this text (give it again for more). Default: a blank line."),
    ] = None,
    temp: Annotated[
        float | None, _opt(f"Temperature. Default: {SampleConfig.temperature}.", "--temp")
    ] = None,
    top_k: Annotated[int | None, _opt("Sample among the k most likely tokens.")] = None,
    top_p: Annotated[
        float | None, _opt("Sample among the most likely tokens whose probability sums to p.")
    ] = None,
    seed: Annotated[int | None, _opt("Random seed; random when absent.")] = None,
    checkpoints: Checkpoints = CHECKPOINTS,
    threads: Threads = 0,
    quiet: Quiet = False,
) -> None:
    """Talk with a model: each line you type, and each reply, continues one text, so every
    turn reads all the turns before it. Ctrl-C cuts a reply short; Ctrl-D leaves. Lines can be
    piped in too (one reply per line)."""
    err = err_console(quiet)
    net = _load(model, threads, err, checkpoints=checkpoints)
    session = net.session(temp=temp, top_k=top_k, top_p=top_p, seed=seed)
    stops = stop or ["\n\n"]
    interactive = sys.stdin.isatty()
    if interactive:
        import readline  # noqa: F401 (line editing and history for input())

        err.print("type a line and press Enter; Ctrl-D leaves", style="dim")
    while True:
        if interactive:
            sys.stderr.write("> ")
            sys.stderr.flush()
        try:
            line = input()
        except EOFError:
            if interactive:
                sys.stderr.write("\n")
            return
        unknown = session.feed(line + "\n")
        if unknown:
            err.print(f"[yellow]note:[/] skipped characters the model never saw: "
                      f"{''.join(unknown[:20])!r}")  # fmt: skip
        try:
            _stream(session.reply(length, stops), end_line=True)
        except KeyboardInterrupt:
            sys.stderr.write("(cut short)\n")


# ----------------------------------------------------------------------------------- compress
# Two thin commands over charlstm.compress.codec (the format and the coding) and
# charlstm.compress.exact (the integer-exact model); only reading, writing and display live here.

CompressInput = Annotated[str, typer.Argument(help="The file to read; - (default) reads stdin.")]
ThreadsOption = Annotated[
    int,
    typer.Option(
        help="CPU threads of the torch engine; 0 = all cores. (numpy's BLAS follows "
        "OPENBLAS_NUM_THREADS.)"
    ),
]
EngineOption = Annotated[
    Literal["torch", "numpy"],
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
        raise CharlstmError(f"cannot read '{source}': {e.strerror or e}") from None


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
        if self.progress is not None:  # the total grows when compress makes a second pass
            self.progress.update(self.task, completed=done, total=total)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()


def _load_codec(
    model: Path | None, engine: str, threads: int, checkpoints: Path
) -> tuple[Path, Any]:
    """The checkpoint's path and the model ready to code. Quietly: a failure later must leave
    one line on stderr, so the path is said in the summary instead."""
    from charlstm.compress.codec import Codec

    net = _load(model, threads, err_console(quiet=True), streams=0, checkpoints=checkpoints)
    return net.path, Codec(net.net, net.tokenizer, engine=engine)


@_command
def compress(
    source: CompressInput = "-",
    model: ModelPath = None,
    segments: Annotated[
        int,
        typer.Option(
            help="Code the input as this many segments side by side, each from a zero state "
            "(several times faster in a batch; about 16 bits each). 0 = one per 2,048 tokens, "
            "at most 256.",
        ),
    ] = 0,
    engine: EngineOption = "torch",
    checkpoints: Checkpoints = CHECKPOINTS,
    threads: ThreadsOption = 0,
    quiet: Quiet = False,
) -> None:
    """Compress a text with the model (exactly decodable on any machine) to stdout."""
    err = err_console(quiet)
    if segments < 0:
        raise UsageError(f"--segments must be 0 (from the length) or more, got {segments}")
    if sys.stdout.isatty():  # as gzip does: binary on a terminal helps no one
        raise CharlstmError(
            "refusing to write compressed data to a terminal; redirect it: > FILE.clz"
        )
    from charlstm.compress.codec import read_header, require_constriction

    require_constriction()
    data = _read_input(source)
    path, codec = _load_codec(model, engine, threads, checkpoints)
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
        f"{header.segments} segments"
        + (f", {header.raw_segments} stored raw (the model cannot predict them)"
           if header.raw_segments else ""),  # fmt: skip
        style="dim",
        soft_wrap=True,
    )


@_command
def decompress(
    source: CompressInput = "-",
    model: ModelPath = None,
    engine: EngineOption = "torch",
    checkpoints: Checkpoints = CHECKPOINTS,
    threads: ThreadsOption = 0,
    quiet: Quiet = False,
) -> None:
    """Decompress a file made by `charlstm compress` with the same model, to stdout. Nothing is
    written unless the whole text matches the checksum the file carries."""
    err = err_console(quiet)
    from charlstm.compress.codec import read_header, require_constriction

    require_constriction()
    blob = _read_input(source)
    read_header(blob)  # a file that is no compressed file fails before the model loads
    path, codec = _load_codec(model, engine, threads, checkpoints)
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


# ----------------------------------------------------------------------------------- export


@_command
def export(
    model: Annotated[
        Path | None,
        typer.Argument(
            help="Checkpoint file, run folder or model.safetensors. Default: the newest best.pt.",
            show_default=False,
        ),
    ] = None,
    html_out: Annotated[
        Path | None,
        _opt(
            "Also write one self-contained page that runs the model in a browser, offline: a "
            "prime box, temperature and top-p, text streamed as it is made (char models).",
            "--html",
        ),
    ] = None,
    onnx_out: Annotated[
        Path | None,
        _opt(
            "Also write the one-step graph as ONNX (token ids and state in; logits and state "
            "out; needs pip install 'charlstm\\[onnx]').",
            "--onnx",
        ),
    ] = None,
    checkpoints: Checkpoints = CHECKPOINTS,
    quiet: Quiet = False,
) -> None:
    """Write a checkpoint's model.safetensors (sampling without torch) beside it and, when asked,
    a browser page and an ONNX graph. Given a model.safetensors, torch is not needed."""
    from charlstm.api import export as export_model

    err = err_console(quiet)
    for path in export_model(model, html=html_out, onnx=onnx_out, checkpoints=checkpoints):
        err.print(f"wrote {path}", style="dim")


# ----------------------------------------------------------------------------------- serve


@_command
def serve(
    runs: Annotated[
        list[Path] | None,
        typer.Argument(
            help="Run folders or checkpoint files to serve, each under its folder's name (the "
            'request\'s "model"). Default: the newest run under --checkpoints.',
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
    allow_host: Annotated[
        list[str] | None,
        typer.Option(
            help="Also answer requests whose Host header is this name (repeatable; '*': any). "
            "Others than the loopback names and --host are refused, so that no web page can "
            "reach the server through a name of its own (DNS rebinding).",
            metavar="HOST",
            show_default=False,
        ),
    ] = None,
    allow_origin: Annotated[
        list[str] | None,
        typer.Option(
            help="Let web pages from this origin call the server from a browser, e.g. "
            "http://localhost:3000 (repeatable; '*': any). Requests from other pages are "
            "refused.",
            metavar="ORIGIN",
            show_default=False,
        ),
    ] = None,
    device: Device = "auto",
    checkpoints: Checkpoints = CHECKPOINTS,
    threads: Threads = 0,
    quiet: Quiet = False,
) -> None:
    """Serve models over HTTP: OpenAI-style /v1/completions (streaming too), /score, /health."""
    # From here on SIGINT and SIGTERM only stop the server (status 0), even while models load.
    signals: list[int] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda s, _frame: signals.append(s))
    cfg = ServeConfig(host=host, port=port, api_key=api_key, max_batch=max_batch, queue=queue,
                      max_tokens=max_tokens, grace=grace, allow_hosts=tuple(allow_host or ()),
                      allow_origins=tuple(allow_origin or ()))  # fmt: skip
    try:
        from charlstm.serve import server
    except ImportError as e:
        raise CharlstmError(
            f"serve needs the [serve] extra ({e.name} is missing): pip install 'charlstm[serve]'"
        ) from None
    from charlstm.device import resolve_device, set_threads

    err = err_console(quiet)
    set_threads(threads, streams=max_batch)
    models = server.load_models(list(runs or []), checkpoints=checkpoints,
                                device=resolve_device(device))  # fmt: skip
    for name, model in models.items():
        err.print(f"model {name}: {model.path}", style="dim")
    try:
        server.run(models, cfg, _serve_report(quiet), signals)
    finally:
        # Stopped: a further signal has nothing to stop. Ignored, not recorded: Python resets
        # handlers written in Python while it exits, and a signal then (torch takes a moment
        # to unload) would end the process by that signal instead of with status 0.
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)


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
    # Ctrl-C ends every command (status 130), also when this process was started with SIGINT
    # ignored, as a shell script's background job (`cmd &`) is: Python then keeps it ignored,
    # and a stream sent SIGINT would run on to its end.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    process_start = time.perf_counter() - _process_age()
    try:
        code = app(standalone_mode=False, obj={"process_start": process_start})
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
    # Python's exit collects every object torch made, many times over (5-6 s of a budgeted
    # run's wall time on a busy machine, against 0.7-1 s frozen); exit handlers still run.
    gc.freeze()
    sys.exit(code if isinstance(code, int) else 0)
