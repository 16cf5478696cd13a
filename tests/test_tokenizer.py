import numpy as np
import pytest

from charlstm.tokenizer import CharTokenizer, TokenizerError, tokenizer_from_dict


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
    assert tok.unknown("axbzx") == ["x", "z"]


def test_saved_as_plain_dict():
    tok = CharTokenizer.train("hello world")
    again = tokenizer_from_dict(tok.to_dict())
    assert again.chars == tok.chars
    assert list(again.encode("low")) == list(tok.encode("low"))
