"""compress / decompress: round trips, exactness across engines and threads, the file format,
and every way a file can be wrong ending in one stderr line, exit 1 and nothing on stdout."""

from __future__ import annotations

import hashlib
import os
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from charlstm.cli import app
from charlstm.compress.codec import Codec
from charlstm.compress.exact import ExactModel, QuantizeError
from charlstm.compress.exact_ops import tables
from charlstm.compress.format import (
    MAGIC,
    MAX_SEGMENTS,
    MAX_TOKENS_PER_WORD,
    CompressError,
    leb128,
    read_header,
    segment_count,
)
from charlstm.data.hf_tokenizers import BpeTokenizer, WordTokenizer
from charlstm.data.tokenizer import CharTokenizer
from charlstm.formats.checkpoint import load_checkpoint, read_checkpoint
from charlstm.model.language_model import LanguageModel, ModelConfig

from .conftest import PLAY

runner = CliRunner()
FAST = settings(max_examples=25, deadline=None)
TINY = ["--hidden", "24", "--layers", "2", "-b", "4", "-t", "16", "--threads", "1", "--lr", "1e-2",
        "--warmup", "5", "-q"]  # fmt: skip


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A tiny char model trained through the CLI on the play (a few seconds), shared."""
    root = tmp_path_factory.mktemp("compress")
    (root / "play.txt").write_text(PLAY, encoding="utf-8")
    args = ["train", str(root / "play.txt"), "--steps", "60", "--name", "r",
            "--checkpoints", str(root / "checkpoints"), *TINY]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.stderr
    return root / "checkpoints" / "r"


@pytest.fixture(scope="module")
def codec(run_dir) -> Codec:
    ckpt = read_checkpoint(run_dir / "best.pt")
    return Codec(ckpt.model(), ckpt.tokenizer)


@pytest.fixture(scope="module")
def fast(codec) -> Codec:
    """The same model on the numpy engine: the same integers, faster for a few rows."""
    numpy_codec = Codec.__new__(Codec)
    numpy_codec.__dict__.update(codec.__dict__, engine="numpy")
    return numpy_codec


def _random_model(vocab: int, hidden: int = 16, seed: int = 0, **cfg) -> LanguageModel:
    torch.manual_seed(seed)
    return LanguageModel(ModelConfig(vocab_size=vocab, hidden_size=hidden, **cfg)).eval()


# ----------------------------------------------------------------------------------- round trips


@FAST
@given(st.text())
def test_any_unicode_text_round_trips(codec, text):
    data = text.encode("utf-8")
    assert codec.decompress(codec.compress(data)) == data


@FAST
@given(st.binary(max_size=200))
def test_any_bytes_round_trip(codec, data):
    # Bytes that are not UTF-8 arrive as surrogate escapes and are coded literally.
    assert codec.decompress(codec.compress(data)) == data


def test_empty_one_character_and_unknown_characters(codec):
    for data in (b"", b"R", b"\n", "€".encode(), "ROMEO: 漢字 🎭 ünïcödé\n".encode()):
        blob = codec.compress(data)
        assert codec.decompress(blob) == data
    known = b"ROMEO:\nBut soft, what light"
    unknown = "ROMEO:\nBut soft, what ✓ light".encode()  # one character the model never saw
    extra = len(codec.compress(unknown)) - len(codec.compress(known))
    # The escape (~16 bits) and the code point (~20 bits), and the model still predicting well.
    assert 2 <= extra <= 12
    assert codec.symbols(unknown)[1].tolist() == [ord("✓")]


def test_segments_change_the_bytes_not_the_text(codec):
    data = PLAY.encode()
    sizes = []
    for s in (1, 3, 17, MAX_SEGMENTS):
        blob = codec.compress(data, segments=s)
        assert read_header(blob).segments == s
        assert codec.decompress(blob) == data
        sizes.append(len(blob))
    assert sizes[0] < sizes[-1]  # every segment starts from nothing: the most is the worst
    with pytest.raises(CompressError, match="segments must be between"):
        codec.compress(b"abc", segments=4)
    with pytest.raises(CompressError, match="segments must be between 1 and 256"):
        codec.compress(data, segments=MAX_SEGMENTS + 1)  # the batch a decoder allocates
    assert segment_count(0) == 1 and segment_count(5000) == 2 and segment_count(10**9) == 256


def test_one_megabyte_round_trips_fast():
    tok = CharTokenizer.train(PLAY)
    codec = Codec(_random_model(tok.vocab_size, hidden=8, num_layers=1), tok)
    data = (PLAY * (1_000_000 // len(PLAY) + 1)).encode()[:1_000_000]
    t0 = time.perf_counter()
    blob = codec.compress(data)
    assert codec.decompress(blob) == data
    assert read_header(blob).segments == 256
    assert time.perf_counter() - t0 < 30  # ~4 s each way on one core


def test_bpe_model_round_trips_and_word_model_is_refused():
    bpe = BpeTokenizer.train(PLAY, vocab_size=300)
    codec = Codec(_random_model(bpe.vocab_size, embed_size=16, tie_weights=False), bpe)
    for data in (PLAY.encode()[:300], "漢字 and 🎭\n".encode(), b"\xff\xfeok\xc3", b""):
        assert codec.decompress(codec.compress(data)) == data
    word = WordTokenizer.train(PLAY, vocab_size=50)
    with pytest.raises(CompressError, match="char or bpe model"):
        Codec(_random_model(word.vocab_size), word)


def test_adaptive_softmax_is_refused():
    wide = CharTokenizer("".join(chr(0x4E00 + i) for i in range(9000)))
    with pytest.raises(CompressError, match="full softmax"):
        Codec(_random_model(9000, softmax_cutoffs=[2000]), wide)


# ----------------------------------------------------------------------------------- exactness


def test_same_integers_on_every_engine_thread_count_and_batch(codec):
    """The frequencies are integers computed exactly: torch on 1 or all threads, numpy, a row
    alone or in a batch of 16 all give the very same ones."""
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, codec.exact.vocab_size, size=(30, 16))

    def trace(engine: str, threads: int, rows: slice = slice(None)) -> np.ndarray:
        torch.set_num_threads(threads)
        run = codec.exact.start(len(range(16)[rows]), engine)
        out = []
        for step in tokens:
            out.append(run.frequencies())
            run.advance(step[rows])
        return np.stack(out)

    base = trace("torch", 1)
    assert np.array_equal(base, trace("torch", os.cpu_count() or 1))
    assert np.array_equal(base, trace("numpy", 1))
    assert np.array_equal(base[:, 5:6], trace("torch", 1, slice(5, 6)))
    assert (base >= 0).all() and (base.sum(axis=2) == (1 << 24) - base.shape[2]).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_gpu_computes_the_same_integers(codec):
    data = PLAY.encode()[:1000]
    gpu = Codec.__new__(Codec)
    gpu.__dict__.update(codec.__dict__, device="cuda")
    blob = codec.compress(data)
    assert gpu.compress(data) == blob and gpu.decompress(blob) == data


def test_compressed_bytes_equal_across_engines_and_threads(codec):
    data = PLAY.encode()[:1500]
    blobs = []
    for engine in ("torch", "numpy"):
        for threads in (1, os.cpu_count() or 1):
            torch.set_num_threads(threads)
            c = Codec.__new__(Codec)
            c.__dict__.update(codec.__dict__, engine=engine)
            blobs.append(c.compress(data))
    assert all(b == blobs[0] for b in blobs)
    assert c.decompress(blobs[0]) == data


def test_exact_model_tracks_the_float_model(codec, run_dir):
    """Same probabilities as the float model to ~1e-4, so the same size to within 0.1%."""
    net = read_checkpoint(run_dir / "best.pt").model()
    ids = codec.tokenizer.encode(PLAY[:400]).astype(np.int64)
    start = codec.exact.start_token
    with torch.no_grad():
        logits, _ = net(torch.tensor([[start, *ids[:-1]]]))
    p_float = torch.softmax(logits[0].double(), -1).numpy()  # (T, V)
    run = codec.exact.start(1)
    exact = []
    for t in ids:
        exact.append(run.frequencies()[0])
        run.advance(np.array([t]))
    freqs = np.stack(exact) + 1  # the coder gives every symbol +1
    p_exact = freqs[:, :-1] / (1 << 24)
    assert np.abs(p_exact - p_float).max() < 1e-3
    rows = np.arange(len(ids))
    bits_exact = -np.log2(p_exact[rows, ids]).sum()
    bits_float = -np.log2(p_float[rows, ids]).sum()
    assert bits_exact == pytest.approx(bits_float, rel=1e-3)


def test_tables_and_format_are_pinned():
    """A change in the tables (a Python whose decimal rounds differently) or in the coder
    (a constriction that quantises differently) would make old files undecodable: caught here."""
    t = tables()
    raw = b"".join(a.astype("<i8").tobytes() for a in (t.sigmoid, t.tanh, t.exp))
    digest = hashlib.sha256(raw).hexdigest()
    assert digest[:16] == "6077119c8289161b"
    assert t.sigmoid[len(t.sigmoid) // 2] == 1 << 14  # σ(0) = ½
    assert t.tanh[0] == -(1 << 15) and t.tanh[-1] == 1 << 15
    tok = CharTokenizer.train(PLAY)
    net = _random_model(tok.vocab_size)
    with torch.no_grad():  # weights from a formula, not from torch's initialisation or RNG
        for k, p in enumerate(net.parameters()):
            i = torch.arange(p.numel(), dtype=torch.float64)
            p.copy_(((i * 7919 + k * 104729) % 1001 - 500).view_as(p) / 1024)
    codec = Codec(net, tok)
    blob = codec.compress(PLAY[:500].encode())
    assert hashlib.sha256(blob).hexdigest()[:16] == "07b597c12edc9baf"
    # Format 1 is format 2 without raw segments: the same file with version byte 1 and the
    # fingerprint of before the one model fingerprint (and so its header's CRC) is the very
    # file charlstm wrote before format 2, and still decodes.
    v1 = _with_version(blob, 1, fingerprint=codec.legacy_fingerprint())
    assert hashlib.sha256(v1).hexdigest()[:16] == "4996ea9eb8d97810"
    assert codec.decompress(v1) == PLAY[:500].encode()


def test_weights_too_large_for_exact_sums_are_refused():
    net = _random_model(5)
    with torch.no_grad():
        net.rnn.weight_hh_l0.fill_(2.0**13)  # 16 products of 2^33 · 2^15 pass 2^52
    with pytest.raises(QuantizeError, match="too large to compute exactly"):
        ExactModel.from_model(net, start_token=0)
    with torch.no_grad():
        net.rnn.weight_hh_l0.fill_(2.0**20)
    with pytest.raises(QuantizeError, match="too large to quantise"):
        ExactModel.from_model(net, start_token=0)


# ----------------------------------------------------------------------------------- the CLI


def _cli(*args: str, stdin: bytes = b""):
    return runner.invoke(app, list(args), input=stdin)


def test_cli_round_trip_through_stdin_and_files(run_dir, tmp_path):
    data = "JULIET:\nO Romeo, Romeo! ✓\n".encode() * 20
    (tmp_path / "in.txt").write_bytes(data)
    packed = _cli("compress", str(tmp_path / "in.txt"), "-m", str(run_dir))
    assert packed.exit_code == 0, packed.stderr
    assert packed.stdout_bytes[:4] == MAGIC
    assert "bits/char" in packed.stderr
    from_stdin = _cli("compress", "-m", str(run_dir), stdin=data)
    assert from_stdin.stdout_bytes == packed.stdout_bytes
    back = _cli("decompress", "-m", str(run_dir), "--engine", "numpy", stdin=packed.stdout_bytes)
    assert back.exit_code == 0, back.stderr
    assert back.stdout_bytes == data
    quiet = _cli("decompress", "-m", str(run_dir), "-q", stdin=packed.stdout_bytes)
    assert quiet.stdout_bytes == data and quiet.stderr == ""


def _fails(result, words: str) -> None:
    assert result.exit_code == 1, result.stderr
    assert result.stdout_bytes == b""
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("charlstm: error: ") and words in line, result.stderr


def test_cli_wrong_truncated_or_damaged_files_fail_cleanly(run_dir, tmp_path):
    data = PLAY.encode()[:3000]
    blob = _cli("compress", "-m", str(run_dir), stdin=data).stdout_bytes
    header = read_header(blob)
    # Another model: same shape, other weights.
    other = tmp_path / "other.pt"
    ckpt = load_checkpoint(run_dir / "best.pt")
    ckpt["model"] = {k: v + 0.01 for k, v in ckpt["model"].items()}
    torch.save(ckpt, other)
    _fails(_cli("decompress", "-m", str(other), stdin=blob), "another model")
    _fails(_cli("decompress", "-m", str(run_dir), stdin=blob[:-5]), "truncated")
    _fails(_cli("decompress", "-m", str(run_dir), stdin=blob + b"\0"), "damaged")
    for at in (8, header.size - 2, header.size + 3, len(blob) // 2, len(blob) - 1):
        flipped = bytearray(blob)
        flipped[at] ^= 0x10
        _fails(_cli("decompress", "-m", str(run_dir), stdin=bytes(flipped)), "damaged")
    bad = _cli("decompress", "-m", str(run_dir), stdin=b"plain text, not compressed")
    assert bad.exit_code == 1 and bad.stdout_bytes == b""
    assert bad.stderr.strip() == "charlstm: error: not a charlstm compressed file"
    truncated_header = _cli("decompress", "-m", str(run_dir), stdin=blob[:10])
    assert truncated_header.exit_code == 1 and "truncated" in truncated_header.stderr
    missing = _cli("compress", str(tmp_path / "nope.txt"), "-m", str(run_dir))
    assert missing.exit_code == 1 and "cannot read" in missing.stderr


def test_cli_other_process_one_thread_numpy_decodes_all_threads_torch(run_dir, tmp_path):
    """Across processes and thread settings: compressed here with torch on every core, then
    decompressed by a fresh process with numpy (OpenBLAS on one thread) and torch on one."""
    data = (PLAY * 2).encode()
    torch.set_num_threads(os.cpu_count() or 1)
    blob = _cli("compress", "-m", str(run_dir), "--threads", "0", stdin=data).stdout_bytes
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    for engine in ("numpy", "torch"):
        done = subprocess.run(
            [sys.executable, "-m", "charlstm", "decompress", "-m", str(run_dir), "--engine",
             engine, "--threads", "1", "-q"],
            input=blob, capture_output=True, env=env, timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert done.stdout == data and done.stderr == b""


def test_cli_says_how_to_install_the_coder(run_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "constriction", None)  # as if not installed
    result = _cli("compress", "-m", str(run_dir), stdin=b"abc")
    assert result.exit_code == 1 and result.stdout_bytes == b""
    assert "pip install 'charlstm[compress]'" in result.stderr


def test_cli_refuses_more_than_256_segments(run_dir):
    _fails(_cli("compress", "-m", str(run_dir), "--segments", "300", stdin=PLAY.encode()),
           "segments must be between 1 and 256")  # fmt: skip


# ----------------------------------------------------------------------------------- raw segments


def _bound(blob: bytes, data: bytes) -> int:
    """How much larger than its input a file may be: its header (which holds a few bytes per
    segment) and the coder's last words."""
    return len(data) + read_header(blob).size + 8


