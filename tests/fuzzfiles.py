"""Hostile versions of the files charlstm reads: model.safetensors, run.json and the tokenizer
inside a model file or checkpoint. Each case is a pure function of (pristine file, case number),
so a failing case can be rebuilt alone. Shared by tests/test_hostile_files.py (hundreds of
cases) and benchmarks/fuzz_files.py (thousands).

An attacker can compute the fingerprint and checksum of what they write, so most edited files
are signed again (`_signed`): those reach the checks behind the fingerprint.
"""

from __future__ import annotations

import copy
import json
import random
import struct
from typing import Any

import numpy as np

from charlstm.files import fingerprint
from charlstm.formats.model_file import fingerprint_of

# Values a field may be replaced by: every JSON type, edges of every range, text that looks
# like a number.
VALUES: list[Any] = [None, "x", "", -1, 0, 1, 10**12, 2**31 - 1, -(2**63), 2.5, 1e308, -0.0,
                     True, False, [], [1, "a"], {}, {"a": 1}, "²", "١", "1e3", " 1", "0x10",
                     "\u0000", "a" * 5000]  # fmt: skip
VERSIONS = ["²", "١", "", " 1", "1 ", "1e3", "-1", "0", "2", "99999999999999999999", "1.0",
            "01", "𝟏", "⁰", "0x1", "true", "1\n"]  # fmt: skip
# Pre-tokenizers an attacker would like the Rust library to run (catastrophic backtracking,
# huge repetition counts) and settings charlstm never writes.
HOSTILE_PRE = [
    {"type": "Split", "pattern": {"Regex": "(a+)+$"}, "behavior": "Isolated", "invert": False},
    {"type": "Split", "pattern": {"Regex": "(?:(?:(?:a*)*)*)*b"}, "behavior": "Isolated",
     "invert": False},
    {"type": "Split", "pattern": {"Regex": "a{1000000000}"}, "behavior": "Isolated",
     "invert": False},
    {"type": "Split", "pattern": {"Regex": "("}, "behavior": "Isolated", "invert": False},
    {"type": "Whitespace"},
    {"type": "Sequence", "pretokenizers": [{"type": "ByteLevel", "add_prefix_space": True,
                                            "trim_offsets": True, "use_regex": True}]},
    None,
]  # fmt: skip
DEEP = "[" * 100_000 + "]" * 100_000


