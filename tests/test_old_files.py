"""Files an earlier charlstm wrote still work: a best.pt and a model.safetensors written at
afdb2b0 (tests/data/afdb2b0) load, sample the very text and score the very loss they did."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

OLD = Path(__file__).parent / "data" / "afdb2b0"
LINES = ("ROMEO:\nBut soft, what light through yonder window breaks?\nIt is the east, and Juliet "
         "is the sun.\n\nJULIET:\nO Romeo, Romeo, wherefore art thou Romeo?\n")  # fmt: skip
PLAY = LINES * 30
# What afdb2b0 printed (`sample --json`, both engines; `evaluate --json`).
TEXT = "ROMEO:eeh EooEEmitoTkeo,g:h e\ngetkeRrRwotse uroet ewwtRJ\nes.oJh yigftiBrlsetoeoraJmret"
LOSS, TOKENS = 3.22134572435376, 4439


def charlstm(*args: str) -> str:
    r = subprocess.run([sys.executable, "-m", "charlstm", *args, "-q"], capture_output=True,
                       text=True, timeout=300)  # fmt: skip
    assert r.returncode == 0 and not r.stderr, r.stderr
    return r.stdout


@pytest.mark.parametrize(("name", "engine"), [("best.pt", "torch"), ("model.safetensors", "numpy")])
def test_an_old_model_samples_the_text_it_sampled(name: str, engine: str) -> None:
    out = charlstm("sample", "-m", str(OLD / name), "--seed", "5", "--length", "80", "--prime",
                   "ROMEO:", "--json", "--engine", engine, "--threads", "1")  # fmt: skip
    assert json.loads(out)["text"] == TEXT


def test_an_old_model_scores_the_loss_it_scored_and_describes_itself(tmp_path: Path) -> None:
    (tmp_path / "play.txt").write_text(PLAY)
    got = json.loads(charlstm("evaluate", str(tmp_path / "play.txt"), "-m", str(OLD / "best.pt"),
                              "--json", "--precision", "fp32"))  # fmt: skip
    assert got["tokens"] == TOKENS and got["loss"] == pytest.approx(LOSS, abs=1e-6)
    described = [json.loads(charlstm("info", str(OLD / name), "--json"))
                 for name in ("best.pt", "model.safetensors")]  # fmt: skip
    # One model, one parameter count and one fingerprint, from either file.
    assert {(d["parameters"], d["fingerprint"]) for d in described} == {(4715, "10587cdc63018889")}
