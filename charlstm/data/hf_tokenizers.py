"""The word and BPE tokenizers, trained and run by Hugging Face `tokenizers` (Rust): WordLevel
over GPT-2-style pre-tokens with two unknown tokens that keep the text's spacing, and
byte-level BPE, under which any text encodes and nothing is unknown."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
from tokenizers import Regex, decoders, models, pre_tokenizers, trainers
from tokenizers import Tokenizer as HFTokenizer

from charlstm import files
from charlstm.data.pieces import (
    BATCH_CHARS,
    DEFAULT_MIN_FREQUENCY,
    DEFAULT_VOCAB,
    PRE_TOKEN_RE,
    UNK_KEYS,
    UNK_PLACEHOLDER,
    WORD_PATTERN,
    ByteStream,
    OnUnknown,
    PieceStream,
    StreamDecoder,
    TokenizerError,
    batches,
    dtype_for,
    resolve_mode,
    split_for_encoding,
    unknown_message,
)
from charlstm.generate.choose import Utf8Rows, Utf8Table


class _HFBase:
    """What word and BPE tokenizers share: a `tokenizers.Tokenizer` and batch encoding."""

    kind = ""
    unknown_ids: tuple[int, ...] = ()

    def __init__(self, hf: HFTokenizer) -> None:
        self.hf = hf
        self._json = hf.to_str()

    @property
    def vocab_size(self) -> int:
        return self.hf.get_vocab_size()

    @property
    def id_dtype(self) -> np.dtype:
        return dtype_for(self.vocab_size)

    def _raw_batch(self, texts: list[str]) -> list[np.ndarray]:
        # encode_batch_fast skips offsets (about twice as fast); Rust spreads the batch over the
        # cores unless TOKENIZERS_PARALLELISM=false.
        encodings = self.hf.encode_batch_fast(texts, add_special_tokens=False)
        return [np.array(e.ids, dtype=self.id_dtype) for e in encodings]

    def _finish(self, text: str, ids: np.ndarray, mode: OnUnknown) -> tuple[np.ndarray, list[str]]:
        """The final ids of a chunk given its raw ids, and its unknown tokens ("error" mode)."""
        return ids, []

    def _encode_pieces(
        self, chunks: Iterable[str], mode: OnUnknown, batch_chars: int
    ) -> Iterator[tuple[np.ndarray, list[str]]]:
        for batch in batches(chunks, batch_chars):
            for chunk, ids in zip(batch, self._raw_batch(batch), strict=True):
                yield self._finish(chunk, ids, mode)

    def unknown(self, text: str) -> list[str]:
        """The distinct out-of-vocabulary tokens of `text` in order of appearance.

        Words come without their leading space; an unknown run of whitespace comes as it is.
        """
        names = (
            n
            for _, ns in self._encode_pieces(split_for_encoding(text), "error", BATCH_CHARS)
            for n in ns
        )
        return list(dict.fromkeys(names))

    def encode(
        self, text: str, *, skip_unknown: bool = False, on_unknown: OnUnknown | None = None
    ) -> np.ndarray:
        """Token ids of `text`, as `id_dtype`.

        on_unknown says what becomes of tokens outside the vocabulary (word tokenizer only):
        "error" (default) raises TokenizerError naming up to 10 of them, "skip" drops them (the
        older `skip_unknown=True`), "token" turns them into the unknown token, which decodes to
        UNK_PLACEHOLDER; that is what training and evaluation of word models want.
        """
        mode = resolve_mode(skip_unknown, on_unknown)
        out, names = [], []
        for ids, ns in self._encode_pieces(split_for_encoding(text), mode, BATCH_CHARS):
            out.append(ids)
            names += ns
        if names:
            raise TokenizerError(unknown_message("words", list(dict.fromkeys(names))))
        return np.concatenate(out)

    def encode_chunks(
        self,
        chunks: Iterable[str],
        *,
        on_unknown: OnUnknown = "error",
        batch_chars: int = BATCH_CHARS,
    ) -> Iterator[np.ndarray]:
        """The ids of each chunk in turn, encoded by Rust in batches of about `batch_chars`.

        Feed it `split_for_encoding(text)` and the arrays concatenate to `encode(text)`. With
        on_unknown="error" the first chunk holding an unknown word raises TokenizerError.
        """
        mode = resolve_mode(False, on_unknown)
        for ids, names in self._encode_pieces(chunks, mode, batch_chars):
            if names:
                raise TokenizerError(unknown_message("words", list(dict.fromkeys(names))))
            yield ids

    def decode(self, ids: Iterable[int]) -> str:
        ids = np.asarray(ids if hasattr(ids, "__len__") else list(ids), dtype=np.int64)
        return self.hf.decode(ids.tolist(), skip_special_tokens=False)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "json": self._json}

    def fingerprint(self) -> str:
        """A short hash of the saved form: equal fingerprints, equal encodings."""
        return files.fingerprint(self.kind, "\0", self._json)


class WordTokenizer(_HFBase):
    """Whitespace-separated words, each with its leading space, and runs of whitespace.

    Punctuation stays attached as in the corpus ("cat," is a word), like PyTorch's
    word_language_model. decode(encode(text)) == text when every token is in the vocabulary;
    an unknown token decodes to UNK_PLACEHOLDER, keeping its leading space if it had one.
    """

    kind = "word"
    # Both unknown tokens (UNK_KEYS): 0 without, 1 with a leading space.
    unknown_ids = tuple(range(len(UNK_KEYS)))

    def __init__(self, hf: HFTokenizer) -> None:
        super().__init__(hf)
        if [hf.token_to_id(k) for k in UNK_KEYS] != [0, 1]:
            raise TokenizerError("word tokenizer without its unknown tokens at ids 0 and 1")
        # Characters per token, for locating unknown tokens in the text without offsets.
        self._lengths = np.zeros(self.vocab_size, dtype=np.int64)
        for key, i in hf.get_vocab().items():
            self._lengths[i] = len(key)
        self._lengths[:2] = 0

    @classmethod
    def train(
        cls,
        texts: str | Iterable[str],
        *,
        vocab_size: int = DEFAULT_VOCAB["word"],
        min_frequency: int = DEFAULT_MIN_FREQUENCY["word"],
    ) -> WordTokenizer:
        """The `vocab_size - 2` most frequent tokens seen at least `min_frequency` times."""
        if vocab_size < 3:
            raise TokenizerError("a word vocabulary needs at least 3 tokens")
        if isinstance(texts, str):
            texts = split_for_encoding(texts)  # pieces let Rust count on all cores
        counter = _word_tokenizer({})
        trainer = trainers.WordLevelTrainer(
            vocab_size=vocab_size - len(UNK_KEYS),
            min_frequency=min_frequency,
            show_progress=False,
            special_tokens=[],
        )
        counter.train_from_iterator(texts, trainer=trainer)
        # The trainer numbers words by falling frequency; shift them past the unknown tokens.
        # Rebuilding (rather than passing special_tokens) keeps those out of the added tokens.
        words = sorted(counter.get_vocab().items(), key=lambda kv: kv[1])
        vocab = {k: i for i, k in enumerate(UNK_KEYS)}
        vocab.update((w, i + len(UNK_KEYS)) for i, (w, _) in enumerate(words))
        return cls(_word_tokenizer(vocab))

    def _unknown_spans(self, text: str, ids: np.ndarray) -> list[tuple[int, int]]:
        """(start, end) in `text` of each unknown token of `ids`, the raw encoding of `text`.

        Known tokens have known lengths, so a cumulative sum places everything up to the next
        unknown token, whose extent the pre-token pattern gives; Python loops over unknowns only.
        """
        where = np.flatnonzero(ids == 0)
        if len(where) == 0:
            return []
        ends = np.cumsum(self._lengths[ids])
        spans, extra = [], 0
        for k in where.tolist():
            start = (int(ends[k - 1]) if k else 0) + extra
            end = PRE_TOKEN_RE.match(text, start).end()
            extra += end - start
            spans.append((start, end))
        return spans

    def _finish(self, text: str, ids: np.ndarray, mode: OnUnknown) -> tuple[np.ndarray, list[str]]:
        spans = self._unknown_spans(text, ids)
        if not spans:
            return ids, []
        if mode == "error":  # words without their leading space; whitespace as it is
            words = (text[s:e] for s, e in spans)
            return ids, [w[1:] if w[0] == " " and w.strip() else w for w in words]
        where = np.flatnonzero(ids == 0)
        if mode == "skip":
            return np.delete(ids, where), []
        spaced = np.fromiter((text[s] == " " for s, _ in spans), dtype=bool, count=len(spans))
        ids = ids.copy()
        ids[where[spaced]] = 1
        return ids, []

    def piece(self, token_id: int) -> str:
        """The text of one token: the word with its leading space, or the placeholder."""
        return self.hf.decode([token_id], skip_special_tokens=False)

    def stream_decoder(self) -> StreamDecoder:
        return PieceStream(self)


def _word_tokenizer(vocab: dict[str, int]) -> HFTokenizer:
    hf = HFTokenizer(models.WordLevel(vocab, unk_token=UNK_KEYS[0]))
    hf.pre_tokenizer = pre_tokenizers.Split(Regex(WORD_PATTERN), behavior="isolated")
    # Drop the tab that makes the unknown keys impossible pre-tokens, then concatenate.
    hf.decoder = decoders.Sequence(
        [decoders.Replace(UNK_PLACEHOLDER + "\t", UNK_PLACEHOLDER), decoders.Fuse()]
    )
    return hf


def byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet: each byte is written as a printable character."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    printable += range(ord("®"), ord("ÿ") + 1)
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[chr(b)] = b
        else:
            chars[chr(256 + extra)] = b
            extra += 1
    return chars


class BpeTokenizer(_HFBase):
    """Byte-level BPE: any text encodes and decodes back exactly; nothing is unknown.

    A token may end inside a multi-byte character, so stream sampled text through
    `stream_decoder()`, not `piece()`.
    """

    kind = "bpe"

    def __init__(self, hf: HFTokenizer) -> None:
        super().__init__(hf)
        to_byte = byte_decoder()
        vocab = hf.get_vocab()
        self._bytes = [b""] * self.vocab_size
        for key, i in vocab.items():
            self._bytes[i] = bytes(to_byte[c] for c in key)
        self._utf8: Utf8Table | None = None

    @classmethod
    def train(
        cls,
        texts: str | Iterable[str],
        *,
        vocab_size: int = DEFAULT_VOCAB["bpe"],
        min_frequency: int = DEFAULT_MIN_FREQUENCY["bpe"],
    ) -> BpeTokenizer:
        """The 256 bytes plus merges of pairs seen at least `min_frequency` times."""
        if vocab_size < 256:
            raise TokenizerError("a byte-level BPE vocabulary needs at least 256 tokens")
        if isinstance(texts, str):
            texts = split_for_encoding(texts)
        hf = HFTokenizer(models.BPE())
        hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        hf.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            show_progress=False,
            special_tokens=[],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        )
        hf.train_from_iterator(texts, trainer=trainer)
        return cls(hf)

    def unknown(self, text: str) -> list[str]:
        """Always empty: every text is bytes, and every byte is a token."""
        return []

    def piece(self, token_id: int) -> str:
        """Best effort: bytes of a character split across tokens show as U+FFFD."""
        return self._bytes[token_id].decode("utf-8", errors="replace")

    def stream_decoder(self) -> StreamDecoder:
        return ByteStream(self._bytes)

    def utf8_rows(self, batch: int = 1) -> Utf8Rows:
        """What keeps `batch` rows sampled from this vocabulary valid UTF-8 (choice.py)."""
        if self._utf8 is None:
            self._utf8 = Utf8Table(self._bytes)  # built once: a pass over the vocabulary
        return Utf8Rows(self._utf8, batch)
