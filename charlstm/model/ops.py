"""The cells' operations in torch (cells.base.Ops): what visualize, the tests and the torch
engine's reference run a cell's step over.

    new_state = cell.step(TORCH, p, zx, state)        # autograd flows through, any dtype
    rec = RecordingOps(); cell.step(rec, p, zx, state); rec.shown["forget"]   # (B, H)
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor


class TorchOps:
    """cells.base.Ops over torch tensors, eager (nothing in place: autograd may run through)."""

    def matmul(self, a: Tensor, w: Tensor) -> Tensor:
        return a @ w

    def add(self, a: Any, b: Any) -> Tensor:
        return a + b

    def sub(self, a: Any, b: Any) -> Tensor:
        return a - b

    def mul(self, a: Any, b: Any) -> Tensor:
        return a * b

    def div(self, a: Any, b: Any) -> Tensor:
        return a / b

    def sigmoid(self, a: Tensor) -> Tensor:
        return torch.sigmoid(a)

    def tanh(self, a: Tensor) -> Tensor:
        return torch.tanh(a)

    def exp(self, a: Tensor) -> Tensor:
        return torch.exp(a)

    def log_sigmoid(self, a: Tensor) -> Tensor:
        return F.logsigmoid(a)

    def maximum(self, a: Any, b: Any) -> Tensor:
        if not isinstance(a, Tensor):
            a, b = b, a
        return a.clamp(min=b) if not isinstance(b, Tensor) else torch.maximum(a, b)

    def gt(self, a: Any, b: Any) -> Tensor:
        return a > b if isinstance(a, Tensor) else b < a

    def where(self, mask: Tensor, a: Any, b: Any) -> Tensor:
        return torch.where(mask, a, b)

    def split(self, a: Tensor, n: int) -> tuple[Tensor, ...]:
        return a.split(a.shape[-1] // n, dim=-1)

    def show(self, name: str, a: Tensor) -> Tensor:
        return a


class RecordingOps(TorchOps):
    """TorchOps that keep what the step shows (cells' SHOWN), by name, in `shown`."""

    def __init__(self) -> None:
        self.shown: dict[str, Tensor] = {}

    def show(self, name: str, a: Tensor) -> Tensor:
        self.shown[name] = a
        return a


TORCH = TorchOps()
