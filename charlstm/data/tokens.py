"""Corpus text → the token ids a run trains on: split off the validation tail, train the
tokenizer on the training part, encode both parts, and cache the result on disk keyed by the
corpus content and the tokenizer settings, so a second run on the same corpus skips all of it.

The corpus comes as pieces of text (a `CorpusStream`, or one string) and is read a piece at a
time: characters in one pass (hash, number each new character, encode); words and BPE in three
(hash and measure, learn the vocabulary, encode). Ids go straight into the cache's .npy file,
which training then maps, so a corpus larger than memory never sits in memory whole. A second
run on unchanged files finds its entry by their paths, sizes and times, without reading them.

Bits per character must compare across tokenizers, so the characters the validation tokens
spell are counted here, from the text, where they are known exactly.
"""

from __future__ import annotations

import io
import itertools
import json
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from charlstm import files
from charlstm.data.batches import DataError
from charlstm.data.corpus import CorpusError
from charlstm.data.pieces import code_points, safe_cut, split_for_encoding
from charlstm.data.split import train_length
from charlstm.data.tokenizer import (
    AnyTokenizer,
    CharTokenizer,
    tokenizer_from_dict,
    train_tokenizer,
)

CACHE_FORMAT = 2
MIN_CACHED_CHARS = 1 << 20  # below ~1 MB tokenizing takes well under a second: not worth a file
_LINE_SEARCH = 10_000  # how far past the cut a word split looks for the end of the line
_HEADER = 128  # bytes kept for the .npy header of an id file written before its length is known


