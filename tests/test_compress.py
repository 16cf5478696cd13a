"""compress / decompress: round trips, exactness across engines and threads, the file format,
and every way a file can be wrong ending in one stderr line, exit 1 and nothing on stdout."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from charlstm.checkpoint import load_checkpoint, read_checkpoint
from charlstm.cli import app
from charlstm.compress import MAGIC, Codec, CompressError, read_header, segment_count
from charlstm.model import LanguageModel, ModelConfig
from charlstm.quantized import ExactLSTM, QuantizeError, tables
from charlstm.tokenizer import BpeTokenizer, CharTokenizer, WordTokenizer

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
    for s in (1, 3, 17, len(data)):
        blob = codec.compress(data, segments=s)
        assert read_header(blob).segments == s
        assert codec.decompress(blob) == data
        sizes.append(len(blob))
    assert sizes[0] < sizes[-1]  # every segment starts from nothing: one per char is the worst
    with pytest.raises(CompressError, match="segments must be between"):
        codec.compress(b"abc", segments=4)
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


def test_other_cells_and_adaptive_softmax_are_refused():
    tok = CharTokenizer.train(PLAY)
    for cell in ("gru", "rnn", "peephole", "coupled"):
        with pytest.raises(CompressError, match="lstm"):
            Codec(_random_model(tok.vocab_size, cell=cell), tok)
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
    blob = Codec(net, tok).compress(PLAY[:500].encode())
    # (the header carries the model's fingerprint: checkpoint.model_fingerprint)
    assert hashlib.sha256(blob).hexdigest()[:16] == "63e7c073d4ae8d42"


def test_weights_too_large_for_exact_sums_are_refused():
    net = _random_model(5)
    with torch.no_grad():
        net.rnn.weight_hh_l0.fill_(2.0**13)  # 16 products of 2^33 · 2^15 pass 2^52
    with pytest.raises(QuantizeError, match="too large to compute exactly"):
        ExactLSTM.from_model(net, start_token=0)
    with torch.no_grad():
        net.rnn.weight_hh_l0.fill_(2.0**20)
    with pytest.raises(QuantizeError, match="too large to quantise"):
        ExactLSTM.from_model(net, start_token=0)


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
