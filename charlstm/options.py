"""What a user can ask of `charlstm train` (and `charlstm.train()`): every option declared once,
as a field of TrainOptions with its help, its choices, its flag and the config field it goes
`into`. The CLI's parameters are generated from these fields (cli/options.py), and each help's
"Default: …" is rendered here from the dataclasses and presets, never typed by hand. No torch.

    TrainOptions ─ apply_preset (word/bpe, fine-tuning) ─ sizing (runs.py) ─▶ ModelConfig,
                                                                            TrainConfig
The flags of sample, evaluate and visualize are declared the same way, at the end
(SampleOptions, EvaluateOptions, VisualizeOptions).
"""

from __future__ import annotations

from dataclasses import MISSING, Field, dataclass, fields, replace
from pathlib import Path

from charlstm.config import (
    CELLS,
    CHECKPOINTS,
    DEFAULT_BUDGET,
    DEFAULT_ITEMS,
    DEFAULT_MIN_FREQUENCY,
    DEFAULT_VOCAB,
    DYNAMIC_LR,
    ENGINES,
    EVAL_PRECISIONS,
    ITEM_TEMPERATURE,
    ITEMS,
    MAX_BEAM,
    OPTIMIZERS,
    PRECISIONS,
    SOFTMAXES,
    TOKENIZER_PRESETS,
    TOKENIZERS,
    UNTIED_EMBED,
    DynamicConfig,
    ModelConfig,
    SampleConfig,
    TrainConfig,
    _at_least,
    _check,
    option,
    parse_duration,
)
from charlstm.training.ladder import CELL_LR_SCALE, DROPOUT_BY_EPOCHS, LADDER, OTHER_CELLS_LR_SCALE

CONFIGS = {"ModelConfig": ModelConfig, "TrainConfig": TrainConfig, "DynamicConfig": DynamicConfig}


def shown(value: object) -> str:
    """A default as help shows it: on/off, 0.008, 1,000,000, 10m."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return _sci(value) if 0 < abs(value) < 0.01 else f"{value:g}"
    if isinstance(value, int) and abs(value) >= 10_000:
        return f"{value:,}"
    return str(value)


def _sci(value: float) -> str:
    """3.2e-2, 8e-3: the ladder's learning rates as the README writes them."""
    mantissa, exponent = f"{value:.1e}".split("e")
    return f"{mantissa.removesuffix('.0')}e{int(exponent)}"


def _duration(seconds: float) -> str:
    return f"{seconds / 3600:g}h" if seconds % 3600 == 0 else f"{seconds / 60:g}m"


def _by_kind(name: str, values: dict[str, object]) -> str:
    """'word: 20; bpe: 3e-3': a value per kind, kinds with the same value named together."""
    groups: dict[str, list[str]] = {}
    for kind, value in values.items():
        groups.setdefault(shown(value), []).append(kind)
    return "; ".join(f"{', '.join(kinds)}: {value}" for value, kinds in groups.items())


# What the sized defaults say, from the ladder the budget sizing climbs (training/ladder.py).
_SIZED_LR = (
    f"the size's own when sized to the budget ({_sci(LADDER[0].lr)} for {LADDER[0]} … "
    f"{_sci(LADDER[-1].lr)} for {LADDER[-1]}; ×{OTHER_CELLS_LR_SCALE:g} for cells other than "
    f"{', '.join(CELL_LR_SCALE)}), else {{}}"
)
_SIZED_DROPOUT = (
    f"sized to the budget (char: {shown(DROPOUT_BY_EPOCHS[0][1])} to "
    f"{shown(DROPOUT_BY_EPOCHS[-1][1])}), {{}} without one"
)


def default_of(f: Field) -> object:
    """The value an option left alone ends up with: its config field's default, else its own."""
    into = f.metadata.get("into")
    if into:
        config, name = into.split(".")
        return next(g.default for g in fields(CONFIGS[config]) if g.name == name)
    return None if f.default is MISSING else f.default


