"""A cell's step as a list of operations: what ONNX, the page and the plan executors run.

    plan = trace(cells.CELLS["lstm"])
    plan.inputs    ("zx", "h", "c")            zx, or x for an INPUT_GATED cell, then the state
    plan.params    ("w_h",)                    the parameters the step reads, by name
    plan.ops       (Op("split", ("v0", ...), ("zx+..",), {"n": 4}), ...)   in order
    plan.outputs   ("v9", "v8")                the new state, h first
    plan.shown     {"forget": "v4", ...}       what `visualize` can show

Every symbol is a string and every constant a float, so a plan is plain JSON (the page embeds
it). Widths are symbolic: each symbol records its width as a multiple of H ("H", "4H") or "I"
(the layer's input), so a consumer allocates buffers once for any layer size. Ops whose result
no output or shown name needs are dropped (`prune`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from charlstm.cells import CELLS, cell_options
from charlstm.cells.base import bind, fact, gate_count, params

KINDS = ("matmul", "add", "sub", "mul", "div", "sigmoid", "tanh", "exp", "log_sigmoid",
         "maximum", "gt", "where", "split")  # fmt: skip


@dataclass(frozen=True)
class Op:
    kind: str  # one of KINDS
    out: tuple[str, ...]  # one symbol, or n for split
    args: tuple[str | float, ...]  # symbols, parameter names or constants
    attrs: dict[str, Any] = field(default_factory=dict)  # split: {"n": n}


@dataclass(frozen=True)
class Plan:
    cell: str
    inputs: tuple[str, ...]
    params: tuple[str, ...]
    ops: tuple[Op, ...]
    outputs: tuple[str, ...]
    shown: dict[str, str]
    widths: dict[str, str]  # symbol or parameter -> "H", "4H", "I", "H×4H", ...

    def to_json(self) -> dict[str, Any]:
        ops = [[o.kind, list(o.out), list(o.args), o.attrs] for o in self.ops]
        return {"cell": self.cell, "inputs": list(self.inputs), "params": list(self.params),
                "ops": ops, "outputs": list(self.outputs), "shown": self.shown,
                "widths": self.widths}  # fmt: skip


class _Tracer:
    """An Ops that records instead of computing (cells.base.Ops)."""

    def __init__(self, widths: dict[str, str]) -> None:
        self.ops: list[Op] = []
        self.widths = widths
        self.shown: dict[str, str] = {}

    def _new(self, kind: str, args: tuple, width: str, **attrs: Any) -> str:
        name = f"v{len(self.widths)}"
        self.widths[name] = width
        self.ops.append(Op(kind, (name,), args, attrs))
        return name

    def _width(self, *args: Any) -> str:
        return next(self.widths[a] for a in args if isinstance(a, str))

    def matmul(self, a: str, w: str) -> str:
        return self._new("matmul", (a, w), self.widths[w].split("×")[1])

    def _binary(kind: str):  # noqa: N805 (a method factory)
        def op(self: _Tracer, a: Any, b: Any) -> str:
            args = tuple(x if isinstance(x, str) else float(x) for x in (a, b))
            return self._new(kind, args, self._width(a, b))

        return op

    def _unary(kind: str):  # noqa: N805
        def op(self: _Tracer, a: str) -> str:
            return self._new(kind, (a,), self.widths[a])

        return op

    add, sub, mul, div = _binary("add"), _binary("sub"), _binary("mul"), _binary("div")
    maximum, gt = _binary("maximum"), _binary("gt")
    sigmoid, tanh, exp = _unary("sigmoid"), _unary("tanh"), _unary("exp")
    log_sigmoid = _unary("log_sigmoid")

    def where(self, mask: str, a: Any, b: Any) -> str:
        args = tuple(x if isinstance(x, str) else float(x) for x in (mask, a, b))
        return self._new("where", args, self._width(a, b, mask))

    def split(self, a: str, n: int) -> tuple[str, ...]:
        width = self.widths[a]
        parts = int(width[:-1] or 1) // n if width.endswith("H") else 0
        assert parts >= 1 and parts * n == int(width[:-1] or 1), f"cannot split {width} in {n}"
        names = tuple(f"v{len(self.widths) + j}" for j in range(n))
        for name in names:
            self.widths[name] = f"{parts}H" if parts > 1 else "H"
        self.ops.append(Op("split", names, (a,), {"n": n}))
        return names

    def show(self, name: str, a: str) -> str:
        self.shown[name] = a
        return a


ROLE_WIDTHS = {"in": "I×{G}H", "hidden": "H×{G}H", "bias": "{G}H", "rows3": "3×H",
               "diag": "H", "q": "H×I", "r": "I×H"}  # fmt: skip


def trace(cell: ModuleType, **options: Any) -> Plan:
    """The cell's step as a Plan (see the module docstring). `options` (cells.cell_options of
    the model config) reach a cell whose parameters depend on them (the Mogrifier's rounds)."""
    g = "" if gate_count(cell) == 1 else str(gate_count(cell))  # widths say "H", not "1H"
    names = params(cell, **options)
    widths = {name: ROLE_WIDTHS[role].format(G=g) for name, role in names.items()}
    first = "x" if fact(cell, "INPUT_GATED") else "zx"
    widths[first] = "I" if first == "x" else f"{g}H"
    state = tuple(cell.STATE)
    widths.update({s: "H" for s in state})
    tracer = _Tracer(widths)
    outputs = tuple(cell.step(tracer, {n: n for n in names}, first, state))
    used = {a for o in tracer.ops for a in o.args if isinstance(a, str)}
    return prune(Plan(cell.NAME, (first, *state), tuple(n for n in names if n in used),
                      tuple(tracer.ops), outputs, tracer.shown, tracer.widths))  # fmt: skip


def prune(plan: Plan, keep_shown: bool = False) -> Plan:
    """Drop the ops whose results nothing needs (the outputs, and the shown ones if asked)."""
    needed = set(plan.outputs) | (set(plan.shown.values()) if keep_shown else set())
    kept: list[Op] = []
    for op in reversed(plan.ops):
        if needed.intersection(op.out):
            kept.append(op)
            needed.update(a for a in op.args if isinstance(a, str))
    ops = tuple(reversed(kept))
    made = {s for o in ops for s in o.out} | set(plan.inputs)
    shown = {k: v for k, v in plan.shown.items() if v in made}
    return Plan(plan.cell, plan.inputs, plan.params, ops, plan.outputs, shown, plan.widths)


def model_plan(config: Any) -> Plan:
    """The step of a model config's cell (config.ModelConfig), traced with its options."""
    return trace(CELLS[config.cell], **cell_options(config))


def layer_params(cell: str, weights: dict[str, Any], k: int) -> dict[str, Any]:
    """Layer k's parameters by the names the step of `cell` reads: the model file's layer{k}.*
    tensors, through the cell's `bind` (cells/base.py)."""
    prefix = f"layer{k}."
    layer = {n[len(prefix) :]: w for n, w in weights.items() if n.startswith(prefix)}
    return bind(CELLS[cell], layer)