def test_random_bytes_are_stored_raw_never_much_larger(fast, run_dir):
    """#27: 3,000 bytes of binary grew to 13,005; now the segments the model cannot predict are
    stored as they are."""
    rng = np.random.default_rng(0)
    for size, segments in ((3000, 3), (1, None), (50, 7)):  # (3,000 in one: the CLI below)
        data = rng.bytes(size)
        blob = fast.compress(data, segments=segments)
        assert fast.decompress(blob) == data
        header = read_header(blob)
        assert header.raw_segments == header.segments and header.tokens == 0
        assert len(blob) <= _bound(blob, data) <= len(data) + 40 + 3 * header.segments
    result = _cli("compress", "-m", str(run_dir), "--engine", "numpy", stdin=rng.bytes(3000))
    assert result.exit_code == 0 and "1 stored raw" in result.stderr
    assert len(result.stdout_bytes) <= 3000 + 40


def test_text_and_binary_mixed_code_the_text_and_store_the_binary(fast):
    rng = np.random.default_rng(1)
    text = PLAY.encode()[:400]
    binary = bytes(rng.integers(0x80, 0xC0, size=800, dtype=np.uint8))  # 1 token a byte
    data = text + binary[:400] + text + binary[400:] + text
    blob = fast.compress(data, segments=5)  # a segment of each
    assert fast.decompress(blob) == data
    header = read_header(blob)
    assert [r for _, r in header.parts] == [False, True, False, True, False]
    assert len(blob) <= _bound(blob, data)
    # The text costs what it costs alone, the binary its own size and a table entry, no more.
    coded_only = len(fast.compress(text * 3, segments=3))
    assert len(blob) <= coded_only + 800 + 3 * 5
    # A BPE model too: its segments may start or end inside a character.
    bpe = BpeTokenizer.train(PLAY, vocab_size=300)
    other = Codec(_random_model(bpe.vocab_size, embed_size=16, tie_weights=False), bpe)
    data = "漢字、ROMEO。".encode() * 20 + rng.bytes(300) + "JULIET ✓".encode() * 15
    for segments in (1, 7):
        blob = other.compress(data, segments=segments)
        assert other.decompress(blob) == data and len(blob) <= _bound(blob, data)


