"""A trained model, taken out of torch: model.safetensors, a browser page, an ONNX graph.

    export(Path("checkpoints/run/best.pt"), html=Path("play.html"), onnx=Path("model.onnx"))

    best.pt ──(torch: model/weights.step_weights)──▶ model.safetensors (portable.py)
                                                 ├──▶ numpy engine (npstep.py)
                                                 ├──▶ play.html   (playground.py)
                                                 └──▶ model.onnx  (onnxgraph.py)

Only the first arrow needs torch: given a model.safetensors, everything else runs without it.
The way back (`model_from_portable`) rebuilds the torch model from a model file alone, for
evaluating or tracing a model that came without its checkpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from charlstm.errors import CharlstmError, UsageError
from charlstm.files import write_atomic
from charlstm.formats.model_file import (
    RUN_KEYS,
    Portable,
    fingerprint_of,
    no_portable_form,
    portable_path,
    read_portable,
    write_portable,
)

if TYPE_CHECKING:
    from charlstm.model.language_model import LanguageModel

# The page and the ONNX graph run the recurrent step only (export/onnx_graph.py, playground.js).
NO_ATTENTION = ("the page and the ONNX graph do not support --attention models; sample them with "
                "charlstm sample")


def write_model_file(
    path: Path, model: LanguageModel, tokenizer: dict[str, Any], run: dict[str, Any]
) -> Path:
    """Write `model` as a model file (portable.py) at `path`; `run` as in a checkpoint (only
    RUN_KEYS are kept)."""
    from charlstm.model.weights import portable_weights

    kept = {k: run[k] for k in RUN_KEYS if run.get(k) is not None}
    if "best_val_loss" in kept and not np.isfinite(kept["best_val_loss"]):
        del kept["best_val_loss"]  # inf before the first validation: not JSON
    return write_portable(path, portable_weights(model), model.cfg, tokenizer, kept)


def model_from_portable(model: Portable) -> LanguageModel:
    """The torch model a model file describes, in eval mode (the inverse of
    model.weights.portable_weights)."""
    import torch

    from charlstm.model.language_model import LanguageModel
    from charlstm.model.weights import torch_state

    cfg, w = model.config, model.weights
    net = LanguageModel(cfg)
    t = {k: torch.from_numpy(v.copy()) for k, v in w.items()}
    state = {"embed.weight": t["embed"], "head.weight": t["head.w"].T, "head.bias": t["head.b"]}
    layers = [{name.split(".", 1)[1]: v for name, v in t.items() if name.startswith(f"layer{k}.")}
              for k in range(cfg.num_layers)]  # fmt: skip
    state.update({f"rnn.{n}": v for n, v in torch_state(layers, net.rnn, cfg.cell).items()})
    state.update({f"attend.{n[len('attention.'):]}": v for n, v in t.items()
                  if n.startswith("attention.")})  # fmt: skip
    net.load_state_dict({k: v.contiguous() for k, v in state.items()})
    return net.eval()


def portable_from_checkpoint(where: Path) -> Portable:
    """A checked checkpoint file's model in memory as a model file would hold it."""
    from charlstm.formats.checkpoint import read_checkpoint
    from charlstm.model.weights import portable_weights

    ckpt = read_checkpoint(where)
    why = no_portable_form(ckpt.config)
    if why is not None:
        raise CharlstmError(f"'{where}': {why}; sample it with torch")
    run = {k: ckpt.data.get(k) for k in RUN_KEYS if ckpt.data.get(k) is not None}
    if not np.isfinite(run.get("best_val_loss", 0.0)):
        del run["best_val_loss"]
    weights = portable_weights(ckpt.model())
    digest = fingerprint_of(weights, ckpt.data["model_config"], ckpt.data["tokenizer"])
    return Portable(ckpt.config, ckpt.tokenizer, weights, run, where, digest)


def export(where: Path, *, html: Path | None = None, onnx: Path | None = None) -> list[Path]:
    """Export a checkpoint file (.pt) or a model file (.safetensors). A checkpoint's model file
    is (re)written beside it (portable.portable_path); then the page and the ONNX graph, when
    asked. Returns the files written."""
    written: list[Path] = []
    if where.suffix == ".safetensors":
        model = read_portable(where)
    else:
        model = portable_from_checkpoint(where)
    if model.config.attention and (html is not None or onnx is not None):
        raise UsageError(NO_ATTENTION)
    if where.suffix != ".safetensors":
        target = portable_path(where)
        write_portable(target, model.weights, model.config, model.tokenizer.to_dict(), model.run)
        written.append(target)
        model.path = target
    if html is not None:
        from charlstm.export.playground import build_page

        write_atomic(html, build_page(model))
        written.append(html)
    if onnx is not None:
        from charlstm.export.onnx_graph import onnx_bytes

        write_atomic(onnx, onnx_bytes(model))
        written.append(onnx)
    return written


__all__ = ["export", "model_from_portable", "write_model_file"]