def help_text(f: Field) -> str:
    """The field's help, then "Default: …" rendered from the configs and presets."""
    meta = f.metadata
    says, value = meta.get("says"), default_of(f)
    if says is None:
        says = "" if value is None or not meta.get("into") else "{}"
    parts = [says.format(shown(value))] if says else []
    presets = {k: p[f.name] for k, p in TOKENIZER_PRESETS.items()
               if f.name in p and (p[f.name] != value or not meta.get("into"))}  # fmt: skip
    if presets:
        parts.append(_by_kind(f.name, presets))
    if f.name in FINE_TUNE_PRESET and FINE_TUNE_PRESET[f.name] != value:
        parts.append(f"fine-tuning: {shown(FINE_TUNE_PRESET[f.name])}")
    return meta["help"] + (f" Default: {'; '.join(parts)}." if parts else "")


# What a run is (its model, its data and their layout, its seed): `--resume` refuses these.
FIXED_BY_RUN = ("cell", "hidden", "layers", "embed", "dropout", "weight_drop", "tie_weights",
                "softmax", "mogrifier_rounds", "tokenizer", "vocab_size", "min_frequency",
                "batch_size", "window", "seed", "optimizer", "val_fraction", "val_tokens",
                "name", "items", "val_file", "attention")  # fmt: skip
# What `--init-from` takes from the base: the model's shape and its tokenizer.
FIXED_BY_BASE = ("cell", "hidden", "layers", "embed", "weight_drop", "tie_weights", "softmax",
                 "mogrifier_rounds", "tokenizer", "vocab_size", "min_frequency",
                 "attention")  # fmt: skip
# Fine-tuning's own defaults (a small text, a model that already knows a language): each
# applies unless its option is given (BENCHMARKS.md, "Fine-tuning": lr 1e-3, 2e-3 and 4e-3
# held out within 0.01 bits/char of each other; 2e-3 best).
FINE_TUNE_PRESET: dict[str, object] = {"lr": 2e-3, "warmup": 20, "min_lr_ratio": 0.1,
                                       "weight_decay": 0.1, "dropout": 0.1}  # fmt: skip
FINE_TUNE_BUDGET = 120.0  # seconds, when no --budget, --steps or --epochs is given
# What `--resume` applies from the step it resumes at (TrainConfig's names), limits aside.
CHANGEABLE_ON_RESUME = ("lr", "min_lr_ratio", "warmup_steps", "weight_decay", "clip",
                        "eval_every", "patience", "state_reset")  # fmt: skip

_M, _T = "ModelConfig.", "TrainConfig."


