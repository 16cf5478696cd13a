"""The one-token step as an ONNX graph: `charlstm export --onnx model.onnx`.

    inputs   token  int64 (B,)        h  float32 (L, B, H)      c  float32 (L, B, H) *
    outputs  logits float32 (B, V)    h_out (L, B, H)           c_out (L, B, H) *
                                                    (* cells with a memory cell: lstm, peephole,
                                                       coupled; gru and rnn carry h alone)

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
npstep.py and step.py (layer 0's input projection as a table when step.py would make one), so
exporting needs the `onnx` package and no torch. Opset 17, IR version 8: onnxruntime 1.11 on.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

import numpy as np

from charlstm import __version__
from charlstm.errors import CharlstmError
from charlstm.formats.model_file import Portable
from charlstm.generate.numpy_engine import CELLS_WITH_MEMORY, table_fits

OPSET, IR_VERSION = 17, 8


class _Graph:
    """Nodes and initializers, each value named once."""

    def __init__(self, helper: Any, numpy_helper: Any) -> None:
        self.helper, self.numpy_helper = helper, numpy_helper
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self.count = 0

    def const(self, name: str, value: np.ndarray) -> str:
        # (not ascontiguousarray: it turns a 0-d index into shape (1,))
        self.initializers.append(self.numpy_helper.from_array(np.array(value, order="C"), name))
        return name

    def op(self, kind: str, *inputs: str, outputs: int = 1, name: str | None = None,
           **attrs: Any) -> Any:  # fmt: skip
        self.count += 1
        outs = [name] if name else [f"{kind.lower()}_{self.count}_{i}" for i in range(outputs)]
        self.nodes.append(self.helper.make_node(kind, list(inputs), outs, **attrs))
        return outs[0] if outputs == 1 else outs


def onnx_bytes(model: Portable) -> bytes:
    """The serialized ONNX model of one step of `model`."""
    try:
        import onnx
        from onnx import TensorProto, helper, numpy_helper
    except ImportError:
        raise CharlstmError("--onnx needs the onnx package: pip install 'charlstm[onnx]'") from None
    cfg, w = model.config, model.weights
    cell, hid, layers = cfg.cell, cfg.hidden_size, cfg.num_layers
    memory = cell in CELLS_WITH_MEMORY
    g = _Graph(helper, numpy_helper)
    gates = w["layer0.w_x"].shape[1] // hid
    split = g.const("split_gates", np.full(gates, hid, dtype=np.int64)) if gates > 1 else ""

    def matmul_add(x: str, weight: str, bias: str) -> str:
        return g.op("Add", g.op("MatMul", x, weight), bias)

    # Layer 0's input projection: a row of the table, or embed · w_x + b.
    if table_fits(cfg.vocab_size, gates * hid, w["embed"].size, w["layer0.w_x"].size):
        table = w["embed"] @ w["layer0.w_x"] + w["layer0.b"]
        x0 = g.op("Gather", g.const("table", table.astype(np.float32)), "token", axis=0)
    else:
        emb = g.op("Gather", g.const("embed", w["embed"]), "token", axis=0)
        x0 = matmul_add(emb, g.const("layer0.w_x", w["layer0.w_x"]),
                        g.const("layer0.b", w["layer0.b"]))  # fmt: skip
    new_h, new_c, below = [], [], ""
    for k in range(layers):
        index = g.const(f"index{k}", np.array(k, dtype=np.int64))
        h = g.op("Gather", "h", index, axis=0)  # (B, H)
        c = g.op("Gather", "c", index, axis=0) if memory else ""
        if k == 0:
            z = x0
        else:
            z = matmul_add(below, g.const(f"layer{k}.w_x", w[f"layer{k}.w_x"]),
                           g.const(f"layer{k}.b", w[f"layer{k}.b"]))  # fmt: skip
        w_h = g.const(f"layer{k}.w_h", w[f"layer{k}.w_h"])
        if cell == "gru":
            zh = matmul_add(h, w_h, g.const(f"layer{k}.b_h", w[f"layer{k}.b_h"]))
            z_r, z_z, z_n = g.op("Split", z, split, outputs=3, axis=1)
            h_r, h_z, h_n = g.op("Split", zh, split, outputs=3, axis=1)
            r = g.op("Sigmoid", g.op("Add", z_r, h_r))
            u = g.op("Sigmoid", g.op("Add", z_z, h_z))
            n = g.op("Tanh", g.op("Add", z_n, g.op("Mul", r, h_n)))
            h = g.op("Add", n, g.op("Mul", u, g.op("Sub", h, n)))  # torch's (1 − z') n + z' h
        else:
            z = g.op("Add", z, g.op("MatMul", h, w_h))
            if cell == "rnn":
                h = g.op("Tanh", z)
            elif cell == "lstm":  # [ i | f | o | g ]
                i, f, o, cand = g.op("Split", z, split, outputs=4, axis=1)
                i, f, o = (g.op("Sigmoid", v) for v in (i, f, o))
                c = g.op("Add", g.op("Mul", f, c), g.op("Mul", i, g.op("Tanh", cand)))
                h = g.op("Mul", o, g.op("Tanh", c))
            elif cell == "peephole":  # [ i | f | g | o ]; o sees the new cell
                i, f, cand, o = g.op("Split", z, split, outputs=4, axis=1)
                p = w[f"layer{k}.p"]
                p_i, p_f, p_o = (g.const(f"layer{k}.p_{n}", p[j]) for j, n in enumerate("ifo"))
                i = g.op("Sigmoid", g.op("Add", i, g.op("Mul", c, p_i)))
                f = g.op("Sigmoid", g.op("Add", f, g.op("Mul", c, p_f)))
                c = g.op("Add", g.op("Mul", f, c), g.op("Mul", i, g.op("Tanh", cand)))
                o = g.op("Sigmoid", g.op("Add", o, g.op("Mul", c, p_o)))
                h = g.op("Mul", o, g.op("Tanh", c))
            else:  # coupled, [ f | o | g ]: c = g + f ⊙ (c − g)
                f, o, cand = g.op("Split", z, split, outputs=3, axis=1)
                f, o, cand = g.op("Sigmoid", f), g.op("Sigmoid", o), g.op("Tanh", cand)
                c = g.op("Add", cand, g.op("Mul", f, g.op("Sub", c, cand)))
                h = g.op("Mul", o, g.op("Tanh", c))
        axis0 = g.const(f"axis{k}", np.array([0], dtype=np.int64))
        new_h.append(g.op("Unsqueeze", h, axis0))
        if memory:
            new_c.append(g.op("Unsqueeze", c, axis0))
        below = h
    g.op("Concat", *new_h, axis=0, name="h_out")
    if memory:
        g.op("Concat", *new_c, axis=0, name="c_out")
    g.op("Add", g.op("MatMul", below, g.const("head.w", w["head.w"])),
         g.const("head.b", w["head.b"]), name="logits")  # fmt: skip

    f32, state = TensorProto.FLOAT, [layers, "batch", hid]
    inputs = [helper.make_tensor_value_info("token", TensorProto.INT64, ["batch"]),
              helper.make_tensor_value_info("h", f32, state)]  # fmt: skip
    outputs = [helper.make_tensor_value_info("logits", f32, ["batch", cfg.vocab_size]),
               helper.make_tensor_value_info("h_out", f32, state)]  # fmt: skip
    if memory:
        inputs.append(helper.make_tensor_value_info("c", f32, state))
        outputs.append(helper.make_tensor_value_info("c_out", f32, state))
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
