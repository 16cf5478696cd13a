"""A model's weights in the step layout, and back: what the engines and model.safetensors hold.

    w = step_weights(model)          # StepWeights: embed, one dict per layer, the head
    state = torch_state(layers, net) # the step layout's layers as `net.rnn`'s state dict

The step layout of a layer (cells/base.py): w_x (I, G·H), w_h (H, G·H), b (G·H,) with the
gate blocks in the cell's BLOCKS order, plus what else the cell declares (b_h, p, q, r). The
training layers hold the same numbers two ways:

    torch's nn.LSTM / nn.GRU / nn.RNN   weight_ih_l{k} (G·H, I), weight_hh_l{k} (G·H, H),
                                        bias_ih_l{k}, bias_hh_l{k}, blocks in torch's order
                                        (FUSED_BLOCKS); the two biases summed into b, unless
                                        the cell reads b_h apart (the GRU's reset gate scales it)
    ours (model/layers.py, scan.py)     weight_x_l{k}, weight_h_l{k}, bias_l{k} already in the
                                        step layout, peephole_l{k} = p, mogrifier_q/r_l{k} = q, r
                                        (a PARALLEL cell's layer has no weight_h_l{k})
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from charlstm.cells import CELLS, cell_options
from charlstm.cells.base import gate_count, params

# torch's fused modules (by class name) and the order their gate blocks are stored in.
FUSED_BLOCKS = {"LSTM": "ifgo", "GRU": "rzn", "RNN": "g"}
# Our layers' parameter names (before _l{k}) and the step layout's.
OWN_NAMES = {"weight_x": "w_x", "weight_h": "w_h", "bias": "b", "peephole": "p",
             "mogrifier_q": "q", "mogrifier_r": "r"}  # fmt: skip


@dataclass
class StepWeights:
    """A model's weights in the step layout (see the module docstring)."""

    cell: str
    embed: Tensor  # (V, E)
    layers: list[dict[str, Tensor]]  # w_x, w_h, b (+ b_h, p, q, r as the cell declares)
    w_out: Tensor | None  # (H, V); None when the head is an adaptive softmax
    b_out: Tensor | None  # (V,)
    options: dict[str, Any] = field(default_factory=dict)  # cells.cell_options of the config
    # --attention's block (model/attention.Attention's state dict) and its memory length M.
    attention: dict[str, Tensor] | None = None
    memory: int = 0

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def hidden_size(self) -> int:
        return self.layers[0]["b"].shape[0] // gate_count(CELLS[self.cell])

    @property
    def vocab_size(self) -> int:
        return self.embed.shape[0]


def _blocks(w: Tensor, src: str, dst: str) -> Tensor:
    """w's gate blocks along dim 0 from the order `src` to `dst` (letters name the blocks)."""
    if src == dst:
        return w
    parts = w.chunk(len(src))
    return torch.cat([parts[src.index(b)] for b in dst])


def step_layers(rnn: nn.Module, cell_name: str) -> list[dict[str, Tensor]]:
    """The recurrent layers of `rnn` (model/layers.make_recurrent) in the step layout: views
    or new tensors, on rnn's device and dtype."""
    cell = CELLS[cell_name]
    fused = FUSED_BLOCKS.get(type(rnn).__name__)
    apart = "b_h" in params(cell)
    layers = []
    for k in range(rnn.num_layers):
        if fused is not None:
            w_ih, w_hh, b_ih, b_hh = (getattr(rnn, f"{n}_l{k}") for n in
                                      ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))  # fmt: skip
            layer = {"w_x": _blocks(w_ih, fused, cell.BLOCKS).T,
                     "w_h": _blocks(w_hh, fused, cell.BLOCKS).T}  # fmt: skip
            if apart:  # the GRU's: its reset gate scales b_h alone
                layer.update(b=_blocks(b_ih, fused, cell.BLOCKS),
                             b_h=_blocks(b_hh, fused, cell.BLOCKS))  # fmt: skip
            else:
                layer["b"] = _blocks(b_ih + b_hh, fused, cell.BLOCKS)
        else:
            found = {short: getattr(rnn, f"{long}_l{k}", None) for long, short in OWN_NAMES.items()}
            layer = {n: t for n, t in found.items() if t is not None and t.numel()}
        layers.append(layer)
    return layers


def torch_state(layers: list[dict[str, Tensor]], rnn: nn.Module, cell_name: str) -> dict:
    """The inverse of `step_layers`: `rnn`'s state dict entries (names without "rnn.")."""
    cell = CELLS[cell_name]
    fused = FUSED_BLOCKS.get(type(rnn).__name__)
    state: dict[str, Tensor] = {}
    for k, layer in enumerate(layers):
        if fused is None:
            short = {s: lng for lng, s in OWN_NAMES.items()}
            state.update({f"{short[n]}_l{k}": t for n, t in layer.items()})
            continue
        b_h = layer.get("b_h", torch.zeros_like(layer["b"]))
        torch_names = {"weight_ih": layer["w_x"].T, "weight_hh": layer["w_h"].T,
                       "bias_ih": layer["b"], "bias_hh": b_h}  # fmt: skip
        state.update({f"{n}_l{k}": _blocks(t, cell.BLOCKS, fused) for n, t in torch_names.items()})
    return {n: t.contiguous() for n, t in state.items()}


def step_weights(model: Any) -> StepWeights:
    """Copy a model's (model/language_model.LanguageModel) weights into the step layout."""
    with torch.no_grad():
        layers = [{n: t.detach().contiguous().clone() for n, t in layer.items()}
                  for layer in step_layers(model.rnn, model.cfg.cell)]  # fmt: skip
        head = model.head
        full = isinstance(head, nn.Linear)
        attend = getattr(model, "attend", None)
        return StepWeights(
            attention=None if attend is None else
            {n: t.detach().clone() for n, t in attend.state_dict().items()},
            memory=model.cfg.attention,
            cell=model.cfg.cell,
            embed=model.embed.weight.detach().clone(),
            layers=layers,
            w_out=head.weight.detach().T.contiguous().clone() if full else None,
            b_out=head.bias.detach().clone() if full else None,
            options=cell_options(model.cfg),
        )


def portable_weights(model: Any) -> dict[str, np.ndarray]:
    """A torch model's weights in the step layout, by the model file's names, float32 (what
    model.safetensors holds: formats/model_file.py)."""
    w = step_weights(model)
    assert w.w_out is not None and w.b_out is not None, "an adaptive head has no portable form"
    out = {"embed": w.embed}
    for k, layer in enumerate(w.layers):
        out.update({f"layer{k}.{name}": t for name, t in layer.items()})
    out.update({f"attention.{name}": t for name, t in (w.attention or {}).items()})
    out.update({"head.w": w.w_out, "head.b": w.b_out})
    return {k: v.detach().float().cpu().numpy() for k, v in out.items()}
