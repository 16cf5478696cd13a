"""model.safetensors: a trained model in the step layout, read without torch and without pickle.

    write_portable(path, weights, config, tokenizer_dict, run)   # at every new best; `export`
    model = read_portable(path)       # everything checked, then model.weights["layer0.w_h"] ...

Training writes it beside best.pt at every new best; `charlstm export` writes it for any
checkpoint. The numpy engine (npstep.py), the browser page (playground.py) and the ONNX graph
(onnxgraph.py) are all built from it, so none of them needs torch.

The tensors are model/weights.py's `StepWeights`, by name, all float32 (G gate blocks, H
hidden, E embedding, V vocabulary; I = E for layer 0, H above it). Which a layer holds follows
from its cell's parameter roles (cells/base.layer_shapes), for every cell:

    embed          (V, E)
    layer{k}.w_x   (I, G·H)    gate blocks in the cell's BLOCKS order (lstm: i f o g)
    layer{k}.w_h   (H, G·H)
    layer{k}.b     (G·H,)      the input and hidden biases summed (gru: the input bias alone)
    layer{k}.b_h   (G·H,)      gru only: the hidden bias, which the reset gate scales
    layer{k}.p     (3, H)      peephole only: p_i, p_f, p_o
    layer{k}.q     (⌈r/2⌉, H, I)  mogrifier only (r = mogrifier_rounds; absent when empty):
    layer{k}.r     (⌊r/2⌋, I, H)  the matrices of its odd and even rounds
    attention.*    --attention only: model/attention.Attention's tensors by their names
                   (ln_mem/ln_mid/ln_ff/ln_xff/ln_q .weight .bias (H,), q.weight (H, H),
                   q.bias, a_q, a_k, a_v (H,), over.weight (2H, H), over.bias (2H,),
                   up.weight (4H, H), up.bias (4H,))
    head.w         (H, V)      a copy of embed's transpose when the weights are tied
    head.b         (V,)

Its metadata (safetensors keeps string values) is "format" = charlstm-step, "format_version",
"charlstm_version", and as JSON "model_config", "tokenizer" and "run" (step, tokens_seen,
best_val_loss, corpus, train_config: what `info` shows), plus "fingerprint": the model's one
fingerprint (`fingerprint_of`: the model_config, the tokenizer and every tensor's name, dtype,
shape and bytes), and "checksum": files.fingerprint of that fingerprint and the "run" text, so a
file whose tensors or metadata were changed after it was written is refused. (Files written
before "checksum" existed have their "run" checked field by field only.)

The fingerprint is the model's name everywhere: `info` shows it for best.pt and for its model
file alike (checkpoint.weights_fingerprint computes it from best.pt's weights), and the ONNX
graph, the page and every `.clz` file carry it.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from charlstm import __version__
from charlstm.cells import CELLS, cell_options
from charlstm.cells.base import layer_shapes
from charlstm.config import ModelConfig, TrainConfig
from charlstm.data.tokenizer import AnyTokenizer
from charlstm.errors import CharlstmError
from charlstm.files import FileWriteError, Fingerprinter, fingerprint, write_atomic
from charlstm.formats.checks import (
    CheckpointError,
    Invalid,
    check_tokenizer,
    config_from_dict,
    model_config,
    parameter_count,
    require,
    typed,
)
from charlstm.formats.run_folder import BEST, MODEL_FILE

FORMAT = "charlstm-step"
FORMAT_VERSION = 1
# What a model file keeps of a checkpoint besides the model: what `info` shows.
RUN_KEYS = ("step", "tokens_seen", "best_val_loss", "corpus", "train_config")


@dataclass
class Portable:
    """A model file whose contents have been checked (or that is about to be written)."""

    config: ModelConfig
    tokenizer: AnyTokenizer
    weights: dict[str, np.ndarray]  # the layout above, float32
    run: dict[str, Any] = field(default_factory=dict)  # step, best_val_loss, corpus, ...
    path: Path | None = None
    fingerprint: str = ""
    charlstm_version: str = __version__  # the charlstm that wrote it

    @property
    def num_bytes(self) -> int:
        return sum(w.nbytes for w in self.weights.values())


def no_portable_form(cfg: ModelConfig) -> str | None:
    """Why a model of `cfg` has no model file (None when it has one): every cell has one."""
    if cfg.softmax_cutoffs is not None:
        return "an adaptive softmax has no portable form (its output layer is not one matrix)"
    return None


def portable_path(checkpoint: Path) -> Path:
    """Where the model file of a checkpoint goes: model.safetensors beside best.pt, X.safetensors
    beside any other X.pt."""
    if checkpoint.name == BEST:
        return checkpoint.with_name(MODEL_FILE)
    return checkpoint.with_suffix(".safetensors")


def fresh_portable(checkpoint: Path) -> Path | None:
    """The checkpoint's model file if it exists and was written after the checkpoint (training
    writes best.pt first: a model file older than its best.pt is a stale one, left by a crash
    between the two writes, and is not used)."""
    path = portable_path(checkpoint)
    try:
        if path.stat().st_mtime_ns >= checkpoint.stat().st_mtime_ns:
            return path
    except OSError:
        pass
    return None


def expected_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Every tensor a model file of `cfg` holds, with its shape."""
    cell, h, e, v = CELLS[cfg.cell], cfg.hidden_size, cfg.embed_size, cfg.vocab_size
    shapes: dict[str, tuple[int, ...]] = {"embed": (v, e)}
    for k in range(cfg.num_layers):
        layer = layer_shapes(cell, e if k == 0 else h, h, **cell_options(cfg))
        shapes.update({f"layer{k}.{name}": shape for name, shape in layer.items()})
    if cfg.attention:
        shapes.update({f"attention.{n}": shape for n, shape in attention_shapes(h).items()})
    shapes["head.w"] = (h, v)
    shapes["head.b"] = (v,)
    return shapes


