"""The recurrent cells: one file each, its equations written once over `ops` (base.Ops).

How this folder works:
- A cell file holds its facts (NAME, STATE, BLOCKS, PARAMS, SHOWN, ...) and one
  `step(ops, p, zx, state)`; it imports neither torch nor numpy, so `--help` and the numpy
  engine stay torch-free.
- Every engine is derived from that step: torch and numpy run it (model/ops.py,
  generate/numpy_ops.py), the tracer turns it into an operation list that ONNX, the page and
  the plan executors interpret (export/trace.py). No engine names a cell.
- Adding a cell: its file, one line in CELLS below, its equation test, its docs. No engine.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from charlstm.cells import coupled, gru, lstm, mingru, minlstm, mogrifier, peephole, rnn, slstm

# name -> the cell's module; the order is the order of `--cell`'s choices (config.CELLS).
CELLS: dict[str, ModuleType] = {
    m.NAME: m for m in (lstm, gru, rnn, peephole, coupled, mogrifier, slstm, mingru, minlstm)
}


def cell_options(config: Any) -> dict[str, Any]:
    """What of a model config (config.ModelConfig) a cell's parameters may depend on, as the
    keyword options of base.params / layer_shapes / trace."""
    return {"rounds": config.mogrifier_rounds}
