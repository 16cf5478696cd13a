"""The settings of a run: one dataclass per concern, saved into checkpoints with asdict() and
rebuilt with Cls(**d). No torch import, so the CLI takes its defaults from here at start-up.
"""

from __future__ import annotations

from dataclasses import dataclass

CELLS = ("lstm", "gru", "rnn", "peephole", "coupled")
TOKENIZERS = ("char", "word", "bpe")
# Settings word and subword models need that a char model does not (a wide softmax costs several
# LSTM layers, and a few hundred thousand tokens overfit in a few epochs); each applies unless
# its flag is given. The best of a sweep at 130 s on wikitext-2; bpe: 2.08 bits/char with them,
# 2.71 with the char defaults (BENCHMARKS.md).
# word: PyTorch word_language_model's recipe (plain SGD at lr 20, clip 0.25, 20 × 35, 2×200,
# dropout 0.2), which beat every AdamW setting tried (test perplexity 362 against 466 at best).
# Both keep the weight decay and learning-rate floor they were measured with (the char
# defaults of 0.1 and 0.01 came later, from the char sweep).
TOKENIZER_PRESETS: dict[str, dict[str, object]] = {
    "word": {"optimizer": "sgd", "lr": 20.0, "clip": 0.25, "batch_size": 20, "window": 35,
             "warmup": 0, "hidden": 200, "embed": 200, "dropout": 0.2, "tie_weights": False,
             "weight_decay": 0.0, "min_lr_ratio": 0.1},
    "bpe": {"batch_size": 8, "lr": 3e-3, "dropout": 0.3, "tie_weights": True,
            "weight_decay": 0.0, "min_lr_ratio": 0.1},
}  # fmt: skip


@dataclass
class ModelConfig:
    vocab_size: int  # V: tokens in the tokenizer's vocabulary
    cell: str = "lstm"  # one of CELLS
    hidden_size: int = 256  # H: units per recurrent layer
    num_layers: int = 2  # stacked recurrent layers
    embed_size: int = 0  # E: 0 = H when tied, else min(H, 128) (small E is cheaper for chars)
    dropout: float = 0.0  # between layers and before the head (training only)
    # DropConnect on the hidden-to-hidden weights, one mask per window (AWD-LSTM's weight-drop;
    # Merity et al. 2017): regularises the recurrence without breaking the fused kernels.
    weight_drop: float = 0.0
    tie_weights: bool = False  # share the embedding matrix with the output head (needs E = H)
    # Adaptive softmax (Grave et al. 2017): the most frequent ids below the first cutoff get the
    # full head, rarer ones smaller clusters. None: one full softmax over the vocabulary.
    softmax_cutoffs: list[int] | None = None

    def __post_init__(self) -> None:
        if self.cell not in CELLS:
            raise ValueError(f"unknown cell {self.cell!r}; choose one of {', '.join(CELLS)}")
        if self.embed_size == 0:
            self.embed_size = self.hidden_size if self.tie_weights else min(self.hidden_size, 128)
        if self.tie_weights and self.embed_size != self.hidden_size:
            raise ValueError("--tie-weights needs the embedding size equal to the hidden size")
        if self.hidden_size < 1 or self.num_layers < 1 or self.vocab_size < 1:
            raise ValueError("hidden size, layers and vocabulary size must be positive")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if not 0.0 <= self.weight_drop < 1.0:
            raise ValueError(f"--weight-drop must be in [0, 1), got {self.weight_drop}")
        if self.softmax_cutoffs is not None:
            cuts = self.softmax_cutoffs
            if not cuts or cuts != sorted(set(cuts)) or cuts[0] < 1 or cuts[-1] >= self.vocab_size:
                raise ValueError("softmax cutoffs must rise strictly within the vocabulary")
            if self.tie_weights:
                raise ValueError("--tie-weights needs the full softmax, not an adaptive one")


def adaptive_cutoffs(vocab_size: int) -> list[int] | None:
    """Cutoffs for an adaptive softmax over a large vocabulary whose ids are numbered by falling
    frequency (as the word tokenizer numbers them); None below 8,192 tokens."""
    if vocab_size <= 8192:
        return None
    return [c for c in (2_000, 10_000, 50_000) if c < vocab_size - 1000] or None


@dataclass
class TrainConfig:
    batch_size: int = 32  # B: parallel streams per step
    window: int = 64  # T: time steps per truncated-BPTT window
    lr: float = 8e-3  # peak learning rate (AdamW); see the sweep in BENCHMARKS.md
    min_lr_ratio: float = 0.01  # cosine decay ends at lr * this (0.01 beat 0.1 by 0.010 nats)
    warmup_steps: int = 50  # linear warm-up from ~0 to lr
    # AdamW decoupled decay, on weight matrices only: 0.1 took 5,000 steps of 2×256 on
    # tiny-shakespeare from 1.5105 to 1.4759 (BENCHMARKS.md); 0.3 was worse than none.
    weight_decay: float = 0.1
    optimizer: str = "adamw"  # or "sgd": plain SGD (no momentum)
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


@dataclass
class SampleConfig:
    length: int = 500  # new tokens per sample
    temperature: float = 0.8  # 0 = greedy (argmax); <1 sharper, >1 flatter
    top_k: int = 0  # keep only the k most likely tokens (0 = all)
    top_p: float = 1.0  # keep the smallest set of tokens whose probability reaches p
