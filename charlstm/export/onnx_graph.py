"""The one-token step as an ONNX graph: `charlstm export --onnx model.onnx`.

    inputs   token  int64 (B,)        h  float32 (L, B, H)      c  float32 (L, B, H) ...
    outputs  logits float32 (B, V)    h_out (L, B, H)           c_out (L, B, H) ...
                                  (the state parts are the cell's STATE, each by its name, h
                                   first: lstm h, c; gru and rnn h; slstm h, c, n, m)

B is free. Start from zeros, feed each output state back as the next input; the logits are
the next token's unnormalised log-probabilities, as `charlstm` computes them. The model's
metadata_props (onnxruntime: `session.get_modelmeta().custom_metadata_map`) carry what turns
text into ids and back, so the file is enough on its own:

    fingerprint       the model's one fingerprint (portable.fingerprint_of), as `info` shows it
    pieces            JSON list: each token id's text (a char model: its characters)
    tokenizer         JSON: the tokenizer as model.safetensors saves it ({"kind", "chars" |
                      "json"}: a word or BPE tokenizer loads with tokenizers.Tokenizer.from_str)
    model_config      JSON: cell, layers, hidden size, vocabulary size, ...
    charlstm_version  the charlstm that exported it
 The graph is
written node by node from the model file's step layout (portable.py), the same equations as
every engine runs, for any cell: each layer is the cell's traced step (export/trace.py), its
operations mapped one to one onto nodes (`_NODES`), its parameters initializers named
layer{k}.NAME. The engine's part is what a plan leaves to it: layer 0's input projection (a
row of the embed · w_x + b table when the numpy engine would make one, else embed[token] @
w_x + b; the embedding itself for an input-gated cell), a higher layer's from the layer below,
and the head. Exporting needs the `onnx` package and no torch. Opset 17, IR version 8:
onnxruntime 1.11 on.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

import numpy as np

from charlstm import __version__
from charlstm.errors import CharlstmError
from charlstm.export.trace import Plan, layer_params, model_plan
from charlstm.formats.model_file import Portable
from charlstm.generate.numpy_engine import table_fits

OPSET, IR_VERSION = 17, 8

# A plan's operation -> its ONNX node (split and log_sigmoid are written out in `_layer`).
_NODES = {"matmul": "MatMul", "add": "Add", "sub": "Sub", "mul": "Mul", "div": "Div",
          "sigmoid": "Sigmoid", "tanh": "Tanh", "exp": "Exp", "maximum": "Max",
          "gt": "Greater", "where": "Where"}  # fmt: skip


class _Graph:
    """Nodes and initializers, each value named once."""

    def __init__(self, helper: Any, numpy_helper: Any) -> None:
        self.helper, self.numpy_helper = helper, numpy_helper
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self.count = 0
        self.scalars: dict[float, str] = {}

    def const(self, name: str, value: np.ndarray) -> str:
        # (not ascontiguousarray: it turns a 0-d index into shape (1,))
        self.initializers.append(self.numpy_helper.from_array(np.array(value, order="C"), name))
        return name

    def scalar(self, value: float) -> str:
        """A float32 constant of shape (), which broadcasts against anything; one per value."""
        if value not in self.scalars:
            self.scalars[value] = self.const(f"const{len(self.scalars)}", np.float32(value))
        return self.scalars[value]

    def op(self, kind: str, *inputs: str, outputs: int = 1, name: str | None = None,
           **attrs: Any) -> Any:  # fmt: skip
        self.count += 1
        outs = [name] if name else [f"{kind.lower()}_{self.count}_{i}" for i in range(outputs)]
        self.nodes.append(self.helper.make_node(kind, list(inputs), outs, **attrs))
        return outs[0] if outputs == 1 else outs


def _layer(g: _Graph, plan: Plan, values: dict[str, str]) -> list[str]:
    """The plan's operations as nodes. `values` maps the plan's inputs and parameters to ONNX
    values, and gains every symbol the plan makes; returns the new state's values, h first."""
    for op in plan.ops:
        args = [values[a] if isinstance(a, str) else g.scalar(a) for a in op.args]
        if op.kind == "split":  # n equal blocks of the last axis (opset 13-17's default)
            outs = g.op("Split", *args, outputs=op.attrs["n"], axis=-1)
        elif op.kind == "log_sigmoid":  # log σ(x) = −softplus(−x), exact for large |x|
            outs = g.op("Neg", g.op("Softplus", g.op("Neg", *args)))
        else:
            outs = g.op(_NODES[op.kind], *args)
        values.update(zip(op.out, [outs] if isinstance(outs, str) else outs, strict=True))
    return [values[s] for s in plan.outputs]


