"""The recurrent layers of the LSTM family, and their equations written out line by line.

Every layer here is batch_first and is called like torch's own:

    out, layer_state = layer(x, layer_state)    # x (B, T, I) -> out (B, T, H)

where torch's convention for the state is `(h, c)`, each (L, B, H), for the LSTMs, a single h
(L, B, H) for gru and rnn, and `None` means zeros. Above this module the state is always a
`State`, a tuple with h first: (h,), (h, c), or (h, c, n, m) for slstm (STATE_PARTS);
`run_layer` translates.

lstm / gru / rnn are torch's fused modules. peephole, coupled, mogrifier and slstm are ours
(model/own_layers.py): a Python loop over time does the recurrent part. mingru and minlstm (the
cells with PARALLEL = True) train by a parallel scan over time (model/scan.py).

Each cell's equations are written once, in its file in cells/; the tests hold torch's modules
and ours against that step (tests/test_cells.py), and the engines run it (generate/).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from charlstm.cells import CELLS
from charlstm.cells.base import fact
from charlstm.model.own_layers import (
    MOGRIFIER_ROUNDS,
    SLSTM,
    CoupledLSTM,
    MogrifierLSTM,
    PeepholeLSTM,
)
from charlstm.model.scan import ParallelLayer

# How many parts a layer's state holds, by cell (its file's STATE): h first; c for the LSTMs;
# the sLSTM adds its normaliser n and stabiliser m. Every part is (L, B, H).
STATE_PARTS = {name: len(cell.STATE) for name, cell in CELLS.items()}

# The recurrent state of a model: a tuple, h first, each part (L, B, H).
State = tuple[Tensor, ...]


def make_recurrent(
    cell: str,
    input_size: int,
    hidden_size: int,
    num_layers: int,
    dropout: float,
    rounds: int = MOGRIFIER_ROUNDS,
) -> nn.Module:
    """A `num_layers`-deep batch_first recurrent layer of kind `cell` (one of config.CELLS).

    `dropout` applies to the outputs of every layer but the last, only in training mode;
    `rounds` is the Mogrifier's number of mutual-gating rounds (other cells ignore it).
    """
    # torch warns when dropout is set on a single layer, where it has nothing to act on.
    dropout = dropout if num_layers > 1 else 0.0
    kinds: dict[str, type[nn.Module]] = {
        "lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN,
        "peephole": PeepholeLSTM, "coupled": CoupledLSTM, "mogrifier": MogrifierLSTM,
        "slstm": SLSTM,
    }  # fmt: skip
    if cell in CELLS and fact(CELLS[cell], "PARALLEL"):  # trained by the scan (model/scan.py)
        return ParallelLayer(CELLS[cell], input_size, hidden_size, num_layers, dropout)
    if cell not in kinds:
        raise ValueError(f"unknown cell {cell!r}; choose one of {', '.join(CELLS)}")
    if cell in ("lstm", "gru", "rnn"):
        return kinds[cell](input_size, hidden_size, num_layers, batch_first=True, dropout=dropout)
    if cell == "mogrifier":
        return MogrifierLSTM(input_size, hidden_size, num_layers, dropout, rounds=rounds)
    return kinds[cell](input_size, hidden_size, num_layers, dropout)


def zero_state(
    cell: str,
    num_layers: int,
    batch: int,
    hidden: int,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> State:
    """The zero state: a tuple of STATE_PARTS[cell] zero tensors, each (L, B, H)."""
    return tuple(
        torch.zeros(num_layers, batch, hidden, device=device, dtype=dtype)
        for _ in range(STATE_PARTS[cell])
    )


def run_layer(cell: str, layer: nn.Module, x: Tensor, state: State | None) -> tuple[Tensor, State]:
    """Call a layer from `make_recurrent` with a `State`, translating torch's convention."""
    out, new = layer(x, state if state is None or STATE_PARTS[cell] > 1 else state[0])
    return out, (new if isinstance(new, tuple) else (new,))


def detach_state(state: State) -> State:
    """Cut the graph between truncated-BPTT windows while keeping the values."""
    return tuple(s.detach() for s in state)
