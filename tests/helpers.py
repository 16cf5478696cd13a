"""Builders shared by the tests: a tiny run on a tiny text."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from subprocess import Popen
from typing import Any

import torch

from charlstm.config import TrainConfig
from charlstm.data.split import split_ids
from charlstm.data.tokenizer import CharTokenizer
from charlstm.data.tokens import CorpusInfo
from charlstm.model.language_model import LanguageModel, ModelConfig
from charlstm.training.run import Run


def tiny_run(
    text: str,
    run_dir: Path,
    *,
    hidden: int = 64,
    seed: int = 0,
    cell: str = "lstm",
    dropout: float = 0.0,
    attention: int = 0,
    **train,
) -> Run:
    tok = CharTokenizer.train(text)
    ids = tok.encode(text)
    cfg = TrainConfig(**{"batch_size": 4, "window": 16, "lr": 1e-2, "warmup_steps": 5,
                         "seed": seed, **train})  # fmt: skip
    train_ids, val_ids = split_ids(ids, cfg.val_fraction)
    torch.manual_seed(seed)
    model_cfg = ModelConfig(vocab_size=tok.vocab_size, hidden_size=hidden, num_layers=2, cell=cell,
                            dropout=dropout, attention=attention)  # fmt: skip
    return Run(
        model=LanguageModel(model_cfg), model_cfg=model_cfg, train_cfg=cfg,
        tokenizer=tok.to_dict(), train_ids=train_ids, val_ids=val_ids,
        corpus=CorpusInfo(fingerprint="test", chars=len(text)), run_dir=run_dir,
    )  # fmt: skip


def start_training(cwd: Path, name: str, *args: str, **popen: Any) -> tuple[Popen, Path]:
    """`charlstm train big.txt --steps 100000 --name NAME ARGS…` running in a subprocess (for
    interrupting it); returns the process and its run folder. Output is discarded unless piped."""
    popen.setdefault("stdout", subprocess.DEVNULL)
    popen.setdefault("stderr", subprocess.DEVNULL)
    cmd = [
        sys.executable,
        "-m",
        "charlstm",
        "train",
        "big.txt",
        "--steps",
        "100000",
        "--name",
        name,
    ]
    proc = subprocess.Popen([*cmd, *args], cwd=cwd, **popen)
    return proc, cwd / "checkpoints" / name


def wait_for(path: Path, proc: Popen, timeout: float = 60.0) -> None:
    """Wait until `path` exists (or the process ends, or time runs out)."""
    deadline = time.time() + timeout
    while time.time() < deadline and not path.exists() and proc.poll() is None:
        time.sleep(0.01)


def wait_for_cpu(proc: Popen, seconds: float, timeout: float = 120.0) -> None:
    """Wait until `proc` has run `seconds` of CPU time more (Linux /proc): unlike a sleep, this
    gives a process the same work done on a busy machine as on a quiet one."""

    def used() -> float:
        fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime

    start, deadline = used(), time.monotonic() + timeout
    while used() - start < seconds:
        assert proc.poll() is None, "the process ended"
        assert time.monotonic() < deadline, f"{seconds} s of CPU time not reached in {timeout} s"
        time.sleep(0.05)