@dataclass
class TrainOptions:
    """What a user asks of `charlstm train` or `charlstm.train()`. Every option left at None is
    chosen by charlstm: a word/bpe preset, then the budget sizing, then the dataclass defaults.
    Ranges are checked here, before the corpus is read, by the configs they end up in."""

    corpus: list[str] = option(
        "Text to learn from: file(s), a folder (its text files, recursively), - for stdin, or a "
        "built-in corpus: [bold]shakespeare[/], [bold]python[/].", factory=list, argument=True)
    # limits: budget in seconds, or a duration such as "2m"
    budget: float | str | None = option(
        "Wall-clock limit, e.g. 135s, 10m, 2h. The learning rate decays to its floor as the "
        "budget runs out.", into=_T + "budget",
        says=f"{_duration(DEFAULT_BUDGET)} when no --steps or --epochs is given")
    steps: int | None = option("Stop after this many optimizer steps.", into=_T + "steps")
    epochs: float | None = option("Stop after this many passes over the training split.",
                                  into=_T + "epochs")
    # tokens
    tokenizer: str | None = option(
        f"Tokens: {TOKENIZERS[0]} (one per character; the default), word (whitespace-separated "
        "words with their spacing, via Hugging Face tokenizers) or bpe (byte-level subwords "
        "learnt from the corpus).", choices=TOKENIZERS)
    vocab_size: int | None = option(
        "word/bpe: the vocabulary's size (the most frequent words or merges of the training "
        "split).", says=_by_kind("vocab_size", DEFAULT_VOCAB))
    min_frequency: int | None = option(
        "word/bpe: leave out words (merges) seen fewer times.",
        says=_by_kind("min_frequency", DEFAULT_MIN_FREQUENCY))
    # model
    cell: str | None = option("Recurrent cell.", into=_M + "cell", choices=CELLS)
    hidden: int | None = option("Units per recurrent layer.", into=_M + "hidden_size",
                                says="sized to the budget (char), {} without one")
    layers: int | None = option("Stacked recurrent layers.", into=_M + "num_layers",
                                says="sized to the budget (char), {} without one")
    embed: int | None = option(
        "Embedding size.", into=_M + "embed_size",
        says=f"the hidden size when tied, else min(hidden, {UNTIED_EMBED})")
    dropout: float | None = option("Dropout between layers and before the head.",
                                   into=_M + "dropout", says=_SIZED_DROPOUT)
    weight_drop: float | None = option(
        "Drop this fraction of the recurrent (hidden-to-hidden) weights, a new mask each "
        "window (AWD-LSTM's weight-drop).", into=_M + "weight_drop")
    mogrifier_rounds: int | None = option(
        "--cell mogrifier: rounds in which the input and the previous output gate each other "
        "before each LSTM step (0 = a plain LSTM).", into=_M + "mogrifier_rounds")
    attention: int | None = option(
        "Add one attention head over the top layer's last M outputs, with a feed-forward "
        "layer (SHA-RNN); its memory is carried like the state. 0: none.", into=_M + "attention",
        metavar="M")
    tie_weights: bool | None = option("Share the embedding matrix with the output layer.",
                                      into=_M + "tie_weights",
                                      flags=("--tie-weights/--no-tie-weights",))
    softmax: str | None = option(
        f"Output layer: {SOFTMAXES[0]} (the default), or adaptive (frequent tokens get the full "
        "layer, rare ones smaller clusters: ~2.5x faster on a 13k-word vocabulary, but it "
        "overfit wikitext-2 in 130 s where the full tied layer did not).", choices=SOFTMAXES)
    # optimisation and validation
    batch_size: int | None = option("Parallel streams per step (B).", into=_T + "batch_size",
                                    flags=("--batch-size", "-b"))
    window: int | None = option("Steps per truncated-BPTT window (T).", into=_T + "window",
                                flags=("--window", "-t"))
    lr: float | None = option("Peak learning rate.", into=_T + "lr", says=_SIZED_LR)
    min_lr_ratio: float | None = option("Final learning rate as a fraction of --lr.",
                                        into=_T + "min_lr_ratio")
    warmup: int | None = option("Warm-up steps.", into=_T + "warmup_steps")
    weight_decay: float | None = option("AdamW weight decay on matrices.",
                                        into=_T + "weight_decay")
    optimizer: str | None = option(
        "adamw, or sgd (plain SGD, as PyTorch's word_language_model: with --lr "
        f"{shown(TOKENIZER_PRESETS['word']['lr'])} it beat AdamW on word models).",
        into=_T + "optimizer", choices=OPTIMIZERS)
    clip: float | None = option("Clip the gradient norm to this value.", into=_T + "clip")
    val_fraction: float | None = option(
        "Part of the corpus held out for validation: its tail, or with --items that share of "
        "the items drawn at random (seeded).", into=_T + "val_fraction")
    val_file: Path | None = option(
        "Validate on this held-out file instead; the corpus then all trains (no split).")
    items: str | None = option(
        "The corpus is a list: lines (each non-empty line is one item). Each item is learnt "
        "from a zero state to its end, and `sample` then prints new items, one per line.",
        into=_T + "items", choices=ITEMS, says="off")
    eval_every: int | None = option("Steps between validations.", into=_T + "eval_every",
                                    says="{} = up to ten times per run, in at most ~2% of its time")
    val_tokens: int | None = option(
        "Validate on at most this many tokens from the start of the validation split (0 = all "
        "of it), so a big corpus does not spend hours validating.", into=_T + "val_tokens")
    patience: int | None = option(
        "Stop early after this many validations in a row without a new best (0 = never); "
        "best.pt keeps the best model.", into=_T + "patience")
    state_reset: float | None = option(
        "Chance per window that a stream starts again from a zero state, so the model also "
        "learns to start from nothing (as a sample does).", into=_T + "state_reset")
    seed: int | None = option("Random seed (weights, dropout, batch offsets, resets).",
                              into=_T + "seed")
    # where the run lives, and how the corpus is read
    name: str | None = option("Run name: checkpoints go to CHECKPOINTS/NAME.",
                              says="corpus-date-time")
    checkpoints: Path = option("Folder that holds the run folders (every command looks there; "
                               "CHARLSTM_CHECKPOINTS sets it for all).", CHECKPOINTS)
    overwrite: bool = option("Replace the run of the same --name, if there is one.", False)
    # fine-tuning: start from this run's (or checkpoint's) weights and tokenizer
    init_from: Path | None = option(
        "Fine-tune: start from this run's (or checkpoint's) weights and tokenizer instead of "
        "random ones. Its shape is kept; fine-tuning's own defaults apply (see the README).")
    # texts scored at every validation beside the validation split (e.g. the base's domain)
    keep_eval: list[str] | None = option(
        "Also score this text at every validation (give it again for more), e.g. the base's "
        "own held-out text: how much of the old skill fine-tuning costs.")
    resume: Path | None = option(
        "Continue the run in this folder from its last.pt: exactly where it stopped, or "
        "with --steps/--budget/--epochs that much more (see the README, 'Resuming').")
    encoding: str = option("Text encoding of the files.", "utf-8")
    errors: str = option("Undecodable bytes: strict (stop), replace or ignore.", "strict")
    # where it runs
    threads: int = option("CPU threads; 0 = all cores (shared among torchrun's processes).", 0)
    device: str = option("auto (a CUDA GPU, else Apple's MPS, else the CPU), cpu, cuda, cuda:N "
                         "or mps.", "auto")  # fmt: skip
    precision: str = option(
        "auto (bf16 on a CPU with bf16 instructions, where it trains 1.25-1.45x faster "
        "to the same loss; fp32 elsewhere), fp32, or mixed precision: bf16, or fp16 on a GPU "
        "(with loss scaling). fp32 on CUDA uses TF32 tensor cores.", "auto", choices=PRECISIONS)

    def __post_init__(self) -> None:
        if isinstance(self.corpus, str):
            self.corpus = [self.corpus]
        if isinstance(self.keep_eval, str):
            self.keep_eval = [self.keep_eval]
        _check(
            bool(self.corpus) or self.resume is not None,
            "train needs a CORPUS: a file, folder, - for stdin, or shakespeare/python",
        )
        if self.budget is not None:
            self.budget = parse_duration(self.budget)
        _check(
            self.tokenizer is None or self.tokenizer in TOKENIZERS,
            f"--tokenizer must be {', '.join(TOKENIZERS)}; got {self.tokenizer!r}",
        )
        _check(
            self.softmax is None or self.softmax in SOFTMAXES,
            f"--softmax must be full or adaptive; got {self.softmax!r}",
        )
        _check(
            self.kind != "char" or (self.vocab_size is None and self.min_frequency is None),
            "--vocab-size and --min-frequency are for --tokenizer word or bpe",
        )
        _check(
            self.precision in PRECISIONS,
            f"--precision must be one of {', '.join(PRECISIONS)}; got {self.precision!r}",
        )
        _at_least("--threads", self.threads, 0)
        _check(not (self.overwrite and self.resume), "--overwrite starts a run afresh; --resume "
               "continues one: give one of them")  # fmt: skip
        _check(not (self.init_from and self.resume), "--init-from starts a new run from another; "
               "--resume continues one: give one of them")  # fmt: skip
        _check(not (self.keep_eval and self.resume), "--keep-eval is chosen when a run starts; "
               "--resume keeps the run's own")  # fmt: skip
        _check(self.val_file is None or self.val_fraction is None,
               "--val-file holds the validation text; drop --val-fraction")  # fmt: skip
        if self.init_from is not None:
            taken = self.given(*FIXED_BY_BASE)
            flags = ", ".join("--" + n.replace("_", "-") for n in taken)
            _check(not taken, f"--init-from takes the model's shape and tokenizer from the base; "
                   f"drop {flags}")  # fmt: skip
        if self.resume is not None:
            fixed = self.given(*FIXED_BY_RUN)
            flags = ", ".join("--" + n.replace("_", "-") for n in fixed)
            _check(
                not fixed,
                f"--resume continues the checkpoint's model as it is (its data, layout and seed "
                f"too); drop {flags}",
            )
        _check(
            self.name is None
            or (self.name.strip(". ") != "" and not any(sep in self.name for sep in "/\\")),
            f"--name must be a plain folder name, without / or .. (got {self.name!r}); "
            "--checkpoints says where the run folders go",
        )
        # The ranges live in the configs: build them once from what was given, to check it.
        TrainConfig(**self.train_fields())
        ModelConfig(vocab_size=max(2, self.vocab_size or 2), **self.model_fields())

    @property
    def kind(self) -> str:
        """The tokenizer kind, "char" unless given."""
        return self.tokenizer or "char"

    def given(self, *names: str) -> list[str]:
        """Which of `names` the user set (not None)."""
        return [n for n in names if getattr(self, n) is not None]

    def train_fields(self) -> dict[str, object]:
        """The given options under TrainConfig's names (each field's `into`)."""
        return self._into("TrainConfig")

    def model_fields(self) -> dict[str, object]:
        """The given options under ModelConfig's names (softmax is resolved with the vocabulary)."""
        return self._into("ModelConfig")

    def _into(self, config: str) -> dict[str, object]:
        out = {}
        for f in fields(self):
            target, _, name = (f.metadata.get("into") or "").partition(".")
            if target == config and getattr(self, f.name) is not None:
                out[name] = getattr(self, f.name)
        return out


