"""Turn text into token ids and back; a tokenizer saves itself as a plain dict (JSON-able).

Three kinds share one interface (`kind`, `vocab_size`, `id_dtype`, `unknown_ids`, `unknown`,
`encode`, `encode_chunks`, `decode`, `piece`, `stream_decoder`, `fingerprint`, `to_dict`), so the
rest of the program does not care which one it holds:

    char  one token per Unicode code point of the corpus (not bytes): Chinese, accents and emoji
          are single tokens; characters outside the corpus are unknown.
    word  one token per whitespace-separated word *with* its leading space, or per run of
          whitespace (Hugging Face `tokenizers` WordLevel); words outside the vocabulary are
          unknown and may become the placeholder token, which decodes to UNK_PLACEHOLDER.
    bpe   byte-level BPE (GPT-2 style, Hugging Face `tokenizers`): any text encodes, and
          decode(encode(text)) == text always; nothing is ever unknown.

Word and BPE tokenizers are trained and run by the Rust library (trainers, batch encoding); no
Python loop walks over the tokens of a text. This file holds the char tokenizer and the choice
of kind (train_tokenizer, tokenizer_from_dict); word and BPE live in hf_tokenizers.py, what all
three share in pieces.py.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
from tokenizers import Tokenizer as HFTokenizer

from charlstm import files
from charlstm.data.hf_tokenizers import BpeTokenizer, WordTokenizer, byte_decoder
from charlstm.data.pieces import (
    DEFAULT_MIN_FREQUENCY,
    DEFAULT_VOCAB,
    KINDS,
    UNK_KEYS,
    OnUnknown,
    PieceStream,
    StreamDecoder,
    TokenizerError,
    code_points,
    dtype_for,
    resolve_mode,
)


class CharTokenizer:
    """One token per Unicode code point seen in the corpus."""

    kind = "char"
    unknown_ids: tuple[int, ...] = ()  # none: unknown characters are an error or skipped

    def __init__(self, chars: str) -> None:
        if len(set(chars)) != len(chars):
            raise ValueError("duplicate characters in vocabulary")
        self.chars = chars
        # A table from code point to id (-1: unknown; its last entry stands for every point past
        # the largest known one) makes encoding one vectorised lookup, no Python loop per char.
        points = code_points(chars)
        self._table = np.full(int(points.max(initial=0)) + 2, -1, dtype=np.int32)
        self._table[points] = np.arange(len(points), dtype=np.int32)
        self._pieces = list(chars)

    @classmethod
    def train(cls, text: str | Iterable[str]) -> CharTokenizer:
        texts = [text] if isinstance(text, str) else text
        return cls("".join(sorted(set().union(*map(set, texts)))))

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    @property
    def id_dtype(self) -> np.dtype:
        return dtype_for(self.vocab_size)

    def unknown(self, text: str) -> list[str]:
        """The distinct characters of `text` outside the vocabulary, in order of appearance."""
        known = set(self.chars)
        return list(dict.fromkeys(ch for ch in text if ch not in known))

    def encode(
        self, text: str, *, skip_unknown: bool = False, on_unknown: OnUnknown | None = None
    ) -> np.ndarray:
        """Token ids of `text`, as `id_dtype`.

        Unknown characters raise TokenizerError naming them (on_unknown="error", the default),
        or are dropped ("skip"; `skip_unknown=True` is the older spelling). "token" raises too
        when there are any, since characters have no unknown token.
        """
        mode = resolve_mode(skip_unknown, on_unknown)
        points = code_points(text)
        last = len(self._table) - 1
        # ASCII points are bytes: past the table's end they must be clipped without overflow.
        ids = self._table[np.minimum(points, last) if last <= points.max(initial=0) else points]
        if ids.min(initial=0) < 0:
            if mode == "skip":
                ids = ids[ids >= 0]
            else:
                missing = "".join(self.unknown(text)[:20])
                hint = " (a char tokenizer has no unknown token)" if mode == "token" else ""
                raise TokenizerError(f"characters the model never saw: {missing!r}{hint}")
        return ids.astype(self.id_dtype)

    def encode_chunks(
        self, chunks: Iterable[str], *, on_unknown: OnUnknown = "error", batch_chars: int = 0
    ) -> Iterator[np.ndarray]:
        """The ids of each chunk in turn (see `split_for_encoding`); `batch_chars` is unused."""
        for chunk in chunks:
            yield self.encode(chunk, on_unknown=on_unknown)

    def decode(self, ids: Iterable[int]) -> str:
        return "".join(self._pieces[int(i)] for i in ids)

    def piece(self, token_id: int) -> str:
        """The text of one token, for streaming output."""
        return self._pieces[token_id]

    def stream_decoder(self) -> StreamDecoder:
        return PieceStream(self)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "chars": self.chars}

    def fingerprint(self) -> str:
        """A short hash of the saved form: equal fingerprints, equal encodings."""
        return files.fingerprint(json.dumps(self.to_dict(), sort_keys=True))


AnyTokenizer = CharTokenizer | WordTokenizer | BpeTokenizer


def train_tokenizer(
    kind: str,
    text: str | Iterable[str],
    *,
    vocab_size: int | None = None,
    min_frequency: int | None = None,
) -> AnyTokenizer:
    """Train a tokenizer of `kind` ("char", "word" or "bpe") on `text`.

    None means the kind's default (DEFAULT_VOCAB, DEFAULT_MIN_FREQUENCY). A char vocabulary is
    every character of the text, so it takes neither.
    """
    if kind == "char":
        if vocab_size is not None or min_frequency is not None:
            raise TokenizerError("the char tokenizer takes no vocabulary size or minimum frequency")
        return CharTokenizer.train(text)
    if kind not in KINDS:
        raise TokenizerError(f"unknown tokenizer kind {kind!r}; choose one of {', '.join(KINDS)}")
    cls = WordTokenizer if kind == "word" else BpeTokenizer
    return cls.train(
        text,
        vocab_size=DEFAULT_VOCAB[kind] if vocab_size is None else vocab_size,
        min_frequency=DEFAULT_MIN_FREQUENCY[kind] if min_frequency is None else min_frequency,
    )


def tokenizer_from_dict(d: dict[str, Any]) -> AnyTokenizer:
    kind = d.get("kind")
    if kind == "char":
        return CharTokenizer(d["chars"])
    if kind in ("word", "bpe"):
        check_saved(kind, d.get("json"))  # before the Rust library sees any of it
        try:
            hf = HFTokenizer.from_str(d["json"])
        except Exception as e:  # tokenizers raises plain Exception on bad JSON
            raise TokenizerError(f"damaged {kind} tokenizer: {str(e).splitlines()[0]}") from e
        return WordTokenizer(hf) if kind == "word" else BpeTokenizer(hf)
    raise TokenizerError(f"unknown tokenizer kind {kind!r}")


@functools.cache
def _shell(kind: str) -> dict[str, Any]:
    """The saved form of a tokenizer of `kind` as `train` makes it (its vocabulary and merges
    aside): the settings a saved one must have."""
    tok = train_tokenizer(kind, "a b", vocab_size=256 if kind == "bpe" else 3)
    return json.loads(tok.to_dict()["json"])


def _written_by_us(saved: object, ours: object) -> bool:
    """Whether `saved` is `ours`, or `ours` less fields an older tokenizers library did not
    write yet: nothing in it that charlstm does not write."""
    if isinstance(saved, dict) and isinstance(ours, dict):
        return all(k in ours and _written_by_us(v, ours[k]) for k, v in saved.items())
    if isinstance(saved, list) and isinstance(ours, list):
        return len(saved) == len(ours) and all(map(_written_by_us, saved, ours))
    return type(saved) is type(ours) and saved == ours


def check_saved(kind: str, text: object) -> None:
    """Refuse (TokenizerError, one line) a saved word or BPE tokenizer that charlstm did not
    write: every setting but the vocabulary and merges must be exactly what `train` sets (no
    regex or normalizer of a file's choosing reaches the Rust library), the ids must be dense
    (0..n-1: memory in proportion to the file), and every merge must join two tokens into a
    third, every BPE key be made of byte-level characters and be reachable by the merges."""
    from charlstm import safejson

    def bad(why: str) -> TokenizerError:
        return TokenizerError(f"damaged {kind} tokenizer: {why}")

    try:
        saved = safejson.loads(text, "its JSON")
    except ValueError as e:
        raise bad(str(e)) from None
    shell = _shell(kind)
    if not isinstance(saved, dict) or not isinstance(saved.get("model"), dict):
        raise bad("not the settings charlstm writes")
    model = saved["model"]
    if model.get("type") != shell["model"]["type"]:
        raise bad("its model is not the one charlstm writes")
    for key, value in saved.items():
        if key != "model" and not (key in shell and _written_by_us(value, shell[key])):
            raise bad(f"its {key} is not the one charlstm writes")
    for key, value in model.items():
        known = key in shell["model"] and _written_by_us(value, shell["model"][key])
        if key not in ("vocab", "merges") and not known:
            raise bad(f"its model's {key} is not the one charlstm writes")
    vocab = model.get("vocab")
    if not isinstance(vocab, dict) or not all(
        isinstance(k, str) and k and type(i) is int for k, i in vocab.items()
    ):
        raise bad("its vocabulary is not text keys with integer ids")
    if sorted(vocab.values()) != list(range(len(vocab))):
        raise bad("its vocabulary's ids are not 0, 1, 2, ... each once")
    if kind == "word":
        if [vocab.get(k) for k in UNK_KEYS] != [0, 1]:
            raise bad("its unknown tokens are not at ids 0 and 1")
        return
    alphabet = byte_decoder()
    if not all(c in alphabet for k in vocab for c in k):
        raise bad("a vocabulary key holds a character that is no byte")
    merges = model.get("merges", [])
    if not isinstance(merges, list) or len(merges) > len(vocab):
        raise bad("its merges are no list of pairs")
    made = set()
    for m in merges:
        pair = m.split(" ") if isinstance(m, str) else m
        if not (isinstance(pair, list) and len(pair) == 2 and all(type(p) is str for p in pair)):
            raise bad("its merges are no list of pairs")
        a, b = pair
        if a not in vocab or b not in vocab or a + b not in vocab:
            raise bad(f"the merge {a!r} + {b!r} joins tokens outside its vocabulary")
        made.add(a + b)
    if any(len(k) > 1 and k not in made for k in vocab):
        raise bad("a vocabulary key is no single byte and no merge makes it")
