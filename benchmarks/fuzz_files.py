"""Thousands of hostile versions of each file charlstm reads, through the CLI's code paths.

    python benchmarks/fuzz_files.py                 # 2,000 cases of each file type
    python benchmarks/fuzz_files.py --cases 500 --only model.safetensors run.json

Trains three tiny runs (char, word, BPE) in a temporary folder, then damages, one case at a time
(tests/fuzzfiles.py; each case a pure function of its number): model.safetensors (metadata JSON
edits, nesting, versions, tokenizer edits, tensor header edits, bytes), run.json (listed with
`charlstm runs` beside two good runs, which must both be listed), the tokenizer inside best.pt,
and best.pt and last.pt themselves (tests/test_promises.py's edits of every field). Each case
runs in process through the CLI (`info`, and for some `sample`), with a 30 s alarm; the outcome
is counted: used (exit 0), refused in one line (exit 1 or 2), or a failure: a traceback, more
than one stderr line, a hang. An abort would end the script: its last line names the case.
Prints one JSON line per file type and exits 1 if any case failed.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import typer  # noqa: E402
from click.testing import CliRunner  # noqa: E402

from charlstm.cli import app  # noqa: E402
from charlstm.formats.checkpoint import load_checkpoint  # noqa: E402
from tests.conftest import PLAY  # noqa: E402
from tests.fuzzfiles import (  # noqa: E402
    hostile_run_json,
    hostile_safetensors,
    hostile_tokenizer,
    train_tiny_runs,
)
from tests.test_promises import HOWS, _apply, _paths  # noqa: E402

KINDS = ("char", "word", "bpe")
FILES = ("model.safetensors", "run.json", "tokenizer", "best.pt", "last.pt")
runner = CliRunner()
cli = typer.main.get_command(app)


def _alarm(signum, frame):
    raise TimeoutError("hung")


def invoke(args: list[str], result: list | None = None) -> tuple[str, str]:
    """('used' | 'refused' | 'FAILED', detail); the click Result is appended to `result`."""
    signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(30)
    try:
        r = runner.invoke(cli, args)
    finally:
        signal.alarm(0)
    if result is not None:
        result.append(r)
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        return "FAILED", repr(r.exception)[:200]
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    if r.exit_code == 0:
        return "used", ""
    if r.exit_code in (1, 2) and len(lines) == 1 and "Traceback" not in r.stderr:
        return "refused", ""
    return "FAILED", f"exit {r.exit_code}: {r.stderr[-300:]}"


def train(home: Path) -> None:
    train_tiny_runs(home, cli, PLAY)


def cases(home: Path, what: str, n: int, tmp: Path):
    """Yield (case, outcome, detail) for `n` damaged files of type `what`."""
    ck = home / "ck"
    if what == "model.safetensors":
        pristine = {k: (ck / k / "model.safetensors").read_bytes() for k in KINDS}
        target = tmp / "model.safetensors"
        for case in range(n):
            target.write_bytes(hostile_safetensors(pristine[KINDS[case % 3]], case))
            out = invoke(["info", str(target), "-q"])
            if out[0] != "FAILED" and case % 4 == 0:
                out = invoke(["sample", "-m", str(target), "--length", "4", "--seed", "1", "-q",
                              "--engine", "numpy", "--prime", "R"])  # fmt: skip
            yield case, *out
    elif what == "run.json":
        root = tmp / "runs"
        for kind in KINDS:
            (root / kind).mkdir(parents=True, exist_ok=True)
            for name in ("run.json", "best.pt"):
                (root / kind / name).write_bytes((ck / kind / name).read_bytes())
        pristine = (ck / "word" / "run.json").read_text()
        for case in range(n):
            (root / "word" / "run.json").write_bytes(hostile_run_json(pristine, case))
            got: list = []
            outcome, detail = invoke(["runs", "--checkpoints", str(root), "--json"], got)
            try:
                names = sorted(json.loads(line)["name"] for line in got[0].stdout.splitlines())
            except ValueError:
                names = []
            if outcome == "used" and names != sorted(KINDS):
                outcome, detail = "FAILED", f"listed {names}"
            elif outcome == "used" and '"damaged": "' in got[0].stdout:
                outcome = "marked damaged"
            yield case, outcome, detail
    elif what == "tokenizer":
        pristine = {k: load_checkpoint(ck / k / "best.pt") for k in KINDS}
        target = tmp / "best.pt"
        for case in range(n):
            p = pristine[KINDS[case % 3]]
            torch.save({**p, "tokenizer": hostile_tokenizer(p["tokenizer"], case)}, target)
            yield case, *invoke(["info", str(target), "-q"])
    else:  # best.pt, last.pt: every field edited as test_promises does
        pristine = {k: load_checkpoint(ck / k / what) for k in KINDS}
        paths = {k: _paths(v) for k, v in pristine.items()}
        target = tmp / what
        for case in range(n):
            kind, rng = KINDS[case % 3], random.Random(case)
            torch.save(_apply(pristine[kind], rng.choice(paths[kind]), rng.choice(HOWS)), target)
            yield case, *invoke(["info", str(target), "-q"])
            if case % 4 == 0:
                yield case, *invoke(["sample", "-m", str(target), "--length", "4", "--seed",
                                     "1", "-q", "--threads", "1"])  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", type=int, default=2000, help="cases of each file type")
    parser.add_argument("--only", nargs="*", choices=FILES, default=list(FILES))
    args = parser.parse_args()
    torch.set_num_threads(1)
    failed = 0
    with tempfile.TemporaryDirectory() as d:
        home = Path(d)
        train(home)
        for what in args.only:
            counts: dict[str, int] = {}
            examples: list[str] = []
            start = time.perf_counter()
            (home / "tmp").mkdir(exist_ok=True)
            for case, outcome, detail in cases(home, what, args.cases, home / "tmp"):
                counts[outcome] = counts.get(outcome, 0) + 1
                if outcome == "FAILED" and len(examples) < 5:
                    examples.append(f"case {case}: {detail}")
            failed += counts.get("FAILED", 0)
            print(json.dumps({"file": what, "cases": args.cases, "outcomes": counts,
                              "seconds": round(time.perf_counter() - start, 1),
                              "failures": examples}), flush=True)  # fmt: skip
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