def attention_shapes(h: int) -> dict[str, tuple[int, ...]]:
    """The tensors of --attention's block (model/attention.py) by name, with their shapes."""
    shapes: dict[str, tuple[int, ...]] = {}
    for norm in ("ln_mem", "ln_mid", "ln_ff", "ln_xff", "ln_q"):
        shapes.update({f"{norm}.weight": (h,), f"{norm}.bias": (h,)})
    shapes.update({"q.weight": (h, h), "q.bias": (h,), "a_q": (h,), "a_k": (h,), "a_v": (h,),
                   "over.weight": (2 * h, h), "over.bias": (2 * h,),
                   "up.weight": (4 * h, h), "up.bias": (4 * h,)})  # fmt: skip
    return shapes


# ModelConfig fields added after fingerprints were first written, at the value that means the
# model has none of it: left out of the hash, so a model from before keeps its fingerprint (its
# model file stays up to date, its .clz files still decode).
LATER_FIELDS: dict[str, object] = {"attention": 0}


def hashed_config(config: dict[str, Any]) -> dict[str, Any]:
    """The config as fingerprints hash it: LATER_FIELDS at their absent value left out."""
    return {k: v for k, v in config.items()
            if not (k in LATER_FIELDS and v == LATER_FIELDS[k])}  # fmt: skip


def fingerprint_of(
    weights: dict[str, np.ndarray], config: dict[str, Any], tokenizer: dict[str, Any]
) -> str:
    """The model's one fingerprint, 16 hex digits: its config and tokenizer (as saved) and its
    step-layout weights (float32), by name, dtype, shape and bytes."""
    f = Fingerprinter()
    f.update(json.dumps(hashed_config(config), sort_keys=True))
    f.update(json.dumps(tokenizer, sort_keys=True))
    for name in sorted(weights):
        w = np.ascontiguousarray(weights[name])
        f.update(f"\0{name}\0{w.dtype.str}\0{list(w.shape)}\0")
        f.update(w.data.cast("B"))  # the bytes, without a copy
    return f.hex()


