"""A corpus tokenized apart from its validation text: a list of items whose validation items
are drawn at random (--items; data/split.split_items), or any corpus with a held-out file
(--val-file). The tokenizer learns from the training text alone; the validation text is
encoded with it and laid after the training ids, so the run's ids keep one layout (ids[:n_train]
train, the rest validate) and a resume reads them as any run's.

    --items:     corpus ─ items_of ─ split_items ─▶ item_text(train) │ item_text(validation)
    --val-file:  corpus (streamed, through the cache)                │ the file's text
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

import numpy as np

from charlstm.config import CORPORA, TrainConfig
from charlstm.data.batches import DataError, StreamLayout, fit_layout
from charlstm.data.corpus import CorpusStream
from charlstm.data.items import (
    ItemLayout,
    item_hashes,
    item_layout,
    item_text,
    items_of,
    separator_id,
)
from charlstm.data.split import split_items
from charlstm.data.tokenizer import AnyTokenizer, tokenizer_from_dict
from charlstm.data.tokens import TokenizedCorpus, corpus_fingerprint, spelled_chars, tokenize_corpus
from charlstm.options import TrainOptions


def held_out_ids(tokenizer: AnyTokenizer, text: str) -> np.ndarray:
    """A text not learnt from, as the tokenizer's ids: characters a char model never saw are
    left out, words a word model does not know are its unknown token."""
    if tokenizer.kind == "word":
        return tokenizer.encode(text, on_unknown="token")
    return tokenizer.encode(text, skip_unknown=True)


def tokenize_apart(
    opts: TrainOptions,
    stream: CorpusStream,
    *,
    kind: str,
    val_fraction: float,
    seed: int,
    base: AnyTokenizer | None = None,
) -> tuple[TokenizedCorpus, np.ndarray | None]:
    """The training ids then the validation ids, cut at n_train; and with --items the hashes
    of every item of the list (data/items.item_hashes), for `sample --novel`."""
    val_text = _read(opts, opts.val_file) if opts.val_file is not None else ""
    hashes = None
    pieces: Iterable[str] = stream
    signature = stream.signature()
    fingerprint = None
    if opts.items:
        text = "".join(stream)
        fingerprint = corpus_fingerprint([text])  # of the corpus as given (resume checks it)
        items = items_of(text, opts.items)
        if not items:
            raise DataError("--items: the corpus holds no items (no line with text)")
        hashes = item_hashes(items)
        if opts.val_file is not None:
            train = items
            val_text = item_text(items_of(val_text, opts.items))
        else:
            train_at, val_at = split_items(len(items), val_fraction, seed)
            train, val_text = [items[i] for i in train_at], item_text(items[i] for i in val_at)
        pieces, signature = [item_text(train)], None
    tokenized = tokenize_corpus(
        pieces, kind=kind, vocab_size=opts.vocab_size, min_frequency=opts.min_frequency,
        val_fraction=0.0, cache_dir=CORPORA / "cache", signature=signature, base=base,
    )  # fmt: skip
    tok = tokenized.tokenizer
    val_ids = held_out_ids(tok, val_text).astype(tokenized.ids.dtype)
    val_chars = spelled_chars(tok, val_ids, None if tok.kind == "char" else len(val_text))
    ids = np.concatenate([np.asarray(tokenized.ids), val_ids])
    tokenized = replace(tokenized, ids=ids, n_train=len(tokenized.ids), val_chars=val_chars,
                        path=None, fingerprint=fingerprint or tokenized.fingerprint)  # fmt: skip
    return tokenized, hashes


def _read(opts: TrainOptions, path: Path) -> str:
    """The --val-file's text, read as the corpus is (its encoding, its errors)."""
    if not Path(path).is_file():
        raise DataError(f"--val-file: no file '{path}'")
    return "".join(CorpusStream([str(path)], cache_dir=CORPORA, encoding=opts.encoding,
                                errors=opts.errors))  # fmt: skip


def training_layout(
    train_ids: np.ndarray, cfg: TrainConfig, tokenizer: dict
) -> tuple[StreamLayout | ItemLayout, list[str]]:
    """How the training ids are batched: B streams of T-step windows, or for an item model
    B items a batch (data/items.py); and the notes on what was adjusted."""
    if cfg.items is None:
        return fit_layout(len(train_ids), cfg.batch_size, cfg.window)
    sep = separator_id(tokenizer_from_dict(tokenizer), cfg.items)
    return item_layout(train_ids, sep, cfg.batch_size, cfg.window, cfg.seed)


def item_sizing(train_ids: np.ndarray, cfg: TrainConfig, tokenizer: dict) -> tuple[int, int]:
    """What the budget sizing measures an item model at: (the mean width of a batch, the
    padded tokens of an epoch), from epoch 0's batches."""
    layout, _ = training_layout(train_ids, cfg, tokenizer)
    assert isinstance(layout, ItemLayout)
    widths = np.minimum(layout.lengths[layout.order(0)], layout.window).max(axis=1)
    return max(1, round(float(widths.mean()))), int(widths.sum()) * layout.batch_size