def onnx_bytes(model: Portable) -> bytes:
    """The serialized ONNX model of one step of `model`."""
    try:
        import onnx
        from onnx import TensorProto, helper, numpy_helper
    except ImportError:
        raise CharlstmError("--onnx needs the onnx package: pip install 'charlstm[onnx]'") from None
    cfg, w = model.config, model.weights
    cell, hid, layers = cfg.cell, cfg.hidden_size, cfg.num_layers
    plan = model_plan(cfg)
    parts = plan.inputs[1:]  # the state's names, h first
    gated = plan.inputs[0] == "x"  # the step projects its input itself
    g = _Graph(helper, numpy_helper)

    def projection(k: int, x: str) -> str:  # x @ w_x + b of layer k
        w_x = g.const(f"layer{k}.w_x", w[f"layer{k}.w_x"])
        return g.op("Add", g.op("MatMul", x, w_x), g.const(f"layer{k}.b", w[f"layer{k}.b"]))

    # Layer 0's input: a row of the table embed · w_x + b, or the embedding (projected).
    width = w["layer0.w_x"].shape[1]
    if not gated and table_fits(cfg.vocab_size, width, w["embed"].size, w["layer0.w_x"].size):
        table = w["embed"] @ w["layer0.w_x"] + w["layer0.b"]
        below = g.op("Gather", g.const("table", table.astype(np.float32)), "token", axis=0)
    else:
        below = g.op("Gather", g.const("embed", w["embed"]), "token", axis=0)
        below = below if gated else projection(0, below)
    new_state: dict[str, list[str]] = {s: [] for s in parts}
    for k in range(layers):
        index = g.const(f"index{k}", np.array(k, dtype=np.int64))
        values = {s: g.op("Gather", s, index, axis=0) for s in parts}  # (B, H) each
        values[plan.inputs[0]] = below if gated or k == 0 else projection(k, below)
        p = layer_params(cell, w, k)
        values.update({n: g.const(f"layer{k}.{n}", p[n]) for n in plan.params})
        axis0 = g.const(f"axis{k}", np.array([0], dtype=np.int64))
        out = _layer(g, plan, values)
        for s, v in zip(parts, out, strict=True):
            new_state[s].append(g.op("Unsqueeze", v, axis0))
        below = out[0]  # h: the next layer's input
    for s in parts:
        g.op("Concat", *new_state[s], axis=0, name=f"{s}_out")
    g.op("Add", g.op("MatMul", below, g.const("head.w", w["head.w"])),
         g.const("head.b", w["head.b"]), name="logits")  # fmt: skip

    f32, state = TensorProto.FLOAT, [layers, "batch", hid]
    inputs = [helper.make_tensor_value_info("token", TensorProto.INT64, ["batch"])]
    inputs += [helper.make_tensor_value_info(s, f32, state) for s in parts]
    outputs = [helper.make_tensor_value_info("logits", f32, ["batch", cfg.vocab_size])]
    outputs += [helper.make_tensor_value_info(f"{s}_out", f32, state) for s in parts]
    graph = helper.make_graph(g.nodes, f"charlstm_{cell}_step", inputs, outputs, g.initializers)
    onnx_model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        ir_version=IR_VERSION,
        producer_name="charlstm",
        doc_string=f"one step of a {cell} {layers}×{hid} model, fingerprint {model.fingerprint}",
    )
    tok = model.tokenizer
    helper.set_model_props(onnx_model, {
        "fingerprint": model.fingerprint,
        "pieces": json.dumps([tok.piece(i) for i in range(cfg.vocab_size)]),
        "tokenizer": json.dumps(tok.to_dict()),
        "model_config": json.dumps(asdict(cfg)),
        "charlstm_version": __version__,
    })  # fmt: skip
    onnx.checker.check_model(onnx_model)
    return onnx_model.SerializeToString()
