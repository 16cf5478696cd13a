"""What a user can ask of `charlstm train` (and `charlstm.train()`): every option a field of
TrainOptions with its help, its choices, its flag and the config field it goes `into`.

    TrainOptions ─ apply_preset (word/bpe, fine-tuning) ─ sizing (runs.py) ─▶ ModelConfig,
                                                                            TrainConfig
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from pathlib import Path

from charlstm.config import (
    CELLS,
    DEFAULT_BUDGET,
    DEFAULT_MIN_FREQUENCY,
    DEFAULT_VOCAB,
    ITEMS,
    OPTIMIZERS,
    PRECISIONS,
    SOFTMAXES,
    TOKENIZER_PRESETS,
    TOKENIZERS,
    UNTIED_EMBED,
    ModelConfig,
    TrainConfig,
    _at_least,
    _check,
    option,
    parse_duration,
)
from charlstm.options import common
from charlstm.options.presets import FINE_TUNE_PRESET, FIXED_BY_BASE, FIXED_BY_RUN
from charlstm.options.render import SIZED_DROPOUT, SIZED_LR, by_kind, duration, shown

_M, _T = "ModelConfig.", "TrainConfig."


@dataclass
class TrainOptions:
    """What a user asks of `charlstm train` or `charlstm.train()`. Every option left at None is
    chosen by charlstm: a word/bpe preset, then the budget sizing, then the dataclass defaults.
    Ranges are checked here, before the corpus is read, by the configs they end up in."""

    corpus: list[str] = option(
        "Text to learn from: file(s), a folder (its text files, recursively), - for stdin, or a "
        "built-in corpus: [bold]shakespeare[/], [bold]python[/].", factory=list, argument=True,
        metavar="TEXT")
    # limits: budget in seconds, or a duration such as "2m"
    budget: float | str | None = option(
        "Wall-clock limit, e.g. 135s, 10m, 2h. The learning rate decays to its floor as the "
        "budget runs out.", into=_T + "budget",
        says=f"{duration(DEFAULT_BUDGET)} when no --steps or --epochs is given")
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
        "split).", says=by_kind("vocab_size", DEFAULT_VOCAB))
    min_frequency: int | None = option(
        "word/bpe: leave out words (merges) seen fewer times.",
        says=by_kind("min_frequency", DEFAULT_MIN_FREQUENCY))
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
                                   into=_M + "dropout", says=SIZED_DROPOUT)
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
    lr: float | None = option("Peak learning rate.", into=_T + "lr", says=SIZED_LR)
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
    checkpoints: Path = common.checkpoints()
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
    encoding: str = common.encoding()
    errors: str = common.errors()
    # where it runs
    threads: int = option("CPU threads; 0 = all cores (shared among torchrun's processes).", 0)
    device: str = common.device()
    precision: str = option(
        "auto (bf16 on a CPU with bf16 instructions, where it trains 1.25-1.45x faster "
        "to the same loss; fp32 elsewhere), fp32, or mixed precision: bf16, or fp16 on a GPU "
        "(with loss scaling). fp32 on CUDA uses TF32 tensor cores.", "auto", choices=PRECISIONS)

    def __post_init__(self) -> None:
        if isinstance(self.corpus, str):
            self.corpus = [self.corpus]
        if isinstance(self.keep_eval, str):
            self.keep_eval = [self.keep_eval]
        for f in fields(self):  # the Python API may give a folder or file as a str
            if "Path" in str(f.type) and isinstance(getattr(self, f.name), str):
                setattr(self, f.name, Path(getattr(self, f.name)))
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


@dataclass
class TrainOutput:
    """What `charlstm train` shows: the command's own flags, beside TrainOptions (the API's
    train() prints nothing and returns the summary, so it takes neither)."""

    quiet: bool = common.quiet()
    json_out: bool = option("Print the final summary as JSON on stdout.", False, flags=("--json",))


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
