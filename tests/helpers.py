"""Builders shared by the tests: a tiny run on a tiny text."""

from __future__ import annotations

from pathlib import Path

import torch

from charlstm.data import split_ids
from charlstm.model import LanguageModel, ModelConfig
from charlstm.tokenizer import CharTokenizer
from charlstm.train import Run, TrainConfig


def tiny_run(text: str, run_dir: Path, *, hidden: int = 64, seed: int = 0, **train) -> Run:
    tok = CharTokenizer.train(text)
    ids = tok.encode(text)
    cfg = TrainConfig(**{"batch_size": 4, "window": 16, "lr": 1e-2, "warmup_steps": 5,
                         "seed": seed, **train})  # fmt: skip
    train_ids, val_ids = split_ids(ids, cfg.val_fraction)
    torch.manual_seed(seed)
    model_cfg = ModelConfig(vocab_size=tok.vocab_size, hidden_size=hidden, num_layers=2)
    return Run(
        model=LanguageModel(model_cfg), model_cfg=model_cfg, train_cfg=cfg,
        tokenizer=tok.to_dict(), train_ids=train_ids, val_ids=val_ids,
        corpus={"fingerprint": "test", "chars": len(text)}, run_dir=run_dir,
    )  # fmt: skip
