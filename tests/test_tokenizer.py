import io

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import pre_tokenizers

from charlstm.data.hf_tokenizers import BpeTokenizer, WordTokenizer, byte_decoder
from charlstm.data.pieces import (
    DEFAULT_VOCAB,
    PRE_TOKEN_RE,
    UNK_PLACEHOLDER,
    TokenizerError,
    split_for_encoding,
)
from charlstm.data.tokenizer import CharTokenizer, tokenizer_from_dict, train_tokenizer

FAST = settings(max_examples=50, deadline=None)

# Words with punctuation attached, a literal "<unk>" as in wikitext-2, and non-ASCII.
WORDS = ["the", "cat", "sat,", "on", "(mat).", "<unk>", "café", "世界", "don't", "="]
SEPS = [" ", "  ", "\n", " \n", "\n\n", "\t", " \t ", "\n "]
OOV = ["dog", "zebra!", "<unk", UNK_PLACEHOLDER]
BPE_CORPUS = "Hello, world! Héllo wörld. 世界 你好 🙂 hello there\n\tthe end  " * 4


@pytest.fixture(scope="module")
def word() -> WordTokenizer:
    # Every word after every separator, and at the start and end of a text, so that any text
    # built from WORDS and SEPS has all its tokens in the vocabulary.
    texts = [s + w + s for s in SEPS for w in WORDS] + WORDS
    return WordTokenizer.train(texts, vocab_size=1000, min_frequency=1)


@pytest.fixture(scope="module")
def bpe() -> BpeTokenizer:
    return BpeTokenizer.train(BPE_CORPUS, vocab_size=300, min_frequency=2)


@st.composite
def word_texts(draw, words: list[str]) -> tuple[list[str], str]:
    """(parts, text): words joined by separators, with optional leading/trailing whitespace."""
    chosen = draw(st.lists(st.sampled_from(words), min_size=1, max_size=8))
    seps = draw(st.lists(st.sampled_from(SEPS), min_size=len(chosen) + 1, max_size=len(chosen) + 1))
    seps[0] = draw(st.sampled_from(["", *SEPS]))
    seps[-1] = draw(st.sampled_from(["", *SEPS]))
    parts = [seps[0]]
    for w, s in zip(chosen, seps[1:], strict=True):
        parts += [w, s]
    return parts, "".join(parts)


# --- char -------------------------------------------------------------------------------------


def test_code_points_not_bytes_round_trip():
    text = "Hello, 世界! café 🙂\n"
    tok = CharTokenizer.train(text)
    assert tok.vocab_size == len(set(text))  # 世, é and 🙂 are one token each
    ids = tok.encode(text)
    assert ids.dtype == np.uint16 and len(ids) == len(text)
    assert tok.decode(ids) == text


def test_unknown_characters_named_or_skipped():
    tok = CharTokenizer.train("abc")
    with pytest.raises(TokenizerError, match="'xz'"):
        tok.encode("axbz")
    assert tok.decode(tok.encode("axbz", skip_unknown=True)) == "ab"
    assert tok.decode(tok.encode("axbz", on_unknown="skip")) == "ab"
    with pytest.raises(TokenizerError, match="no unknown token"):
        tok.encode("axbz", on_unknown="token")
    assert tok.unknown("axbzx") == ["x", "z"]


def test_saved_as_plain_dict():
    tok = CharTokenizer.train("hello world")
    again = tokenizer_from_dict(tok.to_dict())
    assert again.chars == tok.chars
    assert list(again.encode("low")) == list(tok.encode("low"))
    assert again.fingerprint() == tok.fingerprint() != CharTokenizer.train("hello").fingerprint()


def test_char_stream_decoder_is_piece_by_piece():
    tok = CharTokenizer.train("ab🙂\n")
    stream = tok.stream_decoder()
    assert "".join(stream.push(int(i)) for i in tok.encode("b🙂a\n")) + stream.flush() == "b🙂a\n"


# --- word -------------------------------------------------------------------------------------


