"""The flags of the commands around a run: `info`, `runs`, `export`, `compress`, `decompress`,
and `serve`'s own beside ServeConfig's (config.py, which the server takes)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from charlstm.config import option
from charlstm.errors import OptionError
from charlstm.options import common


@dataclass
class InfoOptions:
    model: Path | None = option("Checkpoint file or run folder.", says=common.NEWEST,
                                argument=True, metavar="MODEL")
    json_out: bool = option("Print one JSON object.", False, flags=("--json",))
    plot: Path | None = option(
        "Also draw the training and validation loss against step into this image (PNG, SVG, "
        "PDF; needs matplotlib: pip install 'charlstm\\[plot]').")
    checkpoints: Path = common.checkpoints()
    quiet: bool = common.quiet()


@dataclass
class RunsOptions:
    delete: list[str] | None = option("Delete this run's folder (give it again for more runs).")
    slim: list[str] | None = option(
        "Keep only this run's best.pt (all that sampling needs) and delete last.pt and "
        "tokens.npy (only resuming needs them: about three quarters of a run's disk).")
    slim_finished: bool = option("Slim every run that reached its limits.", False)
    json_out: bool = option("One JSON object per run per line.", False, flags=("--json",))
    checkpoints: Path = common.checkpoints()
    quiet: bool = common.quiet()


@dataclass
class ExportOptions:
    model: Path | None = option("Checkpoint file, run folder or model.safetensors.",
                                says="the newest best.pt", argument=True,
                                metavar="MODEL")  # fmt: skip
    html_out: Path | None = option(
        "Also write one self-contained page that runs the model in a browser, offline: a "
        "prime box, temperature and top-p, text streamed as it is made (char models).",
        flags=("--html",))
    onnx_out: Path | None = option(
        "Also write the one-step graph as ONNX (token ids and state in; logits and state "
        "out; needs pip install 'charlstm\\[onnx]').", flags=("--onnx",))
    checkpoints: Path = common.checkpoints()
    quiet: bool = common.quiet()


# What compress and decompress share, each declared once.
def _source() -> Any:
    return option("The file to read; - (default) reads stdin.", "-", argument=True,
                  metavar="FILE")


def _engine() -> Any:
    return option("torch or numpy: either one, on any machine and any number of threads, codes "
                  "the very same bytes (the model runs in exact integer arithmetic).", "torch",
                  choices=("torch", "numpy"))  # fmt: skip


def _threads() -> Any:
    return option("CPU threads of the torch engine; 0 = all cores. (numpy's BLAS follows "
                  "OPENBLAS_NUM_THREADS.)", 0)  # fmt: skip


@dataclass
class CompressOptions:
    source: str = _source()
    segments: int = option(
        "Code the input as this many segments side by side, each from a zero state (several "
        "times faster in a batch; about 16 bits each). 0 = one per 2,048 tokens, at most 256.",
        0)
    engine: str = _engine()
    threads: int = _threads()
    model: Path | None = common.model()
    checkpoints: Path = common.checkpoints()
    quiet: bool = common.quiet()

    def check(self) -> None:
        """An OptionError for a value that cannot work, before the input is read."""
        if self.segments < 0:
            raise OptionError(f"{{segments}} must be 0 (from the length) or more, got "
                              f"{self.segments}")  # fmt: skip


@dataclass
class DecompressOptions:
    source: str = _source()
    engine: str = _engine()
    threads: int = _threads()
    model: Path | None = common.model()
    checkpoints: Path = common.checkpoints()
    quiet: bool = common.quiet()


@dataclass
class ServeOptions:
    """`charlstm serve`'s own flags, beside ServeConfig's: what it serves and where it runs."""

    runs: list[Path] | None = option(
        "Run folders or checkpoint files to serve, each under its folder's name (the request's "
        '"model").', says="the newest run under --checkpoints", argument=True)
    device: str = common.device()
    checkpoints: Path = common.checkpoints()
    threads: int = common.threads()
    quiet: bool = common.quiet()