def _paths(obj: object, prefix: tuple = ()) -> list[tuple]:
    """Every place in a JSON value (long lists and dicts: the first 4)."""
    found = [prefix] if prefix else []
    if isinstance(obj, dict):
        for k in list(obj)[:4] + list(obj)[-2:]:
            found += _paths(obj[k], (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj[:4]):
            found += _paths(v, (*prefix, i))
    return found


def _edit(obj: Any, rng: random.Random) -> Any:
    """`obj` (a JSON value) with one place deleted or replaced."""
    out = copy.deepcopy(obj)
    paths = _paths(out)
    if not paths:
        return rng.choice(VALUES)
    path = rng.choice(paths)
    parent = out
    for key in path[:-1]:
        parent = parent[key]
    if rng.random() < 0.15 and isinstance(parent, dict):
        del parent[path[-1]]
    elif rng.random() < 0.1:
        parent[path[-1]] = json.loads("[" * 40 + "]" * 40)  # deeper than any file of ours
    else:
        parent[path[-1]] = rng.choice(VALUES)
    return out


# ------------------------------------------------------------------------------- safetensors


def split_safetensors(blob: bytes) -> tuple[dict[str, Any], bytes]:
    (n,) = struct.unpack("<Q", blob[:8])
    return json.loads(blob[8 : 8 + n]), blob[8 + n :]


def join_safetensors(header: dict[str, Any], payload: bytes) -> bytes:
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + payload


def _weights(header: dict[str, Any], payload: bytes) -> dict[str, np.ndarray] | None:
    out = {}
    try:
        for name, t in header.items():
            if name == "__metadata__":
                continue
            if t["dtype"] != "F32":
                return None
            a, b = t["data_offsets"]
            out[name] = np.frombuffer(payload[a:b], np.float32).reshape(t["shape"])
    except (KeyError, ValueError, TypeError):
        return None
    return out


def _signed(header: dict[str, Any], payload: bytes) -> dict[str, Any]:
    """The header with its fingerprint and checksum recomputed, where its contents allow."""
    meta = header.get("__metadata__")
    weights = _weights(header, payload)
    if not isinstance(meta, dict) or weights is None:
        return header
    try:
        cfg = json.loads(meta["model_config"])
        tok = json.loads(meta["tokenizer"])
        digest = fingerprint_of(weights, cfg, tok)
        checksum = fingerprint(digest, "\0", meta.get("run", "{}"))
    except Exception:  # noqa: BLE001 (whatever the edit broke: leave it unsigned)
        return header
    meta["fingerprint"] = digest
    meta["checksum"] = checksum
    return header


def _edit_tokenizer(tok: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """A tokenizer dict ({"kind", "chars" | "json"}) with its contents edited as an attacker
    would: ids huge, sparse or repeated, keys the merges cannot make, a regex of their own."""
    tok = dict(tok)
    if tok.get("kind") == "char":
        chars = tok["chars"]
        tok["chars"] = rng.choice([chars + chars[0], chars[:-1] + "\U0010ffff", chars[::-1],
                                   chars[:-1] + "\ud800", "", chars * 2, 5])  # fmt: skip
        return tok
    inner = json.loads(tok["json"])
    vocab = inner["model"]["vocab"]
    keys = list(vocab)
    how = rng.randrange(10)
    if how == 0:
        vocab[rng.choice(keys)] = 2**31 - 1
    elif how == 1:
        vocab[keys[-1]] = len(vocab) + rng.choice([1, 1000, 10**9])  # sparse
    elif how == 2:
        vocab[keys[-1]] = vocab[keys[0]]  # repeated
    elif how == 3:
        del vocab[rng.choice(keys)]
    elif how == 4:
        vocab[rng.choice(["zq", "\u0100\u0101", "é", "ab c", "\t"])] = len(vocab)
    elif how == 5:
        inner["pre_tokenizer"] = rng.choice(HOSTILE_PRE)
    elif how == 6:
        inner["normalizer"] = {"type": "Replace", "pattern": {"Regex": "(a|a)*$"}, "content": ""}
    elif how == 7 and "merges" in inner["model"]:
        merges = inner["model"]["merges"]
        if merges:
            merges[rng.randrange(len(merges))] = rng.choice(
                [["zz", "q"], ["a"], "a b c", 5, ["", ""], [1, 2]])
        else:
            merges.append(["a", "b"])
    elif how == 8:
        inner = _edit(inner, rng)
    else:
        inner["added_tokens"] = [{"id": 2**31 - 1, "content": "x", "single_word": False,
                                  "lstrip": False, "rstrip": False, "normalized": False,
                                  "special": True}]  # fmt: skip
    tok["json"] = json.dumps(inner) if rng.random() < 0.95 else DEEP
    return tok


META_KEYS = ("model_config", "tokenizer", "run")


def hostile_safetensors(pristine: bytes, case: int) -> bytes:
    """Case number `case` of a damaged model file made from `pristine`."""
    rng = random.Random(case)
    header, payload = split_safetensors(pristine)
    meta = header["__metadata__"]
    kind = case % 8
    sign = rng.random() < 0.8
    if kind == 0:  # a JSON field of the metadata edited
        key = rng.choice(META_KEYS)
        meta[key] = json.dumps(_edit(json.loads(meta[key]), rng))
    elif kind == 1:  # the tokenizer edited
        meta["tokenizer"] = json.dumps(_edit_tokenizer(json.loads(meta["tokenizer"]), rng))
    elif kind == 2:  # nesting, sizes, non-JSON
        key = rng.choice([*META_KEYS, "fingerprint", "format_version"])
        meta[key] = rng.choice([DEEP, '{"a":' * 5000 + "1" + "}" * 5000, "not json", "",
                                "[" * 31 + "]" * 31, "9" * 5000, "NaN", '{"step": Infinity}',
                                "\ud800"])  # fmt: skip
    elif kind == 3:  # the version
        meta["format_version"] = rng.choice(VERSIONS)
    elif kind == 4:  # metadata keys removed or foreign
        victim = rng.choice([*meta, "__all__"])
        if victim == "__all__":
            header.pop("__metadata__")
        elif rng.random() < 0.5:
            meta.pop(victim)
        else:
            meta[victim] = rng.choice(["charlstm-step", "1", "{}", "[]", "null"])
    elif kind == 5:  # a tensor's header entry
        name = rng.choice([k for k in header if k != "__metadata__"])
        t = header[name]
        how = rng.randrange(7)
        if how == 0:
            t["dtype"] = rng.choice(["F16", "F64", "I64", "BOOL", "U8", "BF16", "X"])
        elif how == 1:
            t["shape"] = rng.choice([[2**40], [2**31 - 1, 2**31 - 1], [-1], [], [0],
                                     [*t["shape"], 1], t["shape"][::-1]])  # fmt: skip
        elif how == 2:
            a, b = t["data_offsets"]
            t["data_offsets"] = rng.choice([[a, b + 4], [a + 4, b], [b, a], [0, 2**62], [a, a]])
        elif how == 3:
            del header[name]
        elif how == 4:
            header["extra"] = {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}
        elif how == 5:
            t.pop(rng.choice(["dtype", "shape", "data_offsets"]))
        else:
            header[name] = rng.choice(VALUES)
    elif kind == 6:  # weights: NaN, infinity, or bytes flipped
        name = rng.choice([k for k in header if k != "__metadata__"])
        a, _ = header[name]["data_offsets"]
        value = rng.choice([np.nan, np.inf, -np.inf, 1e38, 0.0])
        payload = payload[:a] + np.float32(value).tobytes() + payload[a + 4 :]
    else:  # the raw bytes: truncated, flipped, lengths lied about
        blob = join_safetensors(_signed(header, payload) if sign else header, payload)
        how = rng.randrange(4)
        if how == 0:
            return blob[: rng.randrange(len(blob))]
        if how == 1:
            b = bytearray(blob)
            for _ in range(rng.randrange(1, 8)):
                b[rng.randrange(len(b))] = rng.randrange(256)
            return bytes(b)
        if how == 2:
            return struct.pack("<Q", rng.choice([0, 1, 2**63, len(blob), 2**32])) + blob[8:]
        return blob + bytes(rng.randrange(1, 64))
    return join_safetensors(_signed(header, payload) if sign else header, payload)


# --------------------------------------------------------------------------------- run.json


def hostile_run_json(pristine: str, case: int) -> bytes:
    """Case number `case` of a damaged run.json made from `pristine`."""
    rng = random.Random(case)
    info = json.loads(pristine)
    kind = case % 4
    if kind in (0, 1):
        return json.dumps(_edit(info, rng)).encode()
    if kind == 2:
        return rng.choice([DEEP, "not json", "", "[]", "null", "7", '"text"', "NaN",
                           '{"step": Infinity}', '{"model": {"cell": "lstm"}}', "{" * 50]).encode()
    b = bytearray(pristine.encode())
    how = rng.randrange(3)
    if how == 0:
        return bytes(b[: rng.randrange(len(b))])
    if how == 1:
        for _ in range(rng.randrange(1, 6)):
            b[rng.randrange(len(b))] = rng.randrange(256)
        return bytes(b)
    return bytes(b) + b"\xff\xfe" * rng.randrange(1, 10)


def hostile_tokenizer(pristine: dict[str, Any], case: int) -> dict[str, Any]:
    """Case number `case` of a damaged tokenizer dict (as checkpoints and model files hold)."""
    rng = random.Random(case)
    if case % 3 == 0:
        return _edit(pristine, rng)
    return _edit_tokenizer(pristine, rng)


KINDS = ("char", "word", "bpe")


def train_tiny_runs(home: Any, app: Any, play: str) -> None:
    """Three tiny runs, char, word and bpe, under home/ck: what the hostile files are made from
    (the suite's test and benchmarks/fuzz_files.py)."""
    from click.testing import CliRunner

    (home / "play.txt").write_text(play)
    for kind in KINDS:
        vocab = {"char": [], "word": ["--vocab-size", "40"], "bpe": ["--vocab-size", "280"]}[kind]
        r = CliRunner().invoke(app, ["train", str(home / "play.txt"), "--steps", "4",
                                     "--eval-every", "2", "--name", kind, "--tokenizer", kind,
                                     *vocab, "--checkpoints", str(home / "ck"), "--hidden", "8",
                                     "--layers", "1", "-b", "2", "-t", "8", "--threads", "1",
                                     "-q"])  # fmt: skip
        assert r.exit_code == 0, r.stderr
