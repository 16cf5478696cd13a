"""What fine-tuning and resuming take and keep: the option names each one fixes or applies."""

from __future__ import annotations

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