@dataclass
class CorpusInfo:
    """What a run knows of its corpus, saved in its checkpoints (as a plain dict)."""

    fingerprint: str  # of the corpus text (files.fingerprint)
    chars: int  # characters in the corpus
    sources: list[str] = field(default_factory=list)  # the first 20 of the files read
    n_sources: int = 0
    tokenizer: str = "char"
    n_train: int | None = None  # ids[:n_train] train; None: runs that split the ids instead
    val_chars: int | None = None  # characters spelled by the validation tokens after the first
    skipped: list[list[str]] = field(default_factory=list)  # [file, why]: a folder's non-text files
    n_skipped: int = 0
    val_file: str | None = None  # --val-file: the held-out file validated on
    items: int | None = None  # --items: how many distinct items the list holds

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CorpusInfo:
        """From a checkpoint's dict; keys this version does not know are left out."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclass(frozen=True)
class TokenizedCorpus:
    tokenizer: AnyTokenizer
    ids: np.ndarray  # the training tokens, then the validation tokens (memory-mapped if cached)
    n_train: int  # ids[:n_train] train, ids[n_train:] validate
    val_chars: int  # characters spelled by the validation tokens after the first
    cached: bool  # read from the cache instead of computed
    fingerprint: str = ""  # of the corpus text (sha256, 16 hex digits)
    chars: int = 0  # characters in the corpus
    path: Path | None = None  # the cache file holding `ids`, when there is one
    sources: tuple[str, ...] = ()  # the files read (as CorpusStream.sources)
    skipped: tuple[tuple[str, str], ...] = ()  # a folder's files left out as not text, and why

    @property
    def train_ids(self) -> np.ndarray:
        return self.ids[: self.n_train]

    @property
    def val_ids(self) -> np.ndarray:
        return self.ids[self.n_train :]


def _split_pieces(
    pieces: Iterable[str], val_fraction: float, n_chars: int, *, at_line: bool
) -> Iterator[tuple[int, str]]:
    """(0, text) for the training head, then (1, text) for the validation tail, piece by piece.
    The cut is at a fraction of the characters (as nanoGPT splits tiny-shakespeare); with
    `at_line` it moves to just after the next newline, when one is near, so no word is cut."""
    if val_fraction == 0:
        yield from ((0, p) for p in pieces)
        return
    cut = train_length(n_chars, val_fraction)
    pos = 0
    state, held = "head", ""  # head → (search: holding the text from the cut on) → tail
    for piece in pieces:
        if state == "tail":
            yield 1, piece
            continue
        if state == "head":
            if pos + len(piece) <= cut:
                yield 0, piece
                pos += len(piece)
                continue
            yield 0, piece[: cut - pos]
            state, piece = "search", piece[cut - pos :]
        held += piece
        newline = held.find("\n", 0, _LINE_SEARCH) if at_line else -1
        if newline >= 0:
            yield 0, held[: newline + 1]
            yield 1, held[newline + 1 :]
            state = "tail"
        elif not at_line or len(held) >= _LINE_SEARCH:
            yield 1, held
            state = "tail"
    if state == "search" and held:
        yield 1, held  # the text ended before a newline: the cut stays where it was


def _safe_pieces(pieces: Iterable[str], kind: str) -> Iterator[str]:
    """Re-cut pieces so every cut falls where the word and BPE pre-tokenizers split anyway
    (the encodings of the pieces then join into the encoding of the whole); chars cut
    anywhere."""
    if kind == "char":
        yield from pieces
        return
    carry = ""
    for piece in pieces:
        text = carry + piece
        cut = safe_cut(text)
        if cut <= 0:
            carry = text
            continue
        yield from split_for_encoding(text[:cut])  # ~1 MB pieces let Rust use every core
        carry = text[cut:]
    if carry:
        yield from split_for_encoding(carry)


def _survey(pieces: Iterable[str]) -> tuple[str, int]:
    """One pass: the content hash and the length in characters."""
    h = files.Fingerprinter()
    n = 0
    anything = False
    for piece in pieces:
        h.update(piece)
        n += len(piece)
        anything = anything or not piece.isspace()
    if not anything:
        raise CorpusError("the corpus is empty (nothing but whitespace)")
    return h.hex(), n


def corpus_fingerprint(pieces: Iterable[str]) -> str:
    """The corpus fingerprint (as `Corpus.fingerprint`) of text that comes in pieces."""
    return _survey(pieces)[0]


def _key(settings: dict[str, object], corpus: str) -> str:
    return files.fingerprint(json.dumps({**settings, "corpus": corpus}, sort_keys=True), digits=20)


def tokenize_corpus(
    corpus: str | Iterable[str],
    fingerprint: str | None = None,
    *,
    kind: str,
    vocab_size: int | None,
    min_frequency: int | None,
    val_fraction: float,
    cache_dir: Path | None,
    signature: list[object] | None = None,
    base: AnyTokenizer | None = None,
) -> TokenizedCorpus:
    """Tokenize a corpus for training, through the cache when `cache_dir` is given.

    With a `base` tokenizer (fine-tuning), none is learnt: a word or BPE corpus is encoded with
    the base's, and a char corpus keeps the base's ids and numbers its new characters after.

    `corpus` is the text, or an iterable of its pieces that can be iterated more than once (a
    `CorpusStream`). `fingerprint` None: computed from the text. `signature` (the sources'
    paths, sizes and modification times, as `CorpusStream.signature`) lets a second run find
    its cache entry without reading the corpus at all, as make trusts file times.
    """
    pieces: Iterable[str] = [corpus] if isinstance(corpus, str) else corpus
    settings = {"format": CACHE_FORMAT, "kind": kind, "vocab_size": vocab_size,
                "min_frequency": min_frequency, "val_fraction": val_fraction}  # fmt: skip
    if base is not None:
        settings["base"] = base.fingerprint()
    if cache_dir is not None and signature is not None:
        found = _read_by_signature(cache_dir, settings, signature)
        if found is not None:
            return found
    if cache_dir is not None:
        _sweep(cache_dir)
    if kind == "char":
        known = base.chars if isinstance(base, CharTokenizer) else ""
        result = _tokenize_chars(pieces, fingerprint, settings, cache_dir, known)
    else:
        result = _tokenize_learnt(pieces, fingerprint, settings, cache_dir, base)
    result = replace(result, sources=tuple(getattr(pieces, "sources", ())),
                     skipped=tuple(getattr(pieces, "skipped", ())))  # fmt: skip
    if cache_dir is not None and signature is not None and result.path is not None:
        _write_signature(cache_dir, settings, signature, result)
    return result


def _tokenize_chars(
    pieces: Iterable[str],
    fingerprint: str | None,
    settings: dict,
    cache_dir: Path | None,
    known: str = "",
) -> TokenizedCorpus:
    """Characters in one pass: hash, number each new character as it first appears (after the
    `known` ones, which keep their ids), and write the ids as they come. Characters of the
    validation tail that never occur in training still get an id; only a word vocabulary is
    learnt from the training part alone."""
    numbering = _CharNumbering(known)
    h = files.Fingerprinter()
    n, anything = 0, False
    sink = _Sink(cache_dir, np.dtype(np.uint16))
    try:
        for piece in pieces:
            h.update(piece)
            n += len(piece)
            anything = anything or not piece.isspace()
            sink.write(numbering.encode(piece))
        if not anything:
            raise CorpusError("the corpus is empty (nothing but whitespace)")
        fingerprint = fingerprint or h.hex()
        key = _key(settings, fingerprint)
        if sink.on_disk:
            found = _read_cache(cache_dir, key)
            if found is not None:  # made by an earlier run: keep that one
                sink.abandon()
                return found
        ids, path = sink.finish(key)
    except BaseException:
        sink.abandon()
        raise
    fraction = float(settings["val_fraction"])
    n_train = train_length(n, fraction)  # the cut _split_pieces makes
    tokenizer = CharTokenizer("".join(numbering.chars))
    val_chars = spelled_chars(tokenizer, ids[n_train:])
    result = TokenizedCorpus(tokenizer, ids, n_train, val_chars, False, fingerprint, n, path)
    if path is not None:
        _write_meta(path.parent, key, result)
    return result


class _CharNumbering:
    """Numbers characters in the order they first appear; encode() gives a piece's ids."""

    def __init__(self, known: str = "") -> None:
        self.table = np.full(256, -1, dtype=np.int32)  # code point -> id
        self.chars: list[str] = []
        if known:
            self.encode(known)  # the first ids, in the given order

    def encode(self, piece: str) -> np.ndarray:
        points = code_points(piece)
        if not len(points):
            return np.zeros(0, dtype=np.uint16)
        top = int(points.max())
        if top >= len(self.table):
            self.table = np.pad(self.table, (0, top + 1 - len(self.table)), constant_values=-1)
        ids = self.table[points]
        unseen = ids < 0
        if unseen.any():
            new, first = np.unique(points[unseen], return_index=True)
            for point in new[np.argsort(first)]:  # in order of appearance
                self.table[point] = len(self.chars)
                self.chars.append(chr(point))
            if len(self.chars) > 1 << 16:
                raise DataError(
                    f"the corpus holds more than {1 << 16:,} distinct characters; "
                    "use --tokenizer bpe"
                )
            ids = self.table[points]
        return ids.astype(np.uint16)