def apply_preset(options: TrainOptions) -> tuple[TrainOptions, dict[str, object]]:
    """The tokenizer's preset (TOKENIZER_PRESETS), or fine-tuning's (FINE_TUNE_PRESET), for
    every option not given; returns the new options and what the preset chose."""
    preset = FINE_TUNE_PRESET if options.init_from else TOKENIZER_PRESETS.get(options.kind, {})
    chosen = {
        k: v
        for k, v in preset.items()
        if getattr(options, k) is None
        and not (k == "tie_weights" and options.softmax == "adaptive")
    }
    return replace(options, **chosen), chosen




@dataclass
class SampleOptions:
    """The flags of `charlstm sample`: the sampling options (generate/options.py's
    SamplingOptions, by the same names, checked there once) and how the text is given and shown."""

    prime: str | None = option("Text that starts the sample and warms the state; - reads stdin.")
    prime_file: Path | None = option("Read the prime from this file (UTF-8) instead.")
    length: int | None = option(
        "Tokens to generate: characters for a char model, words or runs of spacing for word, "
        "subwords for bpe.", says=str(SampleConfig.length), flags=("--length", "-n"))
    temp: float | None = option("Temperature: 0 = greedy, lower = safer, higher = wilder.",
                                says=f"{shown(SampleConfig.temperature)}; an item model's "
                                f"items: {shown(ITEM_TEMPERATURE)}", flags=("--temp",))
    top_k: int | None = option("Sample among the k most likely tokens.", says="0 = all")
    top_p: float | None = option(
        "Sample among the most likely tokens whose probability sums to p.", says="1 = all")
    greedy: bool = option("Always take the most likely token (= --temp 0).", False)
    stop: list[str] | None = option(
        "End the sample before this text (give it again for more); the text itself is not "
        "printed. E.g. --stop $'\\n\\n' for one paragraph.")
    seed: int | None = option("Random seed; random when absent and reported on stderr.")
    regex: str | None = option(
        "Only text that matches this regular expression (in full, from after the prime): at "
        "each step only tokens on a path to a match can be chosen, and the text ends when it "
        "matches and the model chooses to end it. Needs outlines-core (charlstm[steer]).",
        metavar="PATTERN")
    json_schema: Path | None = option(
        "Only JSON that this JSON schema (a file) accepts, as --regex: types, required "
        "properties, enum, const, string pattern and lengths, array lengths (outlines-core's "
        "schemas; numbers' minimum and maximum are not enforced).", metavar="FILE")
    num_samples: int = option(
        "Independent samples, generated together in one batch from the same prime. With more "
        "than one, each is printed whole under a line [bold]--- sample I ---[/] (I from 1), "
        "samples separated by a blank line; only a single sample streams.", 1,
        flags=("--num-samples", "-N"))
    beam: int | None = option(
        "Beam search: the K most likely continuations, best first, found deterministically "
        "(no --temp, --top-k, --top-p, --seed or -N), each printed whole under a line "
        '[bold]--- beam I · log-prob X ---[/] (--json: {"beam": I, "logprob": X, "tokens": N, '
        '"text": ...}); X is the natural log of the probability of its tokens, a stop '
        f"text's included. K from 1 to {MAX_BEAM}.", metavar="K")
    json_out: bool = option(
        'One JSON object per sample per line: {"sample": I, "seed": SEED, "text": prime + '
        'generated text} (without the prime with --no-echo-prime).', False, flags=("--json",))
    logprobs: int | None = option(
        'With --json: each sample\'s "logprobs" too, as OpenAI\'s completions give them '
        '({"tokens", "token_logprobs", "top_logprobs", "text_offset"}): every generated token\'s '
        "log-probability under the distribution it was drawn from (greedy: temperature 1's) "
        "and the K most likely tokens with theirs (0: the token's own alone).", metavar="K")
    echo_prime: bool = option("Print the prime before the sample.", True,
                              flags=("--echo-prime/--no-echo-prime",))
    on_unknown: str = option("Prime characters the model never saw: error or skip.", "error",
                             choices=("error", "skip"))
    adapt: int = option(
        "Learn from the prime first, reading it this many times with dynamic evaluation's "
        "updates, so a page of text steers the style (0 = off). The checkpoint is not changed.",
        0, metavar="PASSES")
    items: int | None = option(
        "An item model (trained with --items): print this many items, one per line, each from "
        "the start.", says=f"{DEFAULT_ITEMS} for an item model", metavar="N")
    novel: bool = option(
        "With an item model: print only items that are not in the training list and not "
        "printed already; stderr says how many candidates it took.", False)
    engine: str = option(
        "What generates: numpy (from the run's model.safetensors, without loading torch: the "
        "first character in a fraction of a second), torch, or auto: numpy when "
        "model.safetensors is there and up to date.", "auto", choices=ENGINES)


