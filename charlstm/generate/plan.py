"""A traced step (export/trace.Plan) laid out on buffers: what the numpy and torch engines run.

    layout = lay_out(plan, hidden=H, inputs=I, fuse={"addmm", "addcmul"})
    layout.temps    {"tmp0": (width, "f"), ...}       buffers (B, width) to allocate once
    layout.steps    (Step(kind, out, args, attrs), ...)   in order, each written into its out
    layout.copies   ((slot, part), ...)               new state parts not computed in place

Every symbol of the plan gets a Slot, the columns [start, stop) of a (B, width) buffer: the
plan's first input ("input": zx, or x for an INPUT_GATED cell; the engine's buffer, refilled
every step, so the step may overwrite it), a state part ("state:h", ...: the engine's, written
only with that part's new value once the old one is no longer read), or a temporary. A split's
parts are slots of its input's buffer (no copy); an elementwise op writes over an input that
nothing reads afterwards; a temporary is reused once everything in it is dead. So running the
steps allocates nothing.

Two rewrites keep the kernel count of the hand-written steps this replaces: add(x, matmul(a, w))
becomes one addmm and add(x, mul(a, b)) one addcmul where the engine has them (`fuse`: torch),
and an elementwise op on parts of one buffer that sit side by side (the LSTM's three sigmoid
gates, the GRU's r and z sums) runs once over all of them.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from charlstm.export.trace import Op, Plan

# Elementwise ops: one call over adjacent columns is the same as one call per part.
MERGEABLE = ("add", "sub", "mul", "div", "maximum", "sigmoid", "tanh", "exp", "log_sigmoid")


@dataclass(frozen=True)
class Slot:
    buf: str  # "input", "state:<part>" or "tmp<i>"
    start: int
    stop: int

    def overlaps(self, other: object) -> bool:
        return (isinstance(other, Slot) and self.buf == other.buf and self.start < other.stop
                and other.start < self.stop)  # fmt: skip


@dataclass(frozen=True)
class Step:
    kind: str  # a trace.KINDS kind (not split), or "addmm" / "addcmul"
    out: Slot
    args: tuple[Any, ...]  # Slot, a parameter's name (str) or a float
    attrs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Layout:
    temps: dict[str, tuple[int, str]]  # buffer -> (width, "f" float or "b" bool)
    steps: tuple[Step, ...]
    copies: tuple[tuple[Slot, str], ...]  # (where a new state part is, the part it goes to)


def _size(width: str, hidden: int, inputs: int) -> int:
    return inputs if width == "I" else int(width[:-1] or 1) * hidden


def fold_recurrent(plan: Plan) -> tuple[Plan, tuple[str, str] | None]:
    """A plan whose first step is input + s @ P (s a state part, P a parameter, neither sum part
    read elsewhere) without that step, its sum now the plan's input, and (s, P); else the plan
    and None. An engine that computes the input as x @ w_x + b then computes the sum at once,
    [x | s] @ [w_x; P] + b: one matrix-vector product instead of two (faster in numpy's BLAS)."""
    first, *parts = plan.inputs
    uses = Counter(a for o in plan.ops for a in o.args if isinstance(a, str))
    made = {o.out[0]: o for o in plan.ops if o.kind == "matmul"}
    for o in plan.ops:
        if o.kind != "add" or first not in o.args or uses[first] != 1:
            continue
        others = [a for a in o.args if a != first]
        y = others[0] if len(others) == 1 and isinstance(others[0], str) else None
        src = made.get(y) if y is not None else None
        if (src is None or uses[y] != 1 or src.args[0] not in parts
                or src.args[1] not in plan.params):
            return plan, None  # fmt: skip
        ops = tuple(op for op in plan.ops if op is not o and op is not src)
        folded = Plan(plan.cell, (o.out[0], *parts), plan.params, ops, plan.outputs, plan.shown,
                      plan.widths)  # fmt: skip
        return folded, (src.args[0], src.args[1])
    return plan, None


def _fused(plan: Plan, fuse: set[str] | frozenset[str]) -> list[Op]:
    """plan.ops with add(x, matmul(a, w)) -> addmm(x, a, w) and add(x, mul(a, b)) ->
    addcmul(x, a, b) where the product is read only there (and `fuse` has the kind)."""
    uses = Counter(a for o in plan.ops for a in o.args if isinstance(a, str))
    uses.update(plan.outputs)
    made = {o.out[0]: o for o in plan.ops if o.kind in ("matmul", "mul")}
    into = {"matmul": "addmm", "mul": "addcmul"}
    fused: dict[str, Op] = {}  # the add's output -> the fused op
    gone: set[str] = set()  # the products folded into one
    for o in plan.ops:
        if o.kind != "add":
            continue
        for x, y in ((o.args[0], o.args[1]), (o.args[1], o.args[0])):
            src = made.get(y) if isinstance(y, str) else None
            if (src is None or into[src.kind] not in fuse or uses[y] != 1
                    or not isinstance(x, str) or not all(isinstance(a, str) for a in src.args)):
                continue  # fmt: skip
            fused[o.out[0]] = Op(into[src.kind], o.out, (x, *src.args))
            gone.add(y)
            break
    return [fused.get(o.out[0], o) for o in plan.ops if o.out[0] not in gone]


def _safe(kind: str, args: tuple[Any, ...], out: Slot) -> bool:
    """Whether `out` may be written while the op reads `args`: an elementwise op may write
    over an input's exact columns, never over part of one; a product never over its factors."""
    for j, a in enumerate(args):
        if not out.overlaps(a):
            continue
        if kind in ("matmul", "addmm") and (kind == "matmul" or j > 0):
            return False
        if a != out:
            return False
    return True


def lay_out(plan: Plan, hidden: int, inputs: int, fuse: frozenset[str] = frozenset()) -> Layout:
    """The plan's steps on buffers (see the module docstring); `inputs` is I, the width of the
    layer's input (an INPUT_GATED cell's x and its matrices), `hidden` H."""
    ops = _fused(plan, fuse)
    last: dict[str, int] = {}
    for t, o in enumerate(ops):
        last.update((a, t) for a in o.args if isinstance(a, str))
    last.update((s, len(ops)) for s in plan.outputs)
    first, *parts = plan.inputs
    slots = {first: Slot("input", 0, _size(plan.widths[first], hidden, inputs))}
    slots.update({s: Slot(f"state:{s}", 0, hidden) for s in parts})
    owners: dict[str, list[str]] = defaultdict(list)  # buffer -> the symbols put in it
    for s, slot in slots.items():
        owners[slot.buf].append(s)
    becomes = {}  # an output symbol -> the state part it is the new value of
    for part, sym in zip(parts, plan.outputs, strict=True):
        if sym in plan.inputs and sym != part:
            raise NotImplementedError("a step that returns an old state part as another")
        becomes.setdefault(sym, part)
    temps: dict[str, tuple[int, str]] = {}

    def dead(slot: Slot, t: int) -> bool:  # nothing in slot's columns is read after op t
        return all(last.get(s, -1) <= t for s in owners[slot.buf] if slots[s].overlaps(slot))

    def temp(width: int, dtype: str, t: int) -> Slot:
        for name, (w, d) in temps.items():
            if (w, d) == (width, dtype) and all(last.get(s, -1) < t for s in owners[name]):
                return Slot(name, 0, width)
        temps[f"tmp{len(temps)}"] = (width, dtype)
        return Slot(f"tmp{len(temps) - 1}", 0, width)

    steps: list[Step] = []
    params = set(plan.params)
    for t, o in enumerate(ops):
        args = tuple(slots[a] if isinstance(a, str) and a not in params else a for a in o.args)
        if o.kind == "split":
            src, n = args[0], o.attrs["n"]
            w = (src.stop - src.start) // n
            for j, s in enumerate(o.out):
                slots[s] = Slot(src.buf, src.start + j * w, src.start + (j + 1) * w)
                owners[src.buf].append(s)
            continue
        (sym,) = o.out
        width = _size(plan.widths[sym], hidden, inputs)
        chosen = None
        if o.kind != "gt":
            candidates = []
            if sym in becomes:  # straight into the state, once its old value is read
                candidates.append(Slot(f"state:{becomes[sym]}", 0, hidden))
            if o.kind not in ("matmul", "gt"):  # over an input nothing reads afterwards
                which = (0,) if o.kind == "addmm" else (2,) if o.kind == "where" else range(3)
                candidates += [args[j] for j in which if j < len(args)
                               and isinstance(args[j], Slot) and args[j].buf[:5] != "state"
                               and args[j].stop - args[j].start == width]  # fmt: skip
            chosen = next((c for c in candidates if dead(c, t) and _safe(o.kind, args, c)), None)
        slot = chosen or temp(width, "b" if o.kind == "gt" else "f", t)
        slots[sym] = slot
        owners[slot.buf].append(sym)
        steps.append(Step(o.kind, slot, args, o.attrs))
    copies = tuple((slots[sym], part) for part, sym in zip(parts, plan.outputs, strict=True)
                   if slots[sym] != Slot(f"state:{part}", 0, hidden))  # fmt: skip
    return Layout(temps, tuple(_merged(steps)), copies)


def viewer(buffers: dict[str, Any], params: dict[str, Any]) -> Any:
    """What a step's argument stands for, in an engine's arrays: a slot's columns of its
    buffer (a view), a parameter by name, or the constant itself."""

    def view(a: Any) -> Any:
        if isinstance(a, Slot):
            return buffers[a.buf][:, a.start : a.stop]
        return params[a] if isinstance(a, str) else a

    return view


def _joined(a: Step, b: Step) -> Step | None:
    """a and b as one step over both their columns, if they are the same elementwise op on
    adjacent columns of one buffer with inputs laid out alike (else None)."""
    x, y = a.out, b.out
    if a.kind != b.kind or a.kind not in MERGEABLE or x.buf != y.buf or x.stop != y.start:
        return None
    args = []
    for p, q in zip(a.args, b.args, strict=True):
        if isinstance(p, float) and p == q:
            args.append(p)
        elif (isinstance(p, Slot) and isinstance(q, Slot) and p.buf == q.buf and p.stop == q.start
              and p.stop - p.start == x.stop - x.start and (p == x) == (q == y)):
            args.append(Slot(p.buf, p.start, q.stop))
        else:
            return None  # fmt: skip
    out = Slot(x.buf, x.start, y.stop)
    return Step(a.kind, out, tuple(args), a.attrs) if _safe(a.kind, tuple(args), out) else None


def _merged(steps: list[Step]) -> list[Step]:
    """Elementwise steps on adjacent columns (the LSTM's three sigmoid gates, the GRU's r and z
    sums) as one: at the later one's place when nothing between touches what the earlier one
    writes or writes what it reads, else at the earlier one's place when the same holds for
    the later one."""
    out: list[Step] = []
    for step in steps:
        for j in range(len(out) - 1, -1, -1):
            both = _joined(out[j], step) or _joined(step, out[j])
            if both is None:
                continue
            between = out[j + 1 :]
            if all(_commute(out[j], s) for s in between):  # the earlier one, delayed
                del out[j]
                step = both
            elif all(_commute(step, s) for s in between):  # the later one, brought forward
                out[j] = both
                step = None
            else:
                continue
            break
        if step is not None:
            out.append(step)
    return out


def _commute(a: Step, b: Step) -> bool:
    """Whether a and b may run in either order: neither writes what the other reads or writes."""
    reads_a = [x for x in a.args if isinstance(x, Slot)]
    reads_b = [x for x in b.args if isinstance(x, Slot)]
    return not (a.out.overlaps(b.out) or any(a.out.overlaps(x) for x in reads_b)
                or any(b.out.overlaps(x) for x in reads_a))  # fmt: skip