def _tokenize_learnt(
    pieces: Iterable[str],
    fingerprint: str | None,
    settings: dict,
    cache_dir: Path | None,
    base: AnyTokenizer | None = None,
) -> TokenizedCorpus:
    """Word and BPE: hash and measure, learn the vocabulary from the training part (unless a
    `base` tokenizer is given), encode."""
    found_print, n_chars = _survey(pieces)
    fingerprint = fingerprint or found_print
    key = _key(settings, fingerprint)
    use_cache = cache_dir is not None and n_chars >= MIN_CACHED_CHARS
    if use_cache:
        found = _read_cache(cache_dir, key)
        if found is not None:
            return found
    kind = str(settings["kind"])
    fraction = float(settings["val_fraction"])

    def parts() -> Iterator[tuple[int, str]]:
        return _split_pieces(pieces, fraction, n_chars, at_line=True)

    train_part = (text for _, text in itertools.takewhile(lambda pair: pair[0] == 0, parts()))
    tokenizer = base or train_tokenizer(
        kind,
        _safe_pieces(train_part, kind),
        vocab_size=settings["vocab_size"],  # type: ignore[arg-type]
        min_frequency=settings["min_frequency"],  # type: ignore[arg-type]
    )
    mode = "token" if kind == "word" else "error"
    sink = _Sink(cache_dir if use_cache else None, tokenizer.id_dtype, spill_at=0)
    n_train = val_len = 0
    try:
        for part, group in itertools.groupby(parts(), key=lambda pair: pair[0]):
            for text in _safe_pieces((text for _, text in group), kind):
                ids = tokenizer.encode(text, on_unknown=mode)
                sink.write(ids)
                if part == 0:
                    n_train += len(ids)
                else:
                    val_len += len(text)
        ids_all, path = sink.finish(key)
    except BaseException:
        sink.abandon()
        raise
    val_chars = spelled_chars(tokenizer, ids_all[n_train:], text_chars=val_len)
    result = TokenizedCorpus(tokenizer, ids_all, n_train, val_chars, False, fingerprint, n_chars,
                             path)  # fmt: skip
    if path is not None:
        _write_meta(path.parent, key, result)
    return result


class _Sink:
    """Where ids go as they are made: memory, until there are `spill_at` of them and a cache
    folder is given; from then on a temporary .npy file (header written last, when the length
    is known), which finish() moves into the cache and maps back."""

    def __init__(self, cache_dir: Path | None, dtype: np.dtype, spill_at: int | None = None):
        self.cache_dir, self.dtype = cache_dir, np.dtype(dtype)
        self.spill_at = MIN_CACHED_CHARS if spill_at is None else spill_at
        self.parts: list[np.ndarray] = []
        self.count = 0
        self.file: files.AtomicFile | None = None

    @property
    def on_disk(self) -> bool:
        return self.file is not None

    def write(self, ids: np.ndarray) -> None:
        self.parts.append(ids)
        self.count += len(ids)
        if self.file is None and self.cache_dir is not None and self.count >= self.spill_at:
            try:
                self.file = files.AtomicFile(self.cache_dir / "ids.npy")
                self.file.file.write(b"\0" * _HEADER)
            except (files.FileWriteError, OSError):
                self.cache_dir = None  # a cache that cannot be written only costs time next run
        if self.file is not None:
            try:
                for part in self.parts:
                    self.file.file.write(np.ascontiguousarray(part, dtype=self.dtype).tobytes())
            except OSError as e:  # a full disk: say so in one line, leave no half file
                raise DataError(
                    f"cannot write the token cache in '{self.cache_dir}': {e.strerror or e}"
                ) from None
            self.parts.clear()

    def finish(self, key: str) -> tuple[np.ndarray, Path | None]:
        if self.file is None:
            joined = np.concatenate(self.parts) if self.parts else np.zeros(0, self.dtype)
            return joined.astype(self.dtype, copy=False), None
        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(
            header,
            {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False,
             "shape": (self.count,)},
        )  # fmt: skip
        if len(header.getvalue()) != _HEADER:
            raise RuntimeError("unexpected .npy header size")  # numpy pads 1-D headers to 128
        self.file.file.seek(0)
        self.file.file.write(header.getvalue())
        assert self.cache_dir is not None
        try:
            path = self.file.commit(self.cache_dir / f"{key}.npy")
        except files.FileWriteError as e:
            raise DataError(f"cannot write the token cache: {e}") from None
        return np.load(path, mmap_mode="r"), path

    def abandon(self) -> None:
        self.parts.clear()
        if self.file is not None:
            self.file.abandon()


