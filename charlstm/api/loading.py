"""Opening what a run wrote: `load` a run folder, checkpoint or model file as a Model, `info`
about one without building it, `export` it as a model file, a page or an ONNX graph."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from charlstm.api.model import Model, _lit
from charlstm.config import CHECKPOINTS, ENGINES
from charlstm.errors import OptionError
from charlstm.formats.checks import CheckpointError, resolve_checkpoint
from charlstm.formats.model_file import (
    fresh_portable,
    no_portable_form,
    portable_path,
    read_portable,
)
from charlstm.formats.run_folder import RunFolder

if TYPE_CHECKING:  # these import torch: only the calls that need it load them
    import torch


def load(
    path: str | Path | None = None,
    *,
    checkpoints: str | Path = CHECKPOINTS,
    device: str | torch.device = "cpu",
    engine: str = "auto",
) -> Model:
    """The model in a run folder (its best.pt, else last.pt), a checkpoint file or a model file
    (.safetensors); with no path, the most recently written best.pt under `checkpoints`.

    `engine` says what generates: "numpy" from the checkpoint's model.safetensors, without
    importing torch (the CPU only); "torch"; "auto" (the default): numpy when that file is
    there, up to date, and the device is the CPU. Evaluating and tracing always use torch,
    loaded when first asked for."""
    if engine not in ENGINES:
        raise OptionError(f"{{engine}} must be {', '.join(ENGINES)}; got {_lit(engine)}")
    where = resolve_checkpoint(None if path is None else Path(path), Path(checkpoints))
    on_cpu = str(device) == "cpu"
    if engine == "numpy" and not on_cpu:
        raise OptionError(f"{{engine=numpy}} runs on the CPU, not {OptionError.literal(device)}; "
                          "use {engine=torch}")  # fmt: skip
    if where.suffix == ".safetensors":
        model = read_portable(where)
        if engine == "torch" or not on_cpu:
            return Model.from_portable(model, engine="torch").to(device)
        return Model.from_portable(model)
    if engine != "torch" and on_cpu:
        fresh = fresh_portable(where)
        if fresh is not None:
            return Model.from_portable(read_portable(fresh), checkpoint=where)
        if engine == "numpy":
            from charlstm.formats.checkpoint import read_checkpoint

            why = no_portable_form(read_checkpoint(where).config)
            raise CheckpointError(
                f"--engine numpy cannot run '{where}': {why}; use --engine torch" if why else
                f"--engine numpy needs an up-to-date {portable_path(where).name} beside '{where}'; "
                f"write it with: charlstm export {where}"
            )  # fmt: skip
    from charlstm.formats.checkpoint import read_checkpoint

    ckpt = read_checkpoint(where)
    meta = {k: v for k, v in ckpt.data.items() if k != "model"}
    return Model(ckpt.model().to(device), ckpt.tokenizer, where, meta)


def info(path: str | Path | None = None, *, checkpoints: str | Path = CHECKPOINTS) -> dict:
    """What a checkpoint or model file holds (as `charlstm info --json`), read without building
    the model."""
    where = resolve_checkpoint(None if path is None else Path(path), Path(checkpoints))
    if where.suffix == ".safetensors":
        from charlstm.formats.model_file import describe_portable

        data = describe_portable(read_portable(where))
    else:
        from charlstm.formats.checkpoint import describe, read_checkpoint

        data = describe(read_checkpoint(where).data, where)
    # Whether `charlstm train --resume` can continue the run: a last.pt with its training
    # state and the run's tokens.npy beside it, whichever of the run's files was described.
    last = where if data["resumable"] else RunFolder(where.parent).last
    data["resumable"] = last.is_file() and RunFolder(last.parent).tokens.is_file()
    return data


def export(
    path: str | Path | None = None,
    *,
    html: str | Path | None = None,
    onnx: str | Path | None = None,
    checkpoints: str | Path = CHECKPOINTS,
) -> list[Path]:
    """Write a checkpoint's model.safetensors (torch-free sampling), and with `html` a
    self-contained browser page, with `onnx` a one-step ONNX graph (export.py). Given a
    .safetensors file, only the page and the graph are written, and torch is not needed.
    Returns the files written."""
    from charlstm.export.convert import export as export_files

    where = resolve_checkpoint(None if path is None else Path(path), Path(checkpoints))
    return export_files(where, html=None if html is None else Path(html),
                        onnx=None if onnx is None else Path(onnx))  # fmt: skip
