"""Options several commands share, as Annotated types, and the choices they offer."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from charlstm.config import CELLS, DECODE_ERRORS, OPTIMIZERS, PRECISIONS, SOFTMAXES, TOKENIZERS

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



def _opt(help: str, *names: str) -> Any:
    """An option whose absence (None) lets charlstm choose; `help` says what it chooses."""
    return typer.Option(*names, help=help, show_default=False)


# ----------------------------------------------------------------------------------- train
