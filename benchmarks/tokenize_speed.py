"""Tokenizing speed: MB of UTF-8 text per second from text to an id file, per tokenizer kind.

    python benchmarks/tokenize_speed.py                 # ~100 MB corpus, word, bpe and char
    python benchmarks/tokenize_speed.py --mb 20 --kinds word

The corpus repeats ptb.{valid,test}.txt and wikitext2.{valid,test}.txt up to --mb megabytes in a
temporary folder. Each tokenizer is trained on the first --train-mb megabytes, then the whole
corpus goes through split_for_encoding + encode_chunks, with the ids written to a file, as the
training data cache does; the median of --repeats timings is reported.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from charlstm.data.pieces import split_for_encoding
from charlstm.data.tokenizer import train_tokenizer

CORPORA = Path(__file__).resolve().parents[1].parent / "shared" / "corpora"
FILES = ("ptb.valid.txt", "ptb.test.txt", "wikitext2.valid.txt", "wikitext2.test.txt")


def build_corpus(corpora: Path, megabytes: float, folder: Path) -> Path:
    block = "".join((corpora / name).read_text(encoding="utf-8") for name in FILES)
    data = block.encode("utf-8")
    path = folder / "corpus.txt"
    with path.open("wb") as f:
        for _ in range(max(1, round(megabytes * 1e6 / len(data)))):
            f.write(data)
    return path


def encode_to_file(tok, text: str, out: Path) -> int:
    with out.open("wb") as f:
        for ids in tok.encode_chunks(split_for_encoding(text), on_unknown="token"):
            ids.tofile(f)
    return out.stat().st_size // tok.id_dtype.itemsize


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mb", type=float, default=100, help="corpus size in MB (1e6 bytes)")
    parser.add_argument("--train-mb", type=float, default=10, help="MB to train tokenizers on")
    parser.add_argument("--kinds", default="word,bpe,char")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--corpora", type=Path, default=CORPORA)
    args = parser.parse_args()
    parallel = os.environ.get("TOKENIZERS_PARALLELISM", "unset")
    print(f"{os.cpu_count()} CPUs, TOKENIZERS_PARALLELISM={parallel}, median of {args.repeats}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        path = build_corpus(args.corpora, args.mb, folder)
        text = path.read_text(encoding="utf-8")
        mb = path.stat().st_size / 1e6
        train_text = text[: int(args.train_mb * 1e6)]
        print(f"corpus {mb:.1f} MB, tokenizers trained on the first {args.train_mb:g} MB")
        print("| kind | vocabulary | train s | tokens | MB/s |")
        print("|---|---|---|---|---|")
        for kind in args.kinds.split(","):
            t0 = time.perf_counter()
            tok = train_tokenizer(kind, text if kind == "char" else train_text)
            train_s = time.perf_counter() - t0
            speeds, tokens = [], 0
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                tokens = encode_to_file(tok, text, folder / "ids.bin")
                speeds.append(mb / (time.perf_counter() - t0))
            row = f"| {kind} | {tok.vocab_size:,} | {train_s:.1f} | {tokens:,} |"
            print(f"{row} {statistics.median(speeds):.1f} |", flush=True)


if __name__ == "__main__":
    main()