def portable_bytes(
    weights: dict[str, np.ndarray],
    config: ModelConfig,
    tokenizer: dict[str, Any],
    run: dict[str, Any] | None = None,
) -> bytes:
    """The model file's bytes: the step-layout tensors (float32) and the metadata above."""
    from safetensors.numpy import save

    if config.softmax_cutoffs is not None:
        raise CharlstmError(
            "a model with an adaptive softmax has no portable form (its output layer is not one "
            "matrix); sample it with --engine torch"
        )
    weights = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in weights.items()}
    shapes = expected_shapes(config)
    assert {k: v.shape for k, v in weights.items()} == shapes, "not the step layout"
    cfg = asdict(config)
    digest, run_text = fingerprint_of(weights, cfg, tokenizer), json.dumps(run or {})
    meta = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "charlstm_version": __version__,
        "model_config": json.dumps(cfg),
        "tokenizer": json.dumps(tokenizer),
        "run": run_text,
        "fingerprint": digest,
        "checksum": fingerprint(digest, "\0", run_text),
    }
    return save(weights, metadata=meta)


def write_portable(
    path: Path,
    weights: dict[str, np.ndarray],
    config: ModelConfig,
    tokenizer: dict[str, Any],
    run: dict[str, Any] | None = None,
) -> Path:
    """Write the model file atomically (files.write_atomic): the old file or the new, never a
    torn one."""
    try:
        write_atomic(path, portable_bytes(weights, config, tokenizer, run))
    except FileWriteError as e:
        raise CheckpointError(str(e)) from e
    return path


def read_portable(path: Path) -> Portable:
    """Read a model file and check all of it before anything is built: its metadata (format,
    version, model_config, tokenizer), every tensor's name, dtype, shape and finiteness against
    the config, and the fingerprint. Raises CheckpointError naming the first problem."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no model file at '{path}'")
    try:
        with safe_open(str(path), framework="numpy") as f:
            meta = f.metadata() or {}
            if meta.get("format") != FORMAT:
                raise CheckpointError(
                    f"'{path}' is a safetensors file but not a charlstm model (it has no "
                    f"charlstm metadata)"
                )
            return _validated(path, meta, f)
    except SafetensorError as e:
        raise CheckpointError(f"'{path}' is truncated or not a safetensors file") from e
    except Invalid as e:
        raise CheckpointError(f"'{path}' is damaged or not usable: {e}") from None
    except (OverflowError, MemoryError, UnicodeError) as e:  # what no real file has
        raise CheckpointError(f"'{path}' is damaged or not usable: {e}") from None
    except OSError as e:
        raise CheckpointError(f"cannot read '{path}': {e.strerror or e}") from None


def _json(meta: dict[str, str], key: str) -> Any:
    from charlstm import safejson

    require(key in meta, f"its metadata has no {key!r}")
    try:
        return safejson.loads(meta[key], f"its metadata's {key!r}")
    except ValueError as e:
        raise Invalid(str(e)) from None


def version_number(text: object, what: str) -> int:
    """A format version written as ASCII digits ("1"; not "²", " 1" or "1e3"), at most 6."""
    ok = isinstance(text, str) and 0 < len(text) <= 6 and text.isascii() and text.isdigit()
    require(ok, f"its {what} is {str(text)[:20]!r}, not a version number")
    return int(str(text))


# tokens.CorpusInfo's fields and types (tokens.py imports torch; a test keeps the two alike).
CORPUS_FIELDS = {"fingerprint": "str", "chars": "int", "sources": "list[str]", "n_sources": "int",
                 "tokenizer": "str", "n_train": "int | None", "val_chars": "int | None",
                 "skipped": "list[list[str]]", "n_skipped": "int", "val_file": "str | None",
                 "items": "int | None"}  # fmt: skip


def check_run(run: object) -> dict[str, Any]:
    """A model file's "run" record, every field of the type a checkpoint gives it."""
    require(isinstance(run, dict), "its metadata's 'run' is no JSON object")
    assert isinstance(run, dict)
    for key, value in run.items():
        require(key in RUN_KEYS, f"its run record has an unknown field {key!r}")
        if key in ("step", "tokens_seen"):
            require(type(value) is int and value >= 0, f"its run's {key} is {str(value)[:20]!r}")
        elif key == "best_val_loss":
            ok = type(value) in (int, float) and math.isfinite(value)
            require(ok, f"its run's best_val_loss is {str(value)[:20]!r}")
        elif key == "corpus":
            require(isinstance(value, dict) and all(
                k in CORPUS_FIELDS and typed(v, CORPUS_FIELDS[k]) for k, v in value.items()),
                "its run's corpus is damaged")  # fmt: skip
        else:
            config_from_dict(TrainConfig, value, "its run's train_config")
    return run


