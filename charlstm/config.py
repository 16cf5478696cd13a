"""The settings of a run: one dataclass per concern, each checking its own values once (in
__post_init__), saved into checkpoints with asdict() and rebuilt with Cls(**d). No torch import,
so the CLI takes its defaults and help from here at start-up.

    TrainOptions (options/)    what a user asks of `charlstm train`; None: charlstm chooses
        │  apply_preset (word/bpe recipes), then the budget sizing (runs.py), then the defaults
        ▼
    ModelConfig, TrainConfig   what the run uses; saved in every checkpoint
    SampleConfig               how a sample is drawn
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from charlstm.cells import CELLS as _CELLS
from charlstm.errors import OptionError

CELLS = tuple(_CELLS)  # --cell's choices: the registered cells (cells/__init__.py), one list
TOKENIZERS = ("char", "word", "bpe")
OPTIMIZERS = ("adamw", "sgd")
SOFTMAXES = ("full", "adaptive")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")  # training's; auto: device.resolve_precision
EVAL_PRECISIONS = ("fp32", "bf16")  # scoring text (`charlstm evaluate`)
DEVICES = ("auto", "cpu", "cuda", "mps")  # and cuda:N, a GPU by its index
ENGINES = ("auto", "numpy", "torch")  # generating: auto is numpy where the model file is fresh
DECODE_ERRORS = ("strict", "replace", "ignore")
ITEMS = ("lines",)  # --items: how a corpus is cut into items (data/items.py has the separators)
# An item model's items are drawn from the model's own distribution (as makemore draws names):
# a 60 s model of 30,000 surnames gave 80% new ones at 0.8, 89% at 1.0 (benchmarks/items.py).
ITEM_TEMPERATURE = 1.0
MAX_SAMPLES = 10_000  # sample -N, Model.samples(n): one batch
DEFAULT_ITEMS, MAX_ITEMS = 10, 100_000  # `sample` on an item model without --items; at most
CORPORA = Path("corpora")  # built-in corpora and the token cache (corpora/cache), beside the runs
CHECKPOINTS = Path("checkpoints")  # the run folders, unless --checkpoints says otherwise
DEFAULT_BUDGET = 600.0  # seconds, when no --budget, --steps or --epochs is given
MAX_MEMORY = 65_536  # --attention's longest memory: a damaged file must not ask for 10^9
MAX_LAYERS = 64  # deeper recurrent stacks do not train; a damaged file must not ask for 10^6


def check_count(n: object, most: int, flag: str, name: str = "n") -> None:
    """A count the user gives: 1 to `most`, checked in one place for the CLI (before the model
    loads; `name`: the option's field) and the API (Model.samples(n), Model.items(n)). `flag`
    is how the CLI spells the option (sample -N's --num-samples, sample --items)."""
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= most:
        given = OptionError.literal(repr(n) if isinstance(n, str) else n)
        raise OptionError(f"{{{name}}} must be between 1 and {most:,}, got {given}",
                          flags={name: flag})  # fmt: skip

# What word and subword models need that a char model does not: a wide softmax costs several
# LSTM layers, and a few hundred thousand tokens overfit in a few epochs. Each applies unless
# its option is given. Measured on wikitext-2 at 130 s (BENCHMARKS.md): word is PyTorch's
# word_language_model recipe (plain SGD at lr 20, clip 0.25, 20 × 35, 2×200, dropout 0.2), which
# beat every AdamW setting tried (test perplexity 362 against 466 at best); bpe reached 2.08
# bits/char with its settings and 2.71 with the char defaults. Both keep the weight decay and
# learning-rate floor they were measured with.
TOKENIZER_PRESETS: dict[str, dict[str, object]] = {
    "word": {"optimizer": "sgd", "lr": 20.0, "clip": 0.25, "batch_size": 20, "window": 35,
             "warmup": 0, "hidden": 200, "embed": 200, "dropout": 0.2, "tie_weights": False,
             "weight_decay": 0.0, "min_lr_ratio": 0.1},
    "bpe": {"batch_size": 8, "lr": 3e-3, "dropout": 0.3, "tie_weights": True,
            "weight_decay": 0.0, "min_lr_ratio": 0.1},
}  # fmt: skip


# Vocabulary sizes and minimum counts used when the user gives none. Word: large enough for
# wikitext-2 (33k words) and PTB (10k) to fit whole. BPE: 4k pieces keeps the softmax of a small
# LSTM cheap while still shortening text about 3x compared with characters.
DEFAULT_VOCAB = {"word": 50_000, "bpe": 4_096}
DEFAULT_MIN_FREQUENCY = {"word": 1, "bpe": 2}


def option(help: str, default: Any = None, *, into: str | None = None, says: str | None = None,
           flags: tuple[str, ...] = (), choices: tuple[str, ...] | None = None,
           factory: Any = None, argument: bool = False, cli: bool = True,
           metavar: str | None = None, envvar: str | None = None,
           completes: tuple[str, ...] = ()) -> Any:  # fmt: skip
    """A field of an options dataclass with what the CLI needs to offer it:
    help     what it does (no default: that is rendered, see help_text)
    into     "ModelConfig.hidden_size": the config field it sets (and whose default it shows)
    says     how the default reads, "{}" standing for that field's default; "" for none
    flags    its flags when not just --name (short ones too); choices: the values it takes
    cli      False: not offered on the command line; metavar, envvar: as Typer's
    completes  the values the shell completes (where `choices` would be too strict)"""
    meta = {"help": help, "into": into, "says": says, "flags": flags, "choices": choices,
            "argument": argument, "cli": cli, "metavar": metavar, "envvar": envvar,
            "completes": completes}  # fmt: skip
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)



class ConfigError(OptionError, ValueError):
    """A setting out of range or a contradiction between settings (exit status 2). Its message
    is written with flags (--top-p); str(e) names them as keywords (top_p) for Python."""

    def __init__(self, message: str) -> None:
        escaped = OptionError.literal(message)
        super().__init__(re.sub(r"(?<![\w-])--([a-z][a-z-]*)",
                                lambda m: "{" + m.group(1).replace("-", "_") + "}", escaped))


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _at_least(flag: str, value: int, low: int) -> None:
    _check(value >= low, f"{flag} must be at least {low}, got {value}")


UNTIED_EMBED = 128  # E when not tied: min(H, this); a small E is cheaper for characters


@dataclass
class ModelConfig:
    vocab_size: int  # V: tokens in the tokenizer's vocabulary
    cell: str = "lstm"  # one of CELLS
    hidden_size: int = 256  # H: units per recurrent layer
    num_layers: int = 2  # stacked recurrent layers
    embed_size: int = 0  # E: 0 = H when tied, else min(H, UNTIED_EMBED)
    dropout: float = 0.0  # between layers and before the head (training only)
    # DropConnect on the hidden-to-hidden weights, one mask per window (AWD-LSTM's weight-drop;
    # Merity et al. 2017): regularises the recurrence without breaking the fused kernels.
    weight_drop: float = 0.0
    tie_weights: bool = False  # share the embedding matrix with the output head (needs E = H)
    # --cell mogrifier: rounds of mutual gating of x and h before each LSTM step (Melis et al.
    # 2020 recommend 5 for LSTMs; 0 is the plain LSTM). Other cells ignore it.
    mogrifier_rounds: int = 5
    # Adaptive softmax (Grave et al. 2017): the most frequent ids below the first cutoff get the
    # full head, rarer ones smaller clusters. None: one full softmax over the vocabulary.
    softmax_cutoffs: list[int] | None = None
    # M: one attention head over the top layer's last M outputs, then a Boom layer (SHA-RNN,
    # Merity 2019; model/attention.py); 0 = none. The memory is carried like the state.
    attention: int = 0

    def __post_init__(self) -> None:
        _check(self.cell in CELLS, f"unknown cell {self.cell!r}; choose one of {', '.join(CELLS)}")
        _at_least("--hidden", self.hidden_size, 1)
        _at_least("--layers", self.num_layers, 1)
        _check(self.num_layers <= MAX_LAYERS, f"--layers must be at most {MAX_LAYERS}")
        _at_least("the vocabulary size", self.vocab_size, 1)
        _at_least("--embed", self.embed_size, 0)
        if self.embed_size == 0:
            small = min(self.hidden_size, UNTIED_EMBED)
            self.embed_size = self.hidden_size if self.tie_weights else small
        _check(
            not self.tie_weights or self.embed_size == self.hidden_size,
            "--tie-weights needs the embedding size equal to the hidden size",
        )
        _check(0.0 <= self.dropout < 1.0, f"--dropout must be in [0, 1), got {self.dropout}")
        _check(
            0 <= self.mogrifier_rounds <= 16,
            f"--mogrifier-rounds must be between 0 and 16, got {self.mogrifier_rounds}",
        )
        _check(
            0.0 <= self.weight_drop < 1.0,
            f"--weight-drop must be in [0, 1), got {self.weight_drop}",
        )
        _check(0 <= self.attention <= MAX_MEMORY,
               f"--attention must be between 0 and {MAX_MEMORY}, got {self.attention}")
        if self.softmax_cutoffs is not None:
            cuts = self.softmax_cutoffs
            _check(
                bool(cuts) and cuts == sorted(set(cuts)) and cuts[0] >= 1
                and cuts[-1] < self.vocab_size,
                "softmax cutoffs must rise strictly within the vocabulary",
            )  # fmt: skip
            _check(
                not self.tie_weights, "--tie-weights needs the full softmax, not an adaptive one"
            )


def adaptive_cutoffs(vocab_size: int) -> list[int]:
    """Cutoffs for an adaptive softmax over a vocabulary whose ids are numbered by falling
    frequency (as the word tokenizer numbers them)."""
    cuts = [c for c in (2_000, 10_000, 50_000) if c < vocab_size - 1000]
    return cuts or [max(1, vocab_size // 4)]


@dataclass
class TrainConfig:
    batch_size: int = 32  # B: parallel streams per step
    window: int = 64  # T: time steps per truncated-BPTT window
    lr: float = 8e-3  # peak learning rate; the budget sizing sets its size's own (sizing.py)
    min_lr_ratio: float = 0.01  # cosine decay ends at lr * this (0.01 beat 0.1 by 0.010 nats)
    warmup_steps: int = 50  # linear warm-up from ~0 to lr
    # AdamW decoupled decay, on weight matrices only: 0.1 took 5,000 steps of 2×256 on
    # tiny-shakespeare from 1.5105 to 1.4759 (BENCHMARKS.md); 0.3 was worse than none.
    weight_decay: float = 0.1
    optimizer: str = "adamw"  # one of OPTIMIZERS; sgd is plain SGD (no momentum)
    clip: float = 1.0  # max global gradient norm
    budget: float | None = None  # seconds of wall clock (training + periodic validation)
    steps: int | None = None  # optimizer steps
    epochs: float | None = None  # passes over the training split
    val_fraction: float = 0.1  # the validation split is this tail of the corpus
    eval_every: int = 0  # steps between validations; 0 = up to ten a run, in ≤2% of its time
    # Validate on at most this many tokens from the start of the split (0 = all): the 10% tail
    # of a 2 GB corpus would take hours to score on a CPU, every time.
    val_tokens: int = 1_000_000
    patience: int = 0  # stop after this many validations without a new best (0 = never)
    eval_streams: int = 64  # parallel streams for validation (each carries its state)
    # Chance per window that a stream forgets its state: a model that only ever continues a
    # carried state is lost for its first characters from a zero state (a prime, a new stream).
    state_reset: float = 1 / 32
    seed: int = 1337
    # An item model (--items): the corpus is a list (one item a line), each item trained from
    # a zero state to its end; None: one running text. Sampling reads it (data/items.py).
    items: str | None = None

    def __post_init__(self) -> None:
        _at_least("--batch-size", self.batch_size, 1)
        _at_least("--window", self.window, 1)
        _check(
            math.isfinite(self.lr) and self.lr > 0, f"--lr must be a positive number, got {self.lr}"
        )
        _check(
            0 <= self.min_lr_ratio <= 1,
            f"--min-lr-ratio must be in [0, 1], got {self.min_lr_ratio}",
        )
        _at_least("--warmup", self.warmup_steps, 0)
        _check(
            math.isfinite(self.weight_decay) and self.weight_decay >= 0,
            f"--weight-decay must be a number, 0 or more, got {self.weight_decay}",
        )
        _check(
            self.optimizer in OPTIMIZERS,
            f"--optimizer must be {' or '.join(OPTIMIZERS)}; got {self.optimizer!r}",
        )
        _check(self.clip > 0, f"--clip must be positive, got {self.clip}")
        _check(self.budget is None or self.budget > 0, "--budget must be positive")
        _check(self.steps is None or self.steps >= 1, "--steps must be at least 1")
        _check(self.epochs is None or self.epochs > 0, "--epochs must be positive")
        _check(
            self.items is None or self.items in ITEMS,
            f"--items must be {', '.join(ITEMS)}; got {self.items!r}",
        )
        _check(
            0.0 <= self.val_fraction < 1.0,
            f"--val-fraction must be in [0, 1), got {self.val_fraction}",
        )
        for flag, value in (
            ("--eval-every", self.eval_every),
            ("--val-tokens", self.val_tokens),
            ("--patience", self.patience),
        ):
            _check(value >= 0, f"{flag} must be 0 (off) or more, got {value}")
        _at_least("--eval-streams", self.eval_streams, 1)
        _check(
            0 <= self.state_reset <= 1,
            f"--state-reset must be a probability in [0, 1], got {self.state_reset}",
        )


@dataclass
class SampleConfig:
    length: int = 500  # new tokens per sample
    temperature: float = 0.8  # 0 = greedy (argmax); <1 sharper, >1 flatter
    top_k: int = 0  # keep only the k most likely tokens (0 = all)
    top_p: float = 1.0  # keep the smallest set of tokens whose probability reaches p

    def __post_init__(self) -> None:
        _check(
            0 <= self.length <= 100_000_000,
            f"--length must be between 0 and 100,000,000, got {self.length}",
        )
        t = self.temperature
        _check(not math.isnan(t) and t >= 0, f"--temp must be 0 or more, got {t}")
        _check(self.top_k >= 0, f"--top-k must be 0 or more, got {self.top_k}")
        _check(0 < self.top_p <= 1, f"--top-p must be in (0, 1], got {self.top_p}")

    @classmethod
    def build(
        cls,
        length: int | None = None,
        temperature: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        *,
        greedy: bool = False,
    ) -> SampleConfig:
        """From options that may be absent (None); `greedy` means temperature 0, and a given
        option that contradicts it (--temp 1.5, --top-k 5) is a usage error."""
        if greedy:
            clash = [flag for flag, value, neutral in (("--temp", temperature, 0),
                     ("--top-k", top_k, 0), ("--top-p", top_p, 1))
                     if value is not None and value != neutral]  # fmt: skip
            _check(
                not clash,
                f"--greedy always takes the most likely token; drop {', '.join(clash)}",
            )
            temperature = 0.0
        given = {"length": length, "temperature": temperature, "top_k": top_k, "top_p": top_p}
        return cls(**{k: v for k, v in given.items() if v is not None})


DYNAMIC_RULES = ("rms", "sgd")
# Each rule's step size when none is given: its units differ (the rms rule divides the gradient
# by its typical size). From the sweep in BENCHMARKS.md.
DYNAMIC_LR = {"rms": 2e-4, "sgd": 0.1}
# Learning from a prime before sampling (`sample --adapt`) wants the prime's style to win, not a
# balance: shorter segments (more steps a pass) and no pull back towards the trained weights,
# which would cap how far repeated passes can move them.
ADAPT = {"segment": 20, "decay": 0.0}
MAX_ADAPT_PASSES = 1000  # `sample --adapt`: more passes over a prime only memorise it
MAX_BEAM = 100  # `sample --beam`: hypotheses kept (each step scores K × vocabulary tokens)


@dataclass
class DynamicConfig:
    """Dynamic evaluation (Krause et al., 2018): the model keeps learning from a text as it reads
    it. The text is cut into segments of `segment` tokens, read as one stream with the state
    carried; each segment is scored, then one gradient step on its mean loss updates the
    weights before the next is read (so every token is scored before it is learnt from).

    rule "rms" is the paper's RMS rule with a global prior, per weight θ:
        θ ← θ − lr · g / (√MS + epsilon) + decay · (√MS / mean √MS) · (θ_trained − θ)
    where MS is the mean squared gradient of segments of the training split (or, with no
    training split at hand, of the text's own segments already read), and the decay pulls each
    weight back towards its trained value, faster where its gradients are larger (capped at
    1/decay, as in the paper's code). rule "sgd": θ ← θ − lr · g + decay · (θ_trained − θ).
    The defaults come from a sweep on tiny-shakespeare (BENCHMARKS.md)."""

    rule: str = "rms"  # one of DYNAMIC_RULES
    segment: int = 50  # tokens per gradient step
    lr: float | None = None  # the step size; None: the rule's own (DYNAMIC_LR)
    decay: float = 1e-2  # pull towards the trained weights per step (0 = none)
    epsilon: float = 2e-5  # keeps the RMS rule's division finite
    stat_tokens: int = 100_000  # training tokens the gradient statistics are taken from

    def __post_init__(self) -> None:
        rules = " or ".join(DYNAMIC_RULES)
        _check(self.rule in DYNAMIC_RULES, f"--dynamic-rule must be {rules}, got {self.rule!r}")
        _at_least("--dynamic-segment", self.segment, 1)
        if self.lr is None:
            self.lr = DYNAMIC_LR[self.rule]
        lr = self.lr
        _check(math.isfinite(lr) and lr >= 0, f"--dynamic-lr must be 0 or more, got {lr}")
        _check(0 <= self.decay < 1, f"--dynamic-decay must be in [0, 1), got {self.decay}")
        _check(self.epsilon > 0, f"the epsilon must be positive, got {self.epsilon}")
        _at_least("the statistics' tokens", self.stat_tokens, 1)

    @classmethod
    def build(cls, **given: object) -> DynamicConfig:
        """From options that may be absent (None)."""
        return cls(**{k: v for k, v in given.items() if v is not None})


def parse_duration(text: str | float) -> float:
    """'135s', '10m', '2h', '1h30m' or a number of seconds → seconds."""
    if isinstance(text, int | float):
        seconds = float(text)
    else:
        spec = text.strip().lower().replace(" ", "")
        number = r"(\d+(?:\.\d+)?)"
        match = re.fullmatch(number, spec) or re.fullmatch(
            f"(?:{number}h)?(?:{number}m)?(?:{number}s)?", spec
        )
        _check(bool(spec) and match is not None,
               f"--budget: cannot read {text!r}; use e.g. 135s, 10m, 2h or 1h30m")  # fmt: skip
        assert match is not None
        if match.re.groups == 1:
            seconds = float(match[1])
        else:
            units = (3600, 60, 1)
            seconds = sum(float(v or 0) * k for v, k in zip(match.groups(), units, strict=True))
    _check(math.isfinite(seconds) and seconds > 0, "--budget must be positive")
    return seconds


@dataclass
class ServeConfig:
    """How `charlstm serve` listens and what it allows (serve.py)."""

    host: str = option("Address to listen on; 0.0.0.0 opens it to the network.", "127.0.0.1")
    port: int = option("Port; 0: any free one.", 8000)  # the one taken is reported
    api_key: str | None = option("Require 'Authorization: Bearer KEY' on every request.",
                                 envvar="CHARLSTM_API_KEY")
    max_batch: int = option("Samples stepped together per model (also the largest n).", 32)
    queue: int = option("Requests that may wait for room; beyond: 503 + Retry-After.", 256)
    max_tokens: int = option("The most tokens a request may ask for (max_tokens).", 4096)
    grace: float = option("Seconds running requests get to finish after Ctrl-C or SIGTERM.", 5.0)
    allow_hosts: tuple[str, ...] = option(
        "Also answer requests whose Host header is this name (repeatable; '*': any). Others "
        "than the loopback names and --host are refused, so that no web page can reach the "
        "server through a name of its own (DNS rebinding).", (), flags=("--allow-host",),
        metavar="HOST")
    allow_origins: tuple[str, ...] = option(
        "Let web pages from this origin call the server from a browser, e.g. "
        "http://localhost:3000 (repeatable; '*': any; 'null': local files). Requests from "
        "other pages are refused.", (), flags=("--allow-origin",), metavar="ORIGIN")
    chat_template: tuple[str, ...] = option(
        "How /v1/chat/completions writes messages for a model: play (each turn 'NAME:', its "
        "text on the next lines, then a blank line, as in a play's script) or lines (each turn "
        "one line 'NAME: text'), with the user's and the assistant's names after a colon, for "
        "every model or (MODEL=...) one (repeatable), e.g. play:ROMEO,JULIET. A message's "
        "'name' overrides its role's.", (), says="play:USER,ASSISTANT",
        metavar="[MODEL=]STYLE[:USER,ASSISTANT]")
    head_timeout: float = option("Seconds a request line and its headers may take to arrive.",
                                 10.0, cli=False)
    body_timeout: float = option("Seconds a request body may take to arrive.", 30.0, cli=False)

    def __post_init__(self) -> None:
        _check(bool(self.host), "--host must not be empty")
        self.allow_hosts = tuple(h.strip().lower() for h in self.allow_hosts)
        self.allow_origins = tuple(o.strip().lower().rstrip("/") for o in self.allow_origins)
        for h in self.allow_hosts:
            _check(bool(h) and not any(c in h for c in "/ @"),
                   f"--allow-host takes a host name such as example.local, got {h!r}")  # fmt: skip
        for o in self.allow_origins:
            _check(o in ("*", "null") or re.fullmatch(r"https?://[^/\s@]+", o) is not None,
                   f"--allow-origin takes a page's origin such as http://localhost:3000 "
                   f"(scheme://host[:port]), got {o!r}")  # fmt: skip
        for name in ("head_timeout", "body_timeout"):
            value = getattr(self, name)
            _check(math.isfinite(value) and value > 0,
                   f"{name} must be a positive number of seconds, got {value}")  # fmt: skip
        _check(0 <= self.port <= 65535, f"--port must be between 0 and 65535, got {self.port}")
        _check(self.api_key is None or self.api_key.strip() != "", "--api-key must not be empty")
        _check(1 <= self.max_batch <= 4096,
               f"--max-batch must be between 1 and 4096, got {self.max_batch}")  # fmt: skip
        _check(self.queue >= 0, f"--queue must be 0 or more, got {self.queue}")
        tokens = self.max_tokens
        _check(1 <= tokens <= 100_000_000,
               f"--max-tokens must be between 1 and 100,000,000, got {tokens}")  # fmt: skip
        for spec in self.chat_template:  # the model names are checked once the models load
            _check(re.fullmatch(r"([^=:]+=)?(play|lines)(:[^,]+,[^,]+)?", spec.strip()) is not None,
                   "--chat-template takes [MODEL=]play|lines[:USER,ASSISTANT], e.g. "
                   f"play:ROMEO,JULIET; got {spec!r}")  # fmt: skip
        _check(math.isfinite(self.grace) and self.grace >= 0,
               f"--grace must be 0 or more seconds, got {self.grace}")  # fmt: skip