def test_a_model_too_sure_to_need_words_pads_them(codec):
    """N ≤ 1,024·W in every file: an input the model predicts almost perfectly (here 2e-5 bits
    a token) is padded to that many words, and decodes."""
    tok = CharTokenizer("ab\n")
    net = _random_model(tok.vocab_size, hidden=8, num_layers=1)
    with torch.no_grad():
        net.head.bias.copy_(torch.tensor([30.0, 0.0, 0.0]))  # always "a"
    sure = Codec(net, tok)
    data = b"a" * 12_000
    blob = sure.compress(data, segments=8)
    header = read_header(blob)
    assert header.words == -(-12_000 // MAX_TOKENS_PER_WORD)  # 12 words; 1 would have done
    assert sure.decompress(blob) == data


def test_format_1_files_are_still_read(codec):
    data = PLAY.encode()[:700]
    v1 = _with_version(codec.compress(data, segments=3), 1)
    assert read_header(v1).version == 1 and codec.decompress(v1) == data
    for version, words in ((0, "damaged"), (3, "newer than this charlstm reads")):
        with pytest.raises(CompressError, match=words):
            read_header(_with_version(v1, version))
    with pytest.raises(CompressError, match="features this charlstm lacks"):  # no table in 1
        read_header(_craft(v1[6:14], [700, 700, 3, 10], version=1, flags=1))


# ----------------------------------------------------------------------------------- hostile files


def _craft(fingerprint: bytes, numbers: list[int], *, version: int = 2, flags: int = 0,
           table: tuple[int, ...] = (), checksum: bytes = bytes(8), payload: bytes = b"") -> bytes:
    """A header saying whatever it is told, with a valid CRC (as an attacker would write it)."""
    head = MAGIC + bytes([version, flags]) + fingerprint + checksum
    head += b"".join(leb128(v) for v in [*numbers, *table])
    return head + struct.pack("<I", zlib.crc32(head)) + payload  # fmt: skip


def _with_version(blob: bytes, version: int, fingerprint: bytes | None = None) -> bytes:
    size = read_header(blob).size
    fingerprint = fingerprint or blob[6:14]
    head = blob[:4] + bytes([version]) + blob[5:6] + fingerprint + blob[14 : size - 4]
    return head + struct.pack("<I", zlib.crc32(head)) + blob[size:]


def test_crafted_37_byte_file_is_refused_before_any_work(codec, run_dir, monkeypatch):
    """#27: 37 bytes claiming 10^8 tokens in 256 segments and no payload ran 5 minutes at 5.1 GB;
    10^9 tokens and more gave a traceback. Every claim is now checked against what the payload
    can hold, in read_header, before the model loads or anything is allocated."""
    fp = codec.fingerprint()  # copied from any file the model made
    issue = _craft(fp, [10**8, 10**8, 256, 0], version=1)
    assert len(issue) == 37
    monkeypatch.setattr(codec.exact, "start", lambda *a, **k: pytest.fail("the model ran"))
    claims = [[10**8, 10**8, 256, 0], [10**9, 10**9, 256, 0], [2**63, 2**63, 256, 0],
              [10**12, 10**12, 1, 1], [10**6, 1025, 3, 1], [10, 10**4, 1, 10],
              [2**64 - 1, 2**64 - 2, 2**64 - 3, 2**64 - 4], [5, 5, 10**6, 2]]  # fmt: skip
    for numbers in claims:
        for version in (1, 2):
            blob = _craft(fp, numbers, version=version, payload=bytes(4 * min(numbers[3], 4)))
            with pytest.raises(CompressError) as e:
                codec.decompress(blob)
            assert "\n" not in str(e.value) and ("claims" in str(e.value) or "truncated"
                                                 in str(e.value))  # fmt: skip
    # Through the CLI, in a fresh process: refused before the model is even looked for.
    done = subprocess.run(
        [sys.executable, "-m", "charlstm", "decompress", "-m", str(run_dir / "missing.pt"), "-q"],
        input=issue, capture_output=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 1 and done.stdout == b""
    assert done.stderr.decode().strip().splitlines() == [
        "charlstm: error: the compressed file's header is damaged: it claims 100,000,000 "
        "tokens and 100,000,000 bytes, more than its 0 bytes of coded data can hold"
    ]


def test_damaged_payload_stops_when_it_has_decoded_more_than_its_words_hold(codec):
    """Garbage words under a valid header: the information decoded so far outgrows the 32·W
    bits the words hold long before the claimed tokens are reached."""
    data = PLAY.encode()[:600]
    blob = codec.compress(data, segments=2)
    header = read_header(blob)
    rng = np.random.default_rng(3)
    fp, size = codec.fingerprint(), header.size
    # The most tokens these words may claim, over the two segments; the words random.
    tokens = MAX_TOKENS_PER_WORD * header.words
    crafted = _craft(fp, [tokens, tokens, 2, header.words],
                     payload=rng.bytes(4 * header.words))  # fmt: skip
    reached = []
    with pytest.raises(CompressError, match="more than its data can hold"):
        codec.decompress(crafted, progress=lambda done, total: reached.append(done))
    assert max(reached, default=0) < tokens // 4
    assert len(blob) - size == 4 * header.words


def _mutants(blob: bytes, rng: np.random.Generator, fp: bytes) -> list[tuple[str, bytes]]:
    """About 140 hostile variants of a valid file: bit flips, truncations, extensions, each
    header field set to zero, small, huge or "negative" (two's complement) values with a valid
    CRC, crafted segment tables (valid sums, other layouts), other versions and flags, and
    garbage words under a valid header."""
    h = read_header(blob)
    payload = blob[h.size :]
    out: list[tuple[str, bytes]] = []
    for _ in range(20):
        b = bytearray(blob)
        for at in rng.integers(0, len(b), size=int(rng.integers(1, 4))):
            b[at] ^= 1 << int(rng.integers(0, 8))
        out.append(("flip", bytes(b)))
    for at in rng.integers(0, len(blob), size=15):
        out.append(("truncate", blob[:at]))
    for k in (1, 3, 4, 8, 64):
        out.append(("extend", blob + rng.bytes(k)))
    out.append(("extend", blob + bytes(4)))
    numbers = [h.length, h.tokens, h.segments, h.words]
    table = tuple(2 * n + r for n, r in h.parts)
    plain = h.version == 1 or not (blob[5] & 1)
    huge = [0, 1, 2, 255, 256, 257, 1024, 10**8, 10**9, 2**31, 2**32, 2**63 - 1, 2**63,
            2**64 - 1, 2**64 - 7, 2**70 - 1]  # fmt: skip
    for field in range(4):
        for value in [*huge, numbers[field] + 1, max(numbers[field] - 1, 0)]:
            crafted = list(numbers)
            crafted[field] = value
            out.append((f"field{field}={value}", _craft(
                fp, crafted, version=h.version, flags=0 if plain else 1,
                table=() if plain else table, checksum=blob[14:22], payload=payload)))  # fmt: skip
    # Segment tables: the same tokens and words in other layouts (coded, raw, zero, huge).
    n, s = h.tokens, max(h.segments, 1)
    layouts = [(2 * n,), (2, 2 * (n - 1)) if n > 1 else (2,), (2 * n + 1,), (0,), (2 * 2**62,),
               tuple(2 * x for x in rng.multinomial(n, [1 / s] * s)) if n else (3,),
               (2 * n, 3, 3), (3,) * 300, tuple(int(x) for x in rng.integers(0, 2**20, size=5))]
    for t in layouts:
        extra = sum(x >> 1 for x in t if x & 1 and x < 2**40)
        raw_bytes = rng.bytes(min(extra, 4096))
        out.append((f"table{t[:3]}", _craft(
            fp, [h.length, n, len(t), h.words], version=2, flags=1, table=t,
            checksum=blob[14:22], payload=payload[: 4 * h.words] + raw_bytes)))  # fmt: skip
    for version, fl in ((0, 0), (1, 1), (2, 2), (2, 0x81), (3, 0), (255, 0)):
        b = bytearray(blob)
        b[4], b[5] = version, fl
        out.append((f"version{version}/{fl}", bytes(b)))
        out.append((f"version{version}/{fl}+crc", _craft(
            fp, numbers, version=version, flags=fl, table=table if fl & 1 else (),
            checksum=blob[14:22], payload=payload)))  # fmt: skip
    for name, words in (("zeros", bytes(4 * h.words)), ("ones", b"\xff" * (4 * h.words)),
                        ("random", rng.bytes(4 * h.words)), ("random2", rng.bytes(4 * h.words))):
        out.append((f"words={name}", blob[: h.size] + words + payload[4 * h.words :]))
    return out


def test_fuzzed_files_are_refused_in_one_line_or_decoded_exactly(fast):
    """#27's goal: ≥ 500 mutated .clz files through the path the CLI takes (read_header, then
    Codec.decompress): each one is refused with a one-line CompressError or decodes to exactly
    the original, and never works more than its size allows."""
    rng = np.random.default_rng(27)
    text = PLAY.encode()
    bases = [
        text[:150],                                            # plain text, 3 segments
        "ROMEO ✓ 漢字\n".encode() + b"\xff\x00\xfe" + text[:60],  # escapes and invalid UTF-8
        text[:100] + rng.bytes(120) + text[:100],              # a raw segment: the table
        b"",                                                   # nothing
        text[200:300],                                         # written as format 1
    ]  # fmt: skip
    blobs = [fast.compress(bases[0], segments=3), fast.compress(bases[1], segments=2),
             fast.compress(bases[2], segments=3), fast.compress(b""),
             _with_version(fast.compress(bases[4], segments=2), 1)]  # fmt: skip
    assert read_header(blobs[2]).raw_segments == 1
    cases, outcomes, slowest = 0, {"refused": 0, "decoded": 0, "ran the model": 0}, 0.0
    fp = fast.fingerprint()
    for data, blob in zip(bases, blobs, strict=True):
        for name, mutant in _mutants(blob, rng, fp):
            cases += 1
            worked: list[tuple[int, int]] = []
            t0 = time.perf_counter()
            try:
                read_header(mutant)  # as the CLI does, before it loads the model
                out = fast.decompress(mutant, progress=lambda d, t, w=worked: w.append((d, t)))
            except CompressError as e:
                assert str(e) and "\n" not in str(e), name
                outcomes["refused"] += 1
            else:
                assert out == data, name  # never other text
                outcomes["decoded"] += 1
            slowest = max(slowest, time.perf_counter() - t0)
            if worked:
                outcomes["ran the model"] += 1
                claimed = max(t for _, t in worked)  # the tokens the header claims
                assert claimed <= 256 * len(mutant), name
            assert time.perf_counter() - t0 < 10, name  # a hang guard, not a speed test
    assert cases >= 500, cases
    assert outcomes["ran the model"] >= 80 and outcomes["decoded"] >= 5, outcomes


def test_fuzzed_files_through_the_cli_give_one_line_and_nothing_on_stdout(codec, run_dir):
    data = PLAY.encode()[:200]
    blob = _cli("compress", "-m", str(run_dir), "--segments", "2", stdin=data).stdout_bytes
    rng = np.random.default_rng(5)
    for name, mutant in _mutants(blob, rng, codec.fingerprint())[::40]:  # 4 kinds
        result = _cli("decompress", "-m", str(run_dir), stdin=mutant)
        if result.exit_code == 0:
            assert result.stdout_bytes == data, name
        else:
            assert result.exit_code == 1 and result.stdout_bytes == b"", name
            [line] = result.stderr.strip().splitlines()
            assert line.startswith("charlstm: error: "), name