def _validated(path: Path, meta: dict[str, str], f: Any) -> Portable:
    version = version_number(meta.get("format_version", ""), "format_version")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"'{path}' has model file format {version}, newer than this charlstm {__version__} "
            f"reads ({FORMAT_VERSION}); upgrade charlstm"
        )
    cfg_dict = _json(meta, "model_config")
    config = model_config(cfg_dict)
    why = no_portable_form(config)
    require(why is None, str(why))
    tok_dict = _json(meta, "tokenizer")
    tokenizer = check_tokenizer(tok_dict, config)
    run = check_run(_json(meta, "run") if "run" in meta else {})
    shapes = expected_shapes(config)
    names = set(f.keys())
    missing = [k for k in shapes if k not in names]
    if missing:
        raise Invalid(f"the tensor {missing[0]!r} that its model_config needs is missing")
    extra = sorted(names - set(shapes))
    require(not extra, f"it holds tensors the model does not have: {extra[:3]}")
    weights = {}
    for name, shape in shapes.items():
        piece = f.get_slice(name)
        dtype, got = piece.get_dtype(), tuple(piece.get_shape())
        require(dtype == "F32", f"the tensor {name!r} holds {dtype}, not float32")
        require(got == shape, f"the tensor {name!r} is {got}, its model_config needs {shape}")
        w = f.get_tensor(name)
        require(bool(np.isfinite(w).all()), f"the tensor {name!r} holds NaN or infinity")
        weights[name] = w
    digest = fingerprint_of(weights, cfg_dict, tok_dict)
    require(meta.get("fingerprint") == digest,
            "its tensors or metadata were changed after it was written (fingerprint "
            f"{meta.get('fingerprint')!r}, contents {digest!r})")  # fmt: skip
    if "checksum" in meta:
        require(meta["checksum"] == fingerprint(digest, "\0", meta.get("run", "{}")),
                "its metadata's 'run' was changed after it was written")  # fmt: skip
    return Portable(config, tokenizer, weights, run, path, digest, meta.get("charlstm_version", ""))


def describe_portable(model: Portable) -> dict[str, Any]:
    """What a model file holds, as checkpoint.describe says it of a checkpoint (`info --json`)."""
    cfg, run = model.config, model.run
    return {
        "path": str(model.path),
        "charlstm_version": model.charlstm_version,
        "format_version": FORMAT_VERSION,
        "model": asdict(cfg),
        "parameters": parameter_count(cfg),
        "tokenizer": {"kind": model.tokenizer.kind, "vocab_size": cfg.vocab_size},
        "corpus": run.get("corpus"),
        "steps": run.get("step"),
        "tokens_seen": run.get("tokens_seen"),
        "best_val_loss": run.get("best_val_loss"),
        "train_config": run.get("train_config"),
        "metrics": [],
        "train_curve": [],
        "parent": None,
        "resumable": False,
        "fingerprint": model.fingerprint,
    }