def _signature_path(cache_dir: Path, settings: dict, signature: list[object]) -> Path:
    payload = json.dumps({"settings": settings, "sources": signature}, sort_keys=True)
    return cache_dir / f"by-source-{files.fingerprint(payload, digits=20)}.txt"


def _read_by_signature(
    cache_dir: Path, settings: dict, signature: list[object]
) -> TokenizedCorpus | None:
    """The entry the same files (paths, sizes, times) made, with the files it read and left
    out; None when there is none or it is damaged."""
    try:
        entry = json.loads(_signature_path(cache_dir, settings, signature).read_text("utf-8"))
        key = str(entry["key"])
        sources = tuple(str(name) for name in entry["sources"])
        skipped = tuple((str(name), str(why)) for name, why in entry["skipped"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    found = _read_cache(cache_dir, key) if re.fullmatch(r"[0-9a-f]{20}", key) else None
    return None if found is None else replace(found, sources=sources, skipped=skipped)


def _write_signature(
    cache_dir: Path, settings: dict, signature: list[object], t: TokenizedCorpus
) -> None:
    assert t.path is not None
    entry = {"key": t.path.stem, "sources": t.sources, "skipped": t.skipped}
    try:
        files.write_atomic(_signature_path(cache_dir, settings, signature), json.dumps(entry))
    except files.FileWriteError:
        pass  # a cache that cannot be written only costs time next run


def _sweep(cache_dir: Path, older_than: float = 3600.0) -> None:
    """Delete temporary files that a killed run left in the cache. A file written within the
    hour may be another run's, still being written: it stays."""
    now = time.time()
    for tmp in cache_dir.glob(".*.tmp"):
        try:
            if now - tmp.stat().st_mtime > older_than:
                tmp.unlink()
        except OSError:
            pass  # gone already, or not ours to delete


def _read_cache(cache_dir: Path, key: str) -> TokenizedCorpus | None:
    meta_path, ids_path = cache_dir / f"{key}.json", cache_dir / f"{key}.npy"
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        ids = np.load(ids_path, mmap_mode="r")  # mapped: pages come in as batches read them
        tokenizer = tokenizer_from_dict(meta["tokenizer"])
        if len(ids) != meta["tokens"]:
            return None
        return TokenizedCorpus(
            tokenizer, ids, meta["n_train"], meta["val_chars"], True,
            meta["fingerprint"], meta["chars"], ids_path,
        )  # fmt: skip
    except (OSError, ValueError, KeyError):
        return None  # missing or damaged: tokenize again


def _write_meta(cache_dir: Path, key: str, t: TokenizedCorpus) -> None:
    """The metadata that vouches for the ids file (written first), whole or not at all."""
    meta = {"tokenizer": t.tokenizer.to_dict(), "n_train": t.n_train,
            "val_chars": t.val_chars, "tokens": len(t.ids),
            "fingerprint": t.fingerprint, "chars": t.chars}  # fmt: skip
    try:
        files.write_atomic(cache_dir / f"{key}.json", json.dumps(meta))
    except files.FileWriteError:
        pass  # a cache that cannot be written only costs time next run


def spelled_chars(tokenizer: AnyTokenizer, ids: np.ndarray, text_chars: int | None = None) -> int:
    """Characters spelled by the predicted tokens, ids[1:]: what bits per character divide by.

    One per token for chars. For words and subwords, the text's own length less the first
    token's when the text's length is known (an unknown word decodes to one placeholder
    character, not to the word), else the length of the decoded tokens."""
    if len(ids) < 2:
        return 0
    if tokenizer.kind == "char":
        return len(ids) - 1
    if text_chars is not None:
        return text_chars - len(tokenizer.decode(ids[:1]))
    return len(tokenizer.decode(ids[1:]))
