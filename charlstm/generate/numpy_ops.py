"""The cells' operations in numpy (cells.base.Ops), eager and as a laid-out plan; no torch.

    new_state = cell.step(NUMPY, p, zx, state)         # eager: each op a new array (tests)
    run = numpy_program(layout, buffers, params)       # plan.Layout on preallocated buffers
    run()                                              # one step, nothing allocated

σ(x) is computed as (1 + tanh(x/2)) / 2: the same number as 1 / (1 + e^−x) to rounding, and
no overflow for any x; log σ(x) as min(x, 0) − log1p(e^−|x|), exact for large |x|.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np

from charlstm.generate.plan import Layout, viewer


class NumpyOps:
    """cells.base.Ops over numpy arrays, eager."""

    def matmul(self, a: np.ndarray, w: np.ndarray) -> np.ndarray:
        return a @ w

    def add(self, a: Any, b: Any) -> np.ndarray:
        return np.add(a, b)

    def sub(self, a: Any, b: Any) -> np.ndarray:
        return np.subtract(a, b)

    def mul(self, a: Any, b: Any) -> np.ndarray:
        return np.multiply(a, b)

    def div(self, a: Any, b: Any) -> np.ndarray:
        return np.divide(a, b)

    def sigmoid(self, a: np.ndarray) -> np.ndarray:
        return np.tanh(a * 0.5) * 0.5 + 0.5

    def tanh(self, a: np.ndarray) -> np.ndarray:
        return np.tanh(a)

    def exp(self, a: np.ndarray) -> np.ndarray:
        return np.exp(a)

    def log_sigmoid(self, a: np.ndarray) -> np.ndarray:
        return np.minimum(a, 0.0) - np.log1p(np.exp(-np.abs(a)))

    def maximum(self, a: Any, b: Any) -> np.ndarray:
        return np.maximum(a, b)

    def gt(self, a: Any, b: Any) -> np.ndarray:
        return np.greater(a, b)

    def where(self, mask: np.ndarray, a: Any, b: Any) -> np.ndarray:
        return np.where(mask, a, b)

    def split(self, a: np.ndarray, n: int) -> tuple[np.ndarray, ...]:
        return tuple(np.split(a, n, axis=-1))

    def show(self, name: str, a: np.ndarray) -> np.ndarray:
        return a


NUMPY = NumpyOps()


def numpy_program(
    layout: Layout, buffers: dict[str, np.ndarray], params: dict[str, np.ndarray]
) -> Callable[[], None]:
    """One step of `layout` as a function of no arguments: it reads and writes `buffers`
    ("input", "state:<part>" (B, H) each; the temporaries are added here) in place.
    `params` are the cell's bound parameters (cells.base.bind)."""
    calls = numpy_calls(layout, buffers, params)

    def run() -> None:
        for call in calls:
            call()

    return run


def numpy_calls(
    layout: Layout, buffers: dict[str, np.ndarray], params: dict[str, np.ndarray]
) -> list[Callable[[], Any]]:
    """numpy_program's calls, in order, for an engine that runs them among its own."""
    batch = buffers["input"].shape[0]
    for name, (width, dtype) in layout.temps.items():
        buffers[name] = np.zeros((batch, width), bool if dtype == "b" else np.float32)

    view = viewer(buffers, params)
    calls: list[Callable[[], Any]] = []
    for step in layout.steps:
        out, args = view(step.out), [view(a) for a in step.args]
        calls += _calls(step.kind, out, args, step.args[-1] == step.out)
    for slot, part in layout.copies:
        calls.append(partial(np.copyto, buffers[f"state:{part}"], view(slot)))
    return calls


def matmul_calls(x: np.ndarray, w: np.ndarray, out: np.ndarray) -> list[Callable[[], Any]]:
    """x (B, K) @ w (K, N) into out (B, N): one call, or for 2 or 3 streams one per stream.
    OpenBLAS's gemm packs the whole matrix at every call, so for so few rows it is slower than
    a gemv per row (two rows × a 256 × 1024 matrix: 70 µs against 27 µs; at four rows the two
    are even, benchmarks/numpy_streams.py)."""
    if x.ndim == 2 and w.ndim == 2 and 1 < len(x) < 4:
        return [partial(np.matmul, x[b], w, out=out[b]) for b in range(len(x))]
    return [partial(np.matmul, x, w, out=out)]


_UFUNCS = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide,
           "maximum": np.maximum, "gt": np.greater, "tanh": np.tanh, "exp": np.exp}  # fmt: skip


def _calls(kind: str, out: np.ndarray, args: list[Any], last_is_out: bool) -> list[Callable]:
    """The numpy calls that compute one step into `out` (which may be one of `args`;
    `last_is_out`: the last one)."""
    if kind == "matmul":
        return matmul_calls(*args, out)
    if kind in _UFUNCS:
        return [partial(_UFUNCS[kind], *args, out=out)]
    if kind == "sigmoid":  # (1 + tanh(x/2)) / 2, four passes in place
        return [partial(np.multiply, args[0], 0.5, out), partial(np.tanh, out, out),
                partial(np.multiply, out, 0.5, out), partial(np.add, out, 0.5, out)]  # fmt: skip
    if kind == "log_sigmoid":  # min(x, 0) − log1p(e^−|x|)
        (a,) = args
        s = np.empty_like(out)
        return [partial(np.abs, a, s), partial(np.negative, s, s), partial(np.exp, s, s),
                partial(np.log1p, s, s), partial(np.minimum, a, 0.0, out=out),
                partial(np.subtract, out, s, out)]  # fmt: skip
    if kind == "where":  # out is b, or a buffer of its own
        mask, a, b = args
        first = [] if last_is_out else [partial(np.copyto, out, b)]
        return [*first, partial(np.copyto, out, a, where=mask)]
    raise ValueError(f"no numpy form for the op {kind!r}")
