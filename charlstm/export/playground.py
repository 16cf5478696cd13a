"""One self-contained HTML page that runs a char model in the browser: `charlstm export --html`.

The page (playground.html) holds the model file's tensors as base64 float32, its description
and each layer's traced step (export/trace.py's plan) as JSON, and in plain JavaScript an
interpreter of plans and the sampling rule (playground.js, also run by the tests under Node):
no network, no external script or font, so it works opened from disk. A prime box,
temperature and top-p, a length and a seed, Generate and Stop; text streams in as it is made,
with the characters per second.

    page = build_page(read_portable(Path("checkpoints/run/model.safetensors")))
"""

from __future__ import annotations

import base64
import html
import json
import re
from importlib.resources import files
from typing import Any

import numpy as np

from charlstm.errors import CharlstmError
from charlstm.export.trace import layer_params, model_plan
from charlstm.formats.checks import parameter_count
from charlstm.formats.model_file import Portable


def page_weights(model: Portable) -> dict[str, np.ndarray]:
    """What the page reads: embed and head.*, and each layer's parameters by the names its plan
    reads (layer{k}.NAME, through the cell's bind), with w_x and b for the input projection
    unless the step projects its input itself."""
    plan, w = model_plan(model.config), model.weights
    names = plan.params if plan.inputs[0] == "x" else ("w_x", "b", *plan.params)
    out = {"embed": w["embed"]}
    for k in range(model.config.num_layers):
        p = layer_params(model.config.cell, w, k)
        out.update({f"layer{k}.{n}": p[n] for n in dict.fromkeys(names)})
    return out | {"head.w": w["head.w"], "head.b": w["head.b"]}


def weights_blob(model: Portable) -> tuple[bytes, dict[str, Any]]:
    """The page's tensors (page_weights) as one little-endian float32 buffer, and where each
    lies in it: {name: [offset in floats, shape]}."""
    parts, tensors, offset = [], {}, 0
    for name, w in page_weights(model).items():
        parts.append(np.ascontiguousarray(w, dtype="<f4").tobytes())
        tensors[name] = [offset, list(w.shape)]
        offset += w.size
    return b"".join(parts), tensors


def page_meta(model: Portable, tensors: dict[str, Any]) -> dict[str, Any]:
    """What the page's script needs besides the weights."""
    cfg, tok = model.config, model.tokenizer
    newline = tok.encode("\n", skip_unknown=True)
    params = parameter_count(cfg)  # as `info` counts them
    name = model.path.parent.name if model.path is not None else "model"
    return {
        "cell": cfg.cell,
        "num_layers": cfg.num_layers,
        "hidden_size": cfg.hidden_size,
        "embed_size": cfg.embed_size,
        "vocab_size": cfg.vocab_size,
        "pieces": [tok.piece(i) for i in range(cfg.vocab_size)],
        "newline": int(newline[-1]) if len(newline) else 0,
        "tensors": tensors,
        "plans": [model_plan(cfg).to_json() for _ in range(cfg.num_layers)],  # layer k's step
        "fingerprint": model.fingerprint,
        "description": f"{name} · {cfg.cell} {cfg.num_layers}×{cfg.hidden_size} · "
        f"{cfg.vocab_size} characters · {params:,} parameters · fingerprint {model.fingerprint}",
    }


def _script_json(data: Any) -> str:
    """JSON that cannot end its <script> element early."""
    return json.dumps(data, ensure_ascii=False).replace("<", "\\u003c")


def build_page(model: Portable) -> str:
    """The page's HTML (char models: the page turns typed text into ids itself)."""
    if model.tokenizer.kind != "char":
        raise CharlstmError(
            f"the page runs char models; this one is {model.tokenizer.kind} (export --onnx works "
            "for any model)"
        )
    blob, tensors = weights_blob(model)
    meta = page_meta(model, tensors)
    here = files(__package__)
    template = (here / "playground.html").read_text(encoding="utf-8")
    script = (here / "playground.js").read_text(encoding="utf-8")
    title = html.escape(f"charlstm playground · {meta['description']}")
    parts = {
        "__TITLE__": title,
        "__META__": _script_json(meta),
        "/*__PLAYGROUND_JS__*/": script,
        "__WEIGHTS__": base64.b64encode(blob).decode("ascii"),
    }
    # One pass, so that no placeholder is looked for inside what replaced another.
    pattern = "|".join(re.escape(key) for key in parts)
    return re.sub(pattern, lambda m: parts[m.group(0)], template)
