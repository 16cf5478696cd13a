"""Token ids → batches: B parallel streams cut into T-step windows for truncated back-
propagation through time (the train/validation split before it: split.py).

Training layout (B streams, each L tokens long, read left to right one window at a time):

    ids:  | stream 0 ............ | stream 1 ............ | ... | stream B-1 .......... |
    batch w = (x, y): x[b] = ids[offset + b*L + w*T : ... + T], y shifted one token right

Row b of every batch continues row b of the previous batch, so the recurrent state (h, c) can
be carried from one window to the next and only detached (truncated BPTT).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from charlstm.errors import CharlstmError


class DataError(CharlstmError):
    """The corpus does not fit the requested layout; the message is one line for the user."""


@dataclass(frozen=True)
class StreamLayout:
    """How the training ids are cut: B streams of `stream_len` tokens, windows of T tokens."""

    batch_size: int  # B: parallel streams
    window: int  # T: steps per truncated-BPTT window
    stream_len: int  # L: tokens per stream (inputs); targets need one more

    @property
    def windows_per_epoch(self) -> int:
        return self.stream_len // self.window


def fit_layout(n_tokens: int, batch_size: int, window: int) -> tuple[StreamLayout, list[str]]:
    """Choose the stream layout, shrinking B (then T) for a corpus too small for the request.

    Returns the layout and the adjustments made, as messages for the user.
    """
    notes: list[str] = []
    if n_tokens < 3:
        raise DataError(f"the training split has {n_tokens} tokens; at least 3 are needed")
    usable = n_tokens - 1  # the last token is only ever a target
    if usable < batch_size * window:
        new_b = max(1, usable // window)
        new_t = window if new_b * window <= usable else usable
        notes.append(
            f"corpus too small for batch {batch_size} × window {window} "
            f"({n_tokens:,} training tokens): using batch {new_b} × window {new_t}"
        )
        batch_size, window = new_b, new_t
    # Each stream needs a spare `window` of tokens so a per-epoch random offset stays in range.
    stream_len = usable // batch_size
    if stream_len >= 2 * window:
        stream_len -= window
    return StreamLayout(batch_size, window, stream_len), notes


def epoch_offset(seed: int, epoch: int, layout: StreamLayout, n_tokens: int) -> int:
    """A per-epoch shift of all streams, so windows are cut at new places every epoch.

    A pure function of (seed, epoch): a resumed run replays exactly the same batches.
    """
    slack = n_tokens - 1 - layout.batch_size * layout.stream_len
    if slack <= 0 or epoch == 0:
        return 0
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return int(torch.randint(0, min(slack, layout.window) + 1, (1,), generator=g))


def window_batch(
    ids: np.ndarray, layout: StreamLayout, offset: int, w: int, rows: slice = slice(None)
) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and targets (each (B, T), int64) of window w of the streams that start at
    `offset` (`rows`: only those streams), read straight from `ids`, which may be a memory map:
    a step touches B short runs of the corpus, never the whole of it."""
    t = layout.window
    starts = offset + np.arange(layout.batch_size)[rows] * layout.stream_len + w * t
    chunk = torch.from_numpy(ids[starts[:, None] + np.arange(t + 1)].astype(np.int64))
    return chunk[:, :-1], chunk[:, 1:]


def eval_layout(n_tokens: int, n_streams: int, length: int = 0) -> tuple[int, int]:
    """Cut a text of n_tokens into S contiguous streams that together predict every token
    exactly once: returns (S, L), L predictions per stream (the last stream may run short).
    Each stream starts from a zero state; S = 1 is the exact single pass. With `length`, the
    streams are blocks of that many predictions, as many as it takes."""
    n_targets = n_tokens - 1
    if n_targets < 1:
        raise DataError("the text is too short to evaluate: it needs at least 2 tokens")
    if length:
        return -(-n_targets // length), length
    s = max(1, min(n_streams, n_targets))
    return s, -(-n_targets // s)  # ceil


def eval_window(
    ids: np.ndarray,
    layout: tuple[int, int],
    start: int,
    window: int,
    rows: slice = slice(None),
    warmup: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and targets (each (S, T), int64) of positions [start, start + T) of every stream of
    `eval_layout`, read straight from `ids` (a memory map is fine). Positions past the end are
    padded with y = -100, the cross-entropy ignore index, so padding never counts.

    A negative `start` (down to -warmup) reads the tokens just before each stream, with y = -100:
    a warm-up that gives the stream's state its context before it is scored (stream 0 has none:
    its inputs there are padding, and the caller zeroes its state afterwards)."""
    s, length = layout
    t = min(window, length - start)
    idx = (np.arange(s)[rows] * length + start)[:, None] + np.arange(t)  # (S, T) input positions
    n_targets = len(ids) - 1
    inside = (idx < n_targets) & (np.arange(t) + start >= 0)  # scored positions
    idx = np.maximum(idx, 0)
    x = ids[np.minimum(idx, n_targets - 1)].astype(np.int64)
    y = ids[np.minimum(idx + 1, n_targets)].astype(np.int64)
    x = np.where(idx < n_targets, x, 0)
    return torch.from_numpy(x), torch.from_numpy(np.where(inside, y, -100))
