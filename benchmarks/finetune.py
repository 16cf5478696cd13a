"""Fine-tuning against training from scratch, with the same wall-clock time on a small text.

    python benchmarks/finetune.py                       # both pairs: ~30 minutes
    python benchmarks/finetune.py --pairs char          # the char pair only: ~15 minutes
    python benchmarks/finetune.py --pairs char --base-char checkpoints/ft-base-char --tuned-only
        --extra "--lr 5e-3"                             # another fine-tuning setting, same base

Pair 1 (char): a base trained 10 minutes on the built-in `shakespeare` corpus. Pair 2 (word): a
base trained 10 minutes on ../shared/corpora/ptb.valid.txt + ptb.test.txt. In both, the target
is the first 100,000 characters of wikitext2.valid.txt and the held-out text wikitext2.test.txt;
from scratch for 2 minutes on the target against the base fine-tuned for 2 minutes. Reported:
held-out bits/char of the base alone, from scratch and fine-tuned, and each base's own held-out
loss (the last 10% of its corpus, which it validated on) before and after fine-tuning.
Every command is printed as it runs; the runs go to ./checkpoints.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "corpora"
WORK = Path("finetune-bench")


def run(args: list[str], capture: bool = False) -> str:
    cmd = [sys.executable, "-m", "charlstm", *args]
    print("$ charlstm " + " ".join(shlex.quote(a) for a in args), file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE if capture else None, text=True)
    print(f"  ({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
    return out.stdout if capture else ""


def bpc(model: Path, text: Path) -> tuple[float, float]:
    """(nats per token, bits per character) of `text` under `model`."""
    out = json.loads(run(["evaluate", str(text), "-m", str(model), "--json", "-q"], capture=True))
    return out["loss"], out["bits_per_char"]


def tail(texts: list[Path], dest: Path, fraction: float = 0.1) -> Path:
    """The last `fraction` of the texts joined: the part a run on them validated on."""
    text = "\n".join(p.read_text(encoding="utf-8") for p in texts)
    dest.write_text(text[int(len(text) * (1 - fraction)) :], encoding="utf-8")
    return dest


def pair(kind: str, args: argparse.Namespace, target: Path, held_out: Path) -> dict:
    ck = Path("checkpoints")
    word = ["--tokenizer", "word"] if kind == "word" else []
    base = Path(getattr(args, f"base_{kind}") or ck / f"ft-base-{kind}")
    if kind == "char":
        base_corpus = ["shakespeare"]
    else:
        base_corpus = [str(SHARED / "ptb.valid.txt"), str(SHARED / "ptb.test.txt")]
    if not (base / "best.pt").exists():
        run(["train", *base_corpus, *word, "--budget", args.base_budget, "--name", base.name,
             "--overwrite", "-q"])  # fmt: skip
    # The base's own held-out text: the tail of its corpus, as its run split it.
    if kind == "char":
        from charlstm.data.corpus import load_corpus

        built = WORK / "shakespeare.txt"
        text = load_corpus(["shakespeare"], cache_dir=Path("corpora")).text
        built.write_text(text, encoding="utf-8")
        own = tail([built], WORK / "shakespeare-tail.txt")
    else:
        own = tail([SHARED / "ptb.valid.txt", SHARED / "ptb.test.txt"], WORK / "ptb-tail.txt")
    extra = shlex.split(args.extra)
    scratch = ck / f"ft-scratch-{kind}"
    tuned = ck / f"ft-tuned-{kind}"
    if not args.tuned_only:
        run(["train", str(target), *word, "--budget", args.budget, "--name", scratch.name,
             "--overwrite", "-q"])  # fmt: skip
    run(["train", str(target), "--init-from", str(base), "--budget", args.budget,
         "--keep-eval", str(own), "--name", tuned.name, "--overwrite", "-q", *extra])  # fmt: skip
    row = {"pair": kind, "extra": args.extra,
           "base": bpc(base, held_out)[1], "tuned": bpc(tuned, held_out)[1],
           "own_before": bpc(base, own)[0], "own_after": bpc(tuned, own)[0]}  # fmt: skip
    if not args.tuned_only:
        row["scratch"] = bpc(scratch, held_out)[1]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", default="char,word")
    parser.add_argument("--budget", default="2m", help="on the target text, each")
    parser.add_argument("--base-budget", default="10m")
    parser.add_argument("--base-char", default=None, help="an existing char base run")
    parser.add_argument("--base-word", default=None, help="an existing word base run")
    parser.add_argument("--tuned-only", action="store_true", help="skip from-scratch runs")
    parser.add_argument("--extra", default="", help="more options for the fine-tuning run")
    args = parser.parse_args()
    WORK.mkdir(exist_ok=True)
    target = WORK / "wikitext2-valid-100k.txt"
    target.write_text((SHARED / "wikitext2.valid.txt").read_text(encoding="utf-8")[:100_000],
                      encoding="utf-8")  # fmt: skip
    held_out = SHARED / "wikitext2.test.txt"
    rows = [pair(kind, args, target, held_out) for kind in args.pairs.split(",")]
    print("| pair | base alone | from scratch (2 min) | fine-tuned (2 min) | gain | base's own "
          "held-out loss: before → after |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for r in rows:
        scratch = r.get("scratch")
        gain = f"{scratch - r['tuned']:.3f}" if scratch is not None else "—"
        print(f"| {r['pair']} {r['extra']} | {r['base']:.3f} | "
              f"{'—' if scratch is None else f'{scratch:.3f}'} | {r['tuned']:.3f} | {gain} | "
              f"{r['own_before']:.4f} → {r['own_after']:.4f} |")  # fmt: skip
    print(json.dumps(rows), file=sys.stderr)


if __name__ == "__main__":
    main()