def test_word_tokens_keep_their_leading_space():
    tok = WordTokenizer.train([" = Valkyria Chronicles III = \n"], vocab_size=100, min_frequency=1)
    ids = tok.encode(" = Valkyria Chronicles III = \n")
    assert [tok.piece(int(i)) for i in ids] == [
        " =",
        " Valkyria",
        " Chronicles",
        " III",
        " =",
        " \n",
    ]


@FAST
@given(st.data())
def test_word_round_trip_in_vocabulary(word, data):
    _, text = data.draw(word_texts(WORDS))
    assert word.unknown(text) == []
    ids = word.encode(text)
    assert ids.dtype == np.uint16 and not np.isin(ids, [0, 1]).any()
    assert word.decode(ids) == text
    assert "".join(word.piece(int(i)) for i in ids) == text


@FAST
@given(st.data())
def test_word_unknown_becomes_placeholder_and_nothing_else_changes(word, data):
    parts, text = data.draw(word_texts(WORDS + OOV))
    expected = "".join(UNK_PLACEHOLDER if p in OOV else p for p in parts)
    assert word.decode(word.encode(text, on_unknown="token")) == expected
    assert word.unknown(text) == list(dict.fromkeys(p for p in parts if p in OOV))
    # Skipping drops an unknown word with its leading space (the last of the separator).
    kept = list(parts)
    for j, p in enumerate(parts):
        if p in OOV:
            kept[j] = ""
            kept[j - 1] = kept[j - 1][:-1] if kept[j - 1].endswith(" ") else kept[j - 1]
    assert word.decode(word.encode(text, on_unknown="skip")) == "".join(kept)


@FAST
@given(st.text(max_size=40))
def test_word_python_mirror_of_the_pre_tokenizer(word, text):
    """The Python pattern that locates unknown words cuts exactly as tokenizers does."""
    rust = [t for t, _ in word.hf.pre_tokenizer.pre_tokenize_str(text)]
    assert PRE_TOKEN_RE.findall(text) == rust
    vocab = word.hf.get_vocab()
    expected = "".join(
        t if t in vocab else (" " if t[0] == " " else "") + UNK_PLACEHOLDER for t in rust
    )
    assert word.decode(word.encode(text, on_unknown="token")) == expected


def test_literal_unk_is_an_ordinary_word(word):
    ids = word.encode(" <unk> the <unk>")
    assert ids[0] >= 2 and word.decode(ids) == " <unk> the <unk>"
    assert word.piece(0) == UNK_PLACEHOLDER and word.piece(1) == " " + UNK_PLACEHOLDER


def test_word_unknowns_named_skipped_or_tokens(word):
    with pytest.raises(TokenizerError, match="'dog', 'zebra!'"):
        word.encode("the dog sat, zebra! dog")
    many = " ".join(f"w{i}" for i in range(15))
    with pytest.raises(TokenizerError, match="'w9' and 5 more"):
        word.encode(many)
    assert word.decode(word.encode("the dog sat,", skip_unknown=True)) == "the sat,"
    assert list(word.encode("dog cat dog", on_unknown="token")[[0, 2]]) == [0, 1]
    assert word.unknown("\u3000the") == ["\u3000"]  # an unseen run of whitespace


def test_word_vocab_size_and_min_frequency():
    texts = ["a a a a b b b c c d"]
    tok = WordTokenizer.train(texts, vocab_size=4, min_frequency=1)
    assert tok.vocab_size == 4  # two unknown tokens + " a", " b"
    assert tok.unknown("a b c d") == ["a", "c", "d"]
    tok = WordTokenizer.train(texts, vocab_size=100, min_frequency=2)
    assert tok.unknown("x a b c d") == ["x", "d"]
    with pytest.raises(TokenizerError):
        WordTokenizer.train(texts, vocab_size=2, min_frequency=1)


# --- bpe --------------------------------------------------------------------------------------


@FAST
@given(st.text())
def test_bpe_round_trips_any_text(bpe, text):
    ids = bpe.encode(text)
    assert bpe.unknown(text) == []
    assert bpe.decode(ids) == text
    stream = bpe.stream_decoder()
    assert "".join(stream.push(int(i)) for i in ids) + stream.flush() == text


