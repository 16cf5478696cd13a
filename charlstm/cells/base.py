"""What every cell file provides, and the array operations its step is written over.

A cell's step is one layer, one time step, a batch of B rows:

    new_state = cell.step(ops, p, zx, state)

- `ops`: an Ops implementation (below): torch, numpy, a tracer, the integer-exact engine.
- `p`: the layer's parameters by name (the cell's PARAMS), in the step layout:
  w_x (I, G·H), w_h (H, G·H), b (G·H,), and whatever else the cell declares.
- `zx`: x @ w_x + b, (B, G·H): the engine computes it (a row of a table, one GEMM for a whole
  training window, ...). A cell with INPUT_GATED = True gets the raw input x (B, I) instead and
  projects it itself (the Mogrifier gates x by h before the projection).
- `state`: a tuple of (B, H) arrays named by the cell's STATE, h first; the step returns the
  new one, h first (h is also the layer's output).

Facts a cell file declares (defaults in DEFAULTS):
    NAME: str                  the --cell name
    STATE: tuple[str, ...]     ("h",) or ("h", "c"), ...: state parts, h first
    BLOCKS: str                one letter per H-wide block of w_x, w_h and b, in stored order
    PARAMS: dict[str, str]     parameter name -> role: "in" (I, G·H), "hidden" (H, G·H),
                               "bias" (G·H,), "diag" (H,), "q" (H, I), "r" (I, H)
                               (a cell whose parameters depend on the model config defines
                               `params(**options) -> dict` instead: the Mogrifier's rounds)
    SHOWN: tuple[str, ...]     the activations `visualize` can show (ops.show names)
    INPUT_GATED: bool          step gets x, not zx (see above)
    H_BOUND: int               the largest |h| the cell makes (1 for tanh and σ outputs); the
                               integer-exact engine clips h there
    PARALLEL: bool             h_t = a_t ⊙ h_{t−1} + b_t with a_t, b_t > 0 from x_t alone:
                               training scans a window at once (model/scan.py) from the cell's
                               `log_terms(zx) -> (log a, log b)`, zx (B, T, G·H) a torch tensor
and optionally `bind(layer) -> dict`, from the stored step layout's layer (below) to the names
the step reads (default: the layer as it is).

The step layout (model.safetensors, the torch and numpy engines) stores a layer as w_x, w_h, b
and the other plain roles under their own names; the roles that come in sets are stacked, one
tensor per role: the "diag" rows as p (n, H), the "q" matrices as q (n, H, I), the "r" ones as
r (n, I, H), in the order PARAMS lists them; a set with no member is not stored.
"""

from __future__ import annotations

from typing import Any, Protocol

Array = Any  # an engine's array: torch.Tensor, numpy.ndarray, a traced symbol, ...
Operand = Any  # an Array or a Python float

DEFAULTS: dict[str, object] = {"SHOWN": (), "INPUT_GATED": False, "H_BOUND": 1, "PARALLEL": False}


class Ops(Protocol):
    """The operations a cell's step may use. Elementwise ops broadcast (B, H) with (H,) and
    with Python floats; nothing is done in place (engines that want buffers trace the step)."""

    def matmul(self, a: Array, w: Array) -> Array: ...  # (B, K) @ (K, N) -> (B, N)
    def add(self, a: Operand, b: Operand) -> Array: ...
    def sub(self, a: Operand, b: Operand) -> Array: ...
    def mul(self, a: Operand, b: Operand) -> Array: ...
    def div(self, a: Operand, b: Operand) -> Array: ...
    def sigmoid(self, a: Array) -> Array: ...
    def tanh(self, a: Array) -> Array: ...
    def exp(self, a: Array) -> Array: ...
    def log_sigmoid(self, a: Array) -> Array: ...  # log σ(a), exact for large |a|
    def maximum(self, a: Operand, b: Operand) -> Array: ...
    def gt(self, a: Operand, b: Operand) -> Array: ...  # a mask, used only by where
    def where(self, mask: Array, a: Operand, b: Operand) -> Array: ...
    def split(self, a: Array, n: int) -> tuple[Array, ...]: ...  # n equal blocks, last axis
    def show(self, name: str, a: Array) -> Array: ...  # returns a; recorders keep it


# Stored name of each role that comes in sets (see the docstring); every other role is stored
# under its parameter's own name.
STACKED = {"diag": "p", "q": "q", "r": "r"}


def params(cell: object, **options: Any) -> dict[str, str]:
    """The cell's parameters and their roles; `options` (config.cell_options) reach a cell
    whose parameters depend on the config, the others ignore them."""
    if hasattr(cell, "params"):
        return cell.params(**options)
    return dict(cell.PARAMS)  # type: ignore[attr-defined]


def bind(cell: object, layer: dict[str, Any]) -> dict[str, Any]:
    """A stored layer's arrays under the names the cell's step reads."""
    return cell.bind(layer) if hasattr(cell, "bind") else dict(layer)


def layer_shapes(
    cell: object, input_size: int, hidden_size: int, **options: Any
) -> dict[str, tuple[int, ...]]:
    """The tensors one stored layer holds (the step layout above), with their shapes; I is
    `input_size` (the embedding for layer 0, H above it)."""
    i, h = input_size, hidden_size
    gh = gate_count(cell) * h
    one = {"in": (i, gh), "hidden": (h, gh), "bias": (gh,), "diag": (h,), "q": (h, i), "r": (i, h)}
    shapes: dict[str, tuple[int, ...]] = {}
    stacked: dict[str, int] = {}
    for name, role in params(cell, **options).items():
        if role in STACKED:
            stacked[role] = stacked.get(role, 0) + 1
        else:
            shapes[name] = one[role]
    for role, n in stacked.items():
        shapes[STACKED[role]] = (n, *one[role])
    return shapes


def fact(cell: object, name: str) -> Any:
    """A cell's fact, or its default."""
    return getattr(cell, name, DEFAULTS.get(name))


def gate_count(cell: object) -> int:
    """G: how many H-wide blocks w_x, w_h and b have."""
    return len(cell.BLOCKS)  # type: ignore[attr-defined]


def has_memory(cell: object) -> bool:
    """Whether the state holds more than h (a cell state c, ...)."""
    return len(cell.STATE) > 1  # type: ignore[attr-defined]
