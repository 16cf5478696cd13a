"""How new are the items of an item model? `charlstm train --items lines` for a budget on a list
of names (one a line), then `charlstm sample --items 1000` twice: with --novel off, the share
of items that are new (not in the training list) and the share that are distinct; with
--novel, the duplicates (there must be none, nor any training item) and how many candidates
each kept item took. The issue's goal (#29): ≥ 90% new with --novel off after 60 s on ~30,000
names. "not_trained_on_pct" counts the list's validation items (held out, never learnt) as
new too: how much of the rest is the list's own names the model found by itself.

    python benchmarks/items.py                                  # 60 s on surnames.txt
    python benchmarks/items.py --budget 15s -- --threads 1      # a smoke test
    python benchmarks/items.py --corpus my-list.txt --items 500 --temp 1.0

Use an otherwise idle machine for the timing: a busy core trains less in the same budget.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_CORPUS = HERE.parent.parent / "shared" / "corpora" / "surnames.txt"
sys.path.insert(0, str(HERE.parent))

from charlstm.data.items import items_of  # noqa: E402
from charlstm.data.split import split_items  # noqa: E402


def charlstm(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "charlstm", *args], capture_output=True,
                          text=True)  # fmt: skip


def sample(run: str, n: int, seed: int, temp: str | None, novel: bool) -> tuple[list[str], int]:
    """The items printed, and the candidates stderr says they took."""
    args = ["sample", "-m", run, "--items", str(n), "--seed", str(seed)]
    args += (["--temp", temp] if temp else []) + (["--novel"] if novel else [])
    done = charlstm(*args)
    if done.returncode not in (0, 1):  # 1: too few new items (said on stderr)
        sys.exit(done.stderr)
    drawn = re.search(r"from ([\d,]+) candidates", done.stderr)
    return done.stdout.splitlines(), int(drawn.group(1).replace(",", "")) if drawn else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--budget", default="60s")
    parser.add_argument("--items", type=int, default=1000, help="items to sample each way")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--temp", default=None, help="sampling temperature (default: sample's)")
    parser.add_argument("extra", nargs="*", help="after --: more `charlstm train` flags")
    args = parser.parse_args()
    listed = items_of(args.corpus.read_text(encoding="utf-8"))
    known = set(listed)
    # The items it trained on: the list less its validation items (TrainConfig's seed, 1337,
    # and share, 0.1, unless given after --).
    trained = {listed[i] for i in split_items(len(listed), 0.1, 1337)[0]}
    with tempfile.TemporaryDirectory() as where:
        done = charlstm("train", str(args.corpus), "--items", "lines", "--budget", args.budget,
                        "--json", "--quiet", "--checkpoints", where, "--name", "items",
                        *args.extra)  # fmt: skip
        if done.returncode:
            sys.exit(done.stderr)
        summary = json.loads(done.stdout)
        run = str(Path(where) / "items")
        free, free_drawn = sample(run, args.items, args.seed, args.temp, novel=False)
        new, drawn = sample(run, args.items, args.seed, args.temp, novel=True)
    out = {
        "corpus": str(args.corpus), "list_items": len(known), "budget": args.budget,
        "steps": summary["steps"], "chosen": summary.get("chosen"),
        "best_val_bpc": summary["best_val_bpc"],
        "free": {"items": len(free), "candidates": free_drawn,
                 "novel_pct": 100 * sum(i not in known for i in free) / max(len(free), 1),
                 "not_trained_on_pct": 100 * sum(i not in trained for i in free)
                 / max(len(free), 1),
                 "unique_pct": 100 * len(set(free)) / max(len(free), 1)},
        "novel": {"items": len(new), "duplicates": len(new) - len(set(new)),
                  "in_training_list": sum(i in known for i in new),
                  "candidates_per_item": drawn / max(len(new), 1)},
        "examples": new[:10],
    }  # fmt: skip
    print(json.dumps(out, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