@FAST
@given(st.data())
def test_bpe_stream_matches_decode_for_any_ids(bpe, data):
    ids = data.draw(st.lists(st.integers(0, bpe.vocab_size - 1), max_size=20))
    stream = bpe.stream_decoder()
    out = "".join(stream.push(i) for i in ids) + stream.flush()
    full = bpe.decode(ids)  # the stream leaves out a character unfinished at the end
    assert full == out or (full.startswith(out) and set(full[len(out) :]) == {"\ufffd"})


def test_bpe_stream_holds_back_a_split_character(bpe):
    ids = bpe.encode("🐙")  # unseen in training: its four bytes take several tokens
    assert len(ids) > 1
    stream = bpe.stream_decoder()
    assert [stream.push(int(i)) for i in ids] == [""] * (len(ids) - 1) + ["🐙"]
    assert bpe.piece(int(ids[0])) == "\ufffd"


def test_bpe_vocab_size_and_min_frequency():
    assert BpeTokenizer.train(BPE_CORPUS, vocab_size=270, min_frequency=2).vocab_size == 270
    assert BpeTokenizer.train(BPE_CORPUS, vocab_size=300, min_frequency=100).vocab_size == 256
    with pytest.raises(TokenizerError, match="256"):
        BpeTokenizer.train(BPE_CORPUS, vocab_size=100, min_frequency=2)


def test_byte_table_is_the_byte_level_alphabet():
    assert sorted(byte_decoder()) == sorted(pre_tokenizers.ByteLevel.alphabet())


# --- shared -----------------------------------------------------------------------------------


def test_saved_dicts_survive_torch_weights_only(word, bpe):
    text = "the cat sat,\n(mat). Héllo 世界 🙂 dog"
    for tok in (word, bpe, CharTokenizer.train(text)):
        buf = io.BytesIO()
        torch.save({"tokenizer": tok.to_dict()}, buf)
        buf.seek(0)
        again = tokenizer_from_dict(torch.load(buf, weights_only=True)["tokenizer"])
        assert type(again) is type(tok) and again.fingerprint() == tok.fingerprint()
        a, b = again.encode(text, on_unknown="skip"), tok.encode(text, on_unknown="skip")
        assert a.dtype == b.dtype and list(a) == list(b)
    with pytest.raises(TokenizerError, match="damaged"):
        tokenizer_from_dict({"kind": "bpe", "json": "{"})


@FAST
@given(
    text=st.lists(st.sampled_from([*"ab é世🙂\n\t", "  ", "the", " cat", "dog"]), max_size=30).map(
        "".join
    ),
    size=st.integers(1, 12),
)
def test_chunked_encoding_equals_whole(word, bpe, text, size):
    pieces = split_for_encoding(text, size)
    assert "".join(pieces) == text
    char = CharTokenizer.train("ab é世\n")
    for tok in (word, bpe, char):
        mode = "skip" if tok is char else "token"
        whole = tok.encode(text, on_unknown=mode)
        chunks = list(tok.encode_chunks(pieces, on_unknown=mode, batch_chars=size * 2))
        assert len(chunks) == len(pieces)
        joined = np.concatenate(chunks) if chunks else np.zeros(0, tok.id_dtype)
        assert joined.dtype == tok.id_dtype and list(joined) == list(whole)


def test_split_cuts_only_between_words():
    assert split_for_encoding("aa bb  cc\ndd ee", 1) == ["aa", " bb  cc\ndd", " ee"]
    assert split_for_encoding("nospaces" * 10, 4) == ["nospaces" * 10]


def test_train_tokenizer_factory():
    assert train_tokenizer("char", "abc").kind == "char"
    assert train_tokenizer("word", "a b").kind == "word"
    assert train_tokenizer("bpe", "a b", vocab_size=260).kind == "bpe"
    assert DEFAULT_VOCAB["word"] > DEFAULT_VOCAB["bpe"] >= 256
    with pytest.raises(TokenizerError, match="char, word, bpe"):
        train_tokenizer("sentencepiece", "abc")
    with pytest.raises(TokenizerError):
        train_tokenizer("char", "abc", vocab_size=10)
    with pytest.raises(TokenizerError, match="'x'"):
        train_tokenizer("word", "a b").encode("x")
