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
Python loop walks over the tokens of a text.
"""

from __future__ import annotations

import codecs
import functools
import json
import re
from collections.abc import Iterable, Iterator
from typing import Any, Literal, Protocol

import numpy as np
from tokenizers import Regex, decoders, models, pre_tokenizers, trainers
from tokenizers import Tokenizer as HFTokenizer

from charlstm import files
from charlstm.config import DEFAULT_MIN_FREQUENCY, DEFAULT_VOCAB, TOKENIZERS
from charlstm.errors import CharlstmError
from charlstm.generate.choose import Utf8Rows, Utf8Table

KINDS = TOKENIZERS
# What an out-of-vocabulary word decodes to (U+2047 DOUBLE QUESTION MARK, as sentencepiece).
UNK_PLACEHOLDER = "\u2047"
# The word vocabulary holds two unknown tokens, so that decoding keeps the text's spacing: id 0
# for an unknown token without a leading space (at the start of a line), id 1 for one with it.
# Their keys end in a tab right after a non-space character, which no pre-token can contain, so
# a literal "<unk>" or "⁇" in the corpus stays an ordinary word; the decoder drops the tab.
# They are plain vocabulary entries, not "special" added tokens, because tokenizers matches added
# tokens in the raw text before pre-tokenization.
_UNK_KEYS = (UNK_PLACEHOLDER + "\t", " " + UNK_PLACEHOLDER + "\t")

# GPT-2's trick: a run of whitespace leaves its last space to the next word, so " = Valkyria
# Chronicles III = \n" becomes " =", " Valkyria", " Chronicles", " III", " =", " \n".
WORD_PATTERN = r" ?\S+|\s+(?!\S)|\s+"
# The same pattern for Python's `re`, whose \s also matches U+001C..U+001F (Oniguruma's, used by
# tokenizers, does not): spell out Oniguruma's whitespace so both cut text identically.
_WS = "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
_PRE_TOKEN_RE = re.compile(f" ?[^{_WS}]+|[{_WS}]+(?![^{_WS}])|[{_WS}]+")
# Where every pre-tokenizer here splits anyway: a space between two non-space characters.
_SAFE_CUT_RE = re.compile(f"(?<=[^{_WS}]) (?=[^{_WS}])")

OnUnknown = Literal["error", "skip", "token"]
# Characters handed to Rust per encode_batch call: enough pieces to keep every core busy.
_BATCH_CHARS = 8 << 20


class TokenizerError(CharlstmError):
    """Text the tokenizer cannot encode; the message is one line for the user."""


class StreamDecoder(Protocol):
    """Turns sampled ids, one at a time, into text ready to print."""

    def push(self, token_id: int) -> str: ...

    def flush(self) -> str: ...


class PieceStream:
    """Stream decoder for tokenizers whose every token is whole text (char, word)."""

    def __init__(self, tokenizer: CharTokenizer | WordTokenizer) -> None:
        self._piece = tokenizer.piece

    def push(self, token_id: int) -> str:
        return self._piece(token_id)

    def flush(self) -> str:
        return ""


class ByteStream:
    """Stream decoder for byte-level tokens: holds back a character split across tokens.

    Invalid UTF-8 becomes U+FFFD, as in `decode`; a character still unfinished at the end is
    left out by `flush()` (a sample cut short by its length mid-character ends before it), so
    the pieces are `decode(ids)` less that. Sampling never makes invalid UTF-8 (choice.py).
    """

    def __init__(self, token_bytes: list[bytes]) -> None:
        self._bytes = token_bytes
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token_id: int) -> str:
        return self._utf8.decode(self._bytes[token_id])

    def flush(self) -> str:
        self._utf8.reset()  # all it holds is the start of a character (invalid bytes are out)
        return ""


def _resolve_mode(skip_unknown: bool, on_unknown: OnUnknown | None) -> OnUnknown:
    if on_unknown is None:
        return "skip" if skip_unknown else "error"
    if on_unknown not in ("error", "skip", "token"):
        raise ValueError(f"on_unknown must be 'error', 'skip' or 'token', not {on_unknown!r}")
    if skip_unknown and on_unknown != "skip":
        raise ValueError(f"skip_unknown=True contradicts on_unknown={on_unknown!r}")
    return on_unknown


def _dtype_for(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16 if vocab_size <= 2**16 else np.uint32)


def code_points(text: str) -> np.ndarray:
    """The Unicode code point of each character, (len(text),): bytes for ASCII text (the common
    case, 4x less memory), else uint32."""
    if text.isascii():
        return np.frombuffer(text.encode("ascii"), dtype=np.uint8)
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)


def split_for_encoding(text: str, approx_size: int = 1 << 20) -> list[str]:
    """Cut `text` into pieces of about `approx_size` characters for batch encoding.

    Cuts fall only right before a space between two non-space characters, where the word and
    BPE pre-tokenizers split anyway, so the encodings of the pieces, concatenated, equal the
    encoding of the whole text. A piece may be longer when no such space comes soon (text
    without spaces stays whole).
    """
    if approx_size < 1:
        raise ValueError("approx_size must be positive")
    pieces, start = [], 0
    while len(text) - start > approx_size:
        cut = _SAFE_CUT_RE.search(text, start + approx_size)
        if cut is None:
            break
        pieces.append(text[start : cut.start()])
        start = cut.start()
    pieces.append(text[start:])
    return pieces


def safe_cut(text: str, tail: int = 1 << 16) -> int:
    """The last place in the final `tail` characters of `text` where `split_for_encoding` may
    cut (a space between two non-space characters), or -1 when there is none."""
    last = -1
    for m in _SAFE_CUT_RE.finditer(text, max(0, len(text) - tail)):
        last = m.start()
    return last


def _batches(chunks: Iterable[str], batch_chars: int) -> Iterator[list[str]]:
    batch: list[str] = []
    size = 0
    for chunk in chunks:
        batch.append(chunk)
        size += len(chunk)
        if size >= batch_chars:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def _unknown_message(what: str, names: list[str]) -> str:
    shown = ", ".join(repr(n) for n in names[:10])
    more = f" and {len(names) - 10:,} more" if len(names) > 10 else ""
    return f"{what} the model never saw: {shown}{more}"


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
        return _dtype_for(self.vocab_size)

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
        mode = _resolve_mode(skip_unknown, on_unknown)
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
        return _dtype_for(self.vocab_size)

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
        for batch in _batches(chunks, batch_chars):
            for chunk, ids in zip(batch, self._raw_batch(batch), strict=True):
                yield self._finish(chunk, ids, mode)

    def unknown(self, text: str) -> list[str]:
        """The distinct out-of-vocabulary tokens of `text` in order of appearance.

        Words come without their leading space; an unknown run of whitespace comes as it is.
        """
        names = (
            n
            for _, ns in self._encode_pieces(split_for_encoding(text), "error", _BATCH_CHARS)
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
        mode = _resolve_mode(skip_unknown, on_unknown)
        out, names = [], []
        for ids, ns in self._encode_pieces(split_for_encoding(text), mode, _BATCH_CHARS):
            out.append(ids)
            names += ns
        if names:
            raise TokenizerError(_unknown_message("words", list(dict.fromkeys(names))))
        return np.concatenate(out)

    def encode_chunks(
        self,
        chunks: Iterable[str],
        *,
        on_unknown: OnUnknown = "error",
        batch_chars: int = _BATCH_CHARS,
    ) -> Iterator[np.ndarray]:
        """The ids of each chunk in turn, encoded by Rust in batches of about `batch_chars`.

        Feed it `split_for_encoding(text)` and the arrays concatenate to `encode(text)`. With
        on_unknown="error" the first chunk holding an unknown word raises TokenizerError.
        """
        mode = _resolve_mode(False, on_unknown)
        for ids, names in self._encode_pieces(chunks, mode, batch_chars):
            if names:
                raise TokenizerError(_unknown_message("words", list(dict.fromkeys(names))))
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
    # Both unknown tokens (_UNK_KEYS): 0 without, 1 with a leading space.
    unknown_ids = tuple(range(len(_UNK_KEYS)))

    def __init__(self, hf: HFTokenizer) -> None:
        super().__init__(hf)
        if [hf.token_to_id(k) for k in _UNK_KEYS] != [0, 1]:
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
            vocab_size=vocab_size - len(_UNK_KEYS),
            min_frequency=min_frequency,
            show_progress=False,
            special_tokens=[],
        )
        counter.train_from_iterator(texts, trainer=trainer)
        # The trainer numbers words by falling frequency; shift them past the unknown tokens.
        # Rebuilding (rather than passing special_tokens) keeps those out of the added tokens.
        words = sorted(counter.get_vocab().items(), key=lambda kv: kv[1])
        vocab = {k: i for i, k in enumerate(_UNK_KEYS)}
        vocab.update((w, i + len(_UNK_KEYS)) for i, (w, _) in enumerate(words))
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
            end = _PRE_TOKEN_RE.match(text, start).end()
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
    hf = HFTokenizer(models.WordLevel(vocab, unk_token=_UNK_KEYS[0]))
    hf.pre_tokenizer = pre_tokenizers.Split(Regex(WORD_PATTERN), behavior="isolated")
    # Drop the tab that makes the unknown keys impossible pre-tokens, then concatenate.
    hf.decoder = decoders.Sequence(
        [decoders.Replace(UNK_PLACEHOLDER + "\t", UNK_PLACEHOLDER), decoders.Fuse()]
    )
    return hf


def _byte_decoder() -> dict[str, int]:
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
        to_byte = _byte_decoder()
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
        if [vocab.get(k) for k in _UNK_KEYS] != [0, 1]:
            raise bad("its unknown tokens are not at ids 0 and 1")
        return
    alphabet = _byte_decoder()
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