_DYN = "DynamicConfig."


@dataclass
class EvaluateOptions:
    """The flags of `charlstm evaluate`; the --dynamic-* ones go into DynamicConfig."""

    streams: int = option(
        "Parallel streams, each carrying its state; 1 = one sequential pass. Each stream first "
        "reads the 256 tokens before its start, unscored, so the figure matches one pass closely "
        "(within 1e-4 nats on a character model) at a fraction of the time.", 64)
    encoding: str = option("Text encoding of the files.", "utf-8")
    errors: str = option("Undecodable bytes: strict (stop), replace or ignore.", "strict")
    json_out: bool = option("Print one JSON object.", False, flags=("--json",))
    per_line: bool = option(
        'One JSON object per input line: {"line": TEXT, "tokens": N, "nats": TOTAL, '
        '"bits_per_char": BPC}. One sequential pass carries the state through the whole text; '
        "a line's newline counts in that line; the text's first character is not predicted.",
        False)
    per_token: bool = option(
        'One JSON object per token: {"token": TEXT, "logprob": NATS}, its log-probability from '
        "one sequential pass from a zero state (the first token, which nothing predicts, has "
        "null); the tokens' texts add up to the text read.", False)
    precision: str = option(
        "fp32 (exact), or bf16: about twice as fast on a GPU or a CPU with bf16 instructions, "
        "the loss within 1e-4 of fp32's on a trained model (BENCHMARKS.md).", "fp32",
        choices=EVAL_PRECISIONS)
    reset_every: int = option(
        "Score the text in blocks of this many tokens, each from a zero state, so a prediction "
        "sees at most that much context (64: what nanoGPT's CPU recipe sees). 0 = carry the "
        "state through the text.", 0)
    dynamic: bool = option(
        "Dynamic evaluation (Krause et al. 2018): read the text as one stream, and after scoring "
        "each segment take a gradient step on it, so the model keeps learning the text as it "
        "reads it. Every token is scored before it is learnt from; the checkpoint file is not "
        "changed.", False)
    dynamic_rule: str | None = option(
        "--dynamic: rms (the paper's rule: steps scaled by the training split's gradient sizes, "
        "decaying towards the trained weights) or sgd.", into=_DYN + "rule")
    dynamic_lr: float | None = option(
        "--dynamic: step size.", into=_DYN + "lr",
        says=", ".join(f"{lr:g} ({rule})" for rule, lr in DYNAMIC_LR.items()))
    dynamic_decay: float | None = option(
        "--dynamic: pull towards the trained weights at each step (0 = none).",
        into=_DYN + "decay")
    dynamic_segment: int | None = option("--dynamic: tokens per gradient step.",
                                         into=_DYN + "segment")

    def tuned(self) -> dict[str, object]:
        """The --dynamic-* options given, under DynamicConfig's names."""
        return {f.metadata["into"].split(".")[1]: getattr(self, f.name) for f in fields(self)
                if (f.metadata.get("into") or "").startswith(_DYN)
                and getattr(self, f.name) is not None}  # fmt: skip


@dataclass
class VisualizeOptions:
    """The flags of `charlstm visualize` (but --kind, whose completion knows the gate names)."""

    layer: int | None = option("Layer to trace, counting from 0.", says="the last")
    unit: int | None = option("Unit to show.", says="the best 5 with --find, else 0")
    find: bool = option(
        "Rank every unit and gate by correlation with simple properties of the text (in quotes, "
        "in brackets, line position, word starts) and show the best 5.", False)
    html_out: Path | None = option(
        "Also write the shown units as one self-contained HTML page (hover for values).",
        flags=("--html",))
    max_chars: int = option(
        "Trace only the first N characters (one step each: slow on long text).", 2000)
    output_format: str | None = option(
        "What stdout gets: ansi (the text coloured by each unit), tsv (a header, then one row per "
        "character: position, the character escaped, each unit's value) or json (one object per "
        "character).", says="ansi on a terminal, tsv otherwise", flags=("--format",),
        choices=("ansi", "tsv", "json"))
    encoding: str = option("Text encoding of the files.", "utf-8")
    errors: str = option("Undecodable bytes: strict (stop), replace or ignore.", "strict")
