"""The sizes the budget sizing tries and what each is trained with: plain data, no torch, so
that `charlstm train --help` states them (sizing.py measures and chooses)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Rung:
    hidden: int
    layers: int
    lr: float  # the peak AdamW learning rate that suits this size

    def __str__(self) -> str:
        return f"{self.layers}×{self.hidden}"


# Sizes in the order the rule tries them, each with its LSTM learning rate under AdamW with
# weight decay 0.1 (fixed-step sweeps, BENCHMARKS.md: 2×256 1.485 at 8e-3, 1.435 at 3.2e-2,
# 1.431 at 4.8e-2, 1.492 at 9.6e-2; 2×512 1.464 at 4e-3, 1.434 at 1.2e-2).
LADDER = (
    Rung(256, 2, 3.2e-2),
    Rung(320, 2, 2.8e-2),
    Rung(384, 2, 2.4e-2),
    Rung(512, 2, 1.6e-2),
    Rung(768, 2, 1.2e-2),
    Rung(1024, 2, 8e-3),
)
# Sizes for a corpus of a few kilobytes, which the first rung of LADDER would only memorise (a
# 20 KB excerpt of tiny-shakespeare: 2×256 reached training loss 1.27 and validation 2.05).
# Taken in place of LADDER when its first rung has more than MAX_PARAMS_PER_TOKEN parameters per
# training token: the largest of these under that cap. Their learning rate is 2×256's, not yet
# swept for them (benchmarks/tiny_corpus.py measures the sizes).
SMALL_LADDER = (
    Rung(32, 1, 3.2e-2),
    Rung(64, 1, 3.2e-2),
    Rung(128, 1, 3.2e-2),
    Rung(128, 2, 3.2e-2),
    Rung(192, 2, 3.2e-2),
)
# Those rates were swept for torch's LSTM; the other cells (a plain tanh RNN above all) were
# measured at a quarter of them. The sLSTM takes the LSTM's own (2×256 after 300 steps: 1.904 at a
# quarter, 1.863 at a half, 1.838 at the full rate); the Mogrifier a quarter (1.794 at a quarter,
# 1.802 at a half, 2.283 at the full rate: unstable).
OTHER_CELLS_LR_SCALE = 0.25
CELL_LR_SCALE = {"lstm": 1.0, "slstm": 1.0}

# More passes over the same text need more regularisation. With weight decay 0.1 (the default),
# dropout 0.1 added nothing at 10 passes (1.4751 against 1.4759), so it starts at 16.
DROPOUT_BY_EPOCHS = ((16.0, 0.0), (32.0, 0.1), (float("inf"), 0.2))
