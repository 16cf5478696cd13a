"""The options several commands share, each declared once: which model, where the runs are, the
threads and device it runs on, the text to read and how, and a quiet stderr. Each is a function
that returns the field (a dataclass field can belong to one class only), called by every
command's dataclass that offers the option, in the place its `--help` lists it."""

from __future__ import annotations

from dataclasses import MISSING
from typing import Any

from charlstm.config import CHECKPOINTS, DECODE_ERRORS, DEVICES, option

NEWEST = "the newest best.pt under --checkpoints"  # what a command loads without --model


def model() -> Any:
    return option("Checkpoint file or run folder.", says=NEWEST, flags=("--model", "-m"))


def checkpoints() -> Any:
    return option("Folder that holds the run folders (every command looks there; "
                  "CHARLSTM_CHECKPOINTS sets it for all).", CHECKPOINTS,
                  envvar="CHARLSTM_CHECKPOINTS")  # fmt: skip


def threads() -> Any:
    """The threads of a command that loads a model to run it (train, compress and decompress
    declare their own: their 0 means all cores)."""
    return option("CPU threads; 0 = chosen for the work: one for a single stream (a sample, "
                  "--per-line), all cores otherwise.", 0)  # fmt: skip


def device() -> Any:
    # completes, not choices: cuda:N, a GPU by its index, is a device too
    return option("auto (a CUDA GPU, else Apple's MPS, else the CPU), cpu, cuda, cuda:N or mps.",
                  "auto", completes=DEVICES)  # fmt: skip


def texts(what: str = "Text") -> Any:
    """The TEXT... to read, required (no default): a dataclass's first field."""
    return option(f"{what}: file(s), a folder, - for stdin, or a built-in corpus.", MISSING,
                  argument=True, metavar="TEXT...")  # fmt: skip


def encoding() -> Any:
    return option("Text encoding of the files.", "utf-8")


def errors() -> Any:
    return option("Undecodable bytes: strict (stop), replace or ignore.", "strict",
                  choices=DECODE_ERRORS)  # fmt: skip


def quiet() -> Any:
    return option("Print nothing but errors.", False, flags=("--quiet", "-q"))
