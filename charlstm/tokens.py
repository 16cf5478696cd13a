"""Corpus text → the token ids a run trains on: split off the validation tail, train the
tokenizer on the training part, encode both parts, and cache the result on disk keyed by the
corpus content and the tokenizer settings, so a second run on the same corpus skips all of it.

Bits per character must compare across tokenizers, so the characters the validation tokens
spell are counted here, from the text, where they are known exactly.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from charlstm.data import DataError
from charlstm.tokenizer import AnyTokenizer, tokenizer_from_dict, train_tokenizer

CACHE_FORMAT = 1
MIN_CACHED_CHARS = 1 << 20  # below ~1 MB tokenizing takes well under a second: not worth a file


@dataclass(frozen=True)
class TokenizedCorpus:
    tokenizer: AnyTokenizer
    ids: np.ndarray  # the training tokens, then the validation tokens
    n_train: int  # ids[:n_train] train, ids[n_train:] validate
    val_chars: int  # characters spelled by the validation tokens after the first
    cached: bool  # read from the cache instead of computed

    @property
    def train_ids(self) -> np.ndarray:
        return self.ids[: self.n_train]

    @property
    def val_ids(self) -> np.ndarray:
        return self.ids[self.n_train :]


def split_text(text: str, val_fraction: float, *, at_line: bool) -> tuple[str, str]:
    """The training head and validation tail of `text`, cut at a fraction of the characters (as
    nanoGPT splits tiny-shakespeare). With `at_line` the cut moves to just after the next
    newline, when one is near, so that no word is cut in two."""
    if not 0.0 <= val_fraction < 1.0:
        raise DataError(f"--val-fraction must be in [0, 1), got {val_fraction}")
    if val_fraction == 0:
        return text, ""
    cut = int(len(text) * (1.0 - val_fraction))
    newline = text.find("\n", cut, cut + 10_000) if at_line else -1
    if newline >= 0:
        cut = newline + 1
    return text[:cut], text[cut:]


def spelled_chars(tokenizer: AnyTokenizer, text: str, ids: np.ndarray) -> int:
    """Characters of `text` covered by the predicted tokens: all but the first token's."""
    if len(ids) < 2:
        return 0
    if tokenizer.kind == "char":
        return len(ids) - 1  # one character per token (skipped unknown characters excluded)
    return len(text) - len(tokenizer.decode(ids[:1]))


def tokenize_corpus(
    text: str,
    fingerprint: str,
    *,
    kind: str,
    vocab_size: int | None,
    min_frequency: int | None,
    val_fraction: float,
    cache_dir: Path | None,
) -> TokenizedCorpus:
    """Tokenize a corpus for training, through the cache when `cache_dir` is given."""
    settings = {"format": CACHE_FORMAT, "corpus": fingerprint, "kind": kind,
                "vocab_size": vocab_size, "min_frequency": min_frequency,
                "val_fraction": val_fraction}  # fmt: skip
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:20]
    use_cache = cache_dir is not None and len(text) >= MIN_CACHED_CHARS
    if use_cache:
        found = _read_cache(cache_dir, key)
        if found is not None:
            return found
    train_text, val_text = split_text(text, val_fraction, at_line=kind != "char")
    if kind == "char":
        # Characters of the validation tail that never occur in training still get an id; only
        # a word vocabulary is learnt from the training part alone.
        tokenizer = train_tokenizer("char", text)
    else:
        tokenizer = train_tokenizer(
            kind, train_text, vocab_size=vocab_size, min_frequency=min_frequency
        )
    mode = "token" if kind == "word" else "error"
    train_ids = tokenizer.encode(train_text, on_unknown=mode) if train_text else _empty(tokenizer)
    val_ids = tokenizer.encode(val_text, on_unknown=mode) if val_text else _empty(tokenizer)
    result = TokenizedCorpus(
        tokenizer=tokenizer,
        ids=np.concatenate([train_ids, val_ids]),
        n_train=len(train_ids),
        val_chars=spelled_chars(tokenizer, val_text, val_ids),
        cached=False,
    )
    if use_cache:
        _write_cache(cache_dir, key, result)
    return result


def _empty(tokenizer: AnyTokenizer) -> np.ndarray:
    return np.zeros(0, dtype=tokenizer.id_dtype)


def _read_cache(cache_dir: Path, key: str) -> TokenizedCorpus | None:
    meta_path, ids_path = cache_dir / f"{key}.json", cache_dir / f"{key}.npy"
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        ids = np.load(ids_path, mmap_mode="r")  # mapped: pages come in as batches read them
        tokenizer = tokenizer_from_dict(meta["tokenizer"])
        if len(ids) != meta["tokens"]:
            return None
    except (OSError, ValueError, KeyError):
        return None  # missing or damaged: tokenize again
    return TokenizedCorpus(tokenizer, ids, meta["n_train"], meta["val_chars"], cached=True)


def _write_cache(cache_dir: Path, key: str, t: TokenizedCorpus) -> None:
    """Ids first, then the metadata that vouches for them; each written whole or not at all."""
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = cache_dir / f".{key}.{os.getpid()}.npy"
        np.save(tmp, t.ids)
        os.replace(tmp, cache_dir / f"{key}.npy")
        meta = {"tokenizer": t.tokenizer.to_dict(), "n_train": t.n_train,
                "val_chars": t.val_chars, "tokens": len(t.ids)}  # fmt: skip
        tmp_meta = cache_dir / f".{key}.{os.getpid()}.json"
        tmp_meta.write_text(json.dumps(meta), encoding="utf-8")
        os.replace(tmp_meta, cache_dir / f"{key}.json")
    except OSError:
        pass  # a cache that cannot be written only costs time next run
