"""Lists of items (`train --items lines`): a corpus cut into items, each learnt from a zero
state to its end, and the compact record of them that sampling checks new items against.

    text ─ items_of ─▶ ["Abbott", "Acosta", …] ─ split.split_items ─▶ training, validation
    ids (item_text):  \\n A b b o t t \\n A c o s t a \\n …     a separator before each item
    one row:          x = \\n A b b o t t    y = A b b o t t \\n    padding: x 0, y -100

A batch holds B items, one a row, each from a zero state, padded to the batch's longest (the
loss masked there), so the fused layers run whole windows and the model learns to predict the
separator where an item ends. An epoch's order is a pure function of (seed, epoch): the items
shuffled, sorted by length within pools of POOL batches (little padding), the batches
shuffled; a resumed run replays the same batches. Sampling primes with the separator from a
zero state: an item begins as every training item began.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # sampling reads this module without torch: batches import it when made
    import torch

SEPARATORS = {"lines": "\n"}  # --items: what ends an item
POOL = 32  # batches whose items are sorted by length together


def items_of(text: str, items: str = "lines") -> list[str]:
    """The items of a text: its non-empty lines (a line's \\r and a blank line are not items)."""
    assert items in SEPARATORS
    return [line.removesuffix("\r") for line in text.split("\n") if line.strip()]


def item_text(items: Iterable[str], sep: str = "\n") -> str:
    """Items as one text, a separator before each and after the last (the module's diagram)."""
    return sep + "".join(item + sep for item in items)


def separator_id(tokenizer: object, items: str) -> int:
    """The token that ends an item; the tokenizer must read the separator as one token."""
    from charlstm.data.batches import DataError

    ids = tokenizer.encode(SEPARATORS[items], skip_unknown=True)  # type: ignore[attr-defined]
    if len(ids) != 1:
        raise DataError(f"--items {items}: the tokenizer does not read the separator "
                        f"{SEPARATORS[items]!r} as one token")  # fmt: skip
    return int(ids[0])


def item_hashes(items: Iterable[str]) -> np.ndarray:
    """Sorted, distinct 64-bit hashes of the items: what `sample --novel` checks against."""
    return np.unique(np.fromiter((_hash(i) for i in items), dtype=np.uint64))


def _hash(item: str) -> int:
    return int.from_bytes(hashlib.blake2b(item.encode("utf-8"), digest_size=8).digest(), "little")


def known(hashes: np.ndarray, item: str) -> bool:
    """Whether `item` is one of the items `hashes` (item_hashes) records."""
    h = np.uint64(_hash(item))
    i = int(np.searchsorted(hashes, h))
    return i < len(hashes) and hashes[i] == h


def item_spans(ids: np.ndarray, sep_id: int) -> tuple[np.ndarray, np.ndarray]:
    """(starts, lengths): item k's row reads ids[starts[k] : starts[k] + lengths[k]] (its
    separator, then its tokens) and predicts the next token of each (its last: the separator
    that ends it). Text after the last separator is no item."""
    seps = np.flatnonzero(np.asarray(ids) == sep_id)
    return seps[:-1], np.diff(seps)


def item_rows(
    ids: np.ndarray, starts: np.ndarray, lengths: np.ndarray, window: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and targets (each (B, W), int64) of the items at `starts`: one a row from its
    separator, cut at `window` tokens, padded to the longest (x 0, y -100: not scored)."""
    import torch

    lengths = np.minimum(lengths, window)
    width = int(lengths.max()) if len(lengths) else 1
    idx = starts[:, None] + np.arange(width)  # (B, W)
    inside = np.arange(width) < lengths[:, None]
    last = len(ids) - 1
    x = np.where(inside, ids[np.minimum(idx, last)].astype(np.int64), 0)
    y = np.where(inside, ids[np.minimum(idx + 1, last)].astype(np.int64), -100)
    return torch.from_numpy(x), torch.from_numpy(y)


@dataclass(eq=False)
class ItemLayout:
    """How the training items are batched: B items a step, rows cut at `window` tokens. Has
    StreamLayout's batch_size, window and windows_per_epoch, so the loop's schedule reads
    either alike."""

    batch_size: int
    window: int
    starts: np.ndarray
    lengths: np.ndarray
    seed: int
    _orders: dict[int, np.ndarray] = field(default_factory=dict)

    @property
    def windows_per_epoch(self) -> int:
        return len(self.starts) // self.batch_size

    def order(self, epoch: int) -> np.ndarray:
        """(windows_per_epoch, B) item indices of the epoch's batches (module docstring)."""
        if epoch not in self._orders:
            self._orders = {epoch: self._order(epoch)}  # one epoch kept: the one being read
        return self._orders[epoch]

    def _order(self, epoch: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, epoch, 0x17E45])
        b, n = self.batch_size, self.windows_per_epoch * self.batch_size
        perm = rng.permutation(len(self.starts))[:n]
        pool = b * POOL
        for i in range(0, n, pool):  # within a pool, by length: batches of alike items
            part = perm[i : i + pool]
            perm[i : i + pool] = part[np.argsort(self.lengths[part], kind="stable")]
        return perm.reshape(-1, b)[rng.permutation(n // b)]

    def batch(
        self, ids: np.ndarray, epoch: int, w: int, rows: slice = slice(None)
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs and targets (B, W) of batch w of the epoch (`rows`: this rank's items)."""
        chosen = self.order(epoch)[w][rows]
        return item_rows(ids, self.starts[chosen], self.lengths[chosen], self.window)


def item_layout(
    ids: np.ndarray, sep_id: int, batch_size: int, window: int, seed: int
) -> tuple[ItemLayout, list[str]]:
    """The training items' layout, B shrunk for a list shorter than a batch; and notes for
    the user (the batch shrunk, items longer than the window cut)."""
    from charlstm.data.batches import DataError

    starts, lengths = item_spans(ids, sep_id)
    if len(starts) < 1:
        raise DataError("--items: the training part holds no items")
    notes = []
    if len(starts) < batch_size:
        notes.append(f"{len(starts):,} training items: using batch {len(starts)}")
        batch_size = len(starts)
    cut = int((lengths > window).sum())
    if cut:
        notes.append(f"{cut:,} items are longer than the window ({window} tokens) and are "
                     "cut to it (their end is not learnt); a larger --window keeps them whole")
    return ItemLayout(batch_size, window, starts, lengths, seed), notes


def item_loss_total(
    model: torch.nn.Module,
    ids: np.ndarray,
    sep_id: int,
    window: int,
    part: Callable[[int], slice] | None = None,
    batch: int = 256,
) -> float:
    """The summed loss (nats) of the items in `ids` (`part`: a rank's share of them, given
    their number), each from a zero state as training reads them; eval mode meanwhile."""
    import torch

    starts, lengths = item_spans(ids, sep_id)
    order = np.argsort(lengths, kind="stable")  # alike lengths together: little padding
    order = order[part(len(order))] if part is not None else order
    device = next(model.parameters()).device
    was_training, total = model.training, 0.0
    model.eval()
    try:
        with torch.no_grad():
            for i in range(0, len(order), batch):
                chosen = order[i : i + batch]
                x, y = item_rows(ids, starts[chosen], lengths[chosen], window)
                loss, _ = model(x.to(device), None, y.to(device))  # (B, W), 0 on padding
                total += float(loss.double().sum())
    finally:
        model.train(was_training)
    return total


def item_predictions(ids: np.ndarray, sep_id: int, window: int) -> int:
    """How many predictions item_loss_total scores: every token of every whole item, cut at
    the window (its separator that ends it included)."""
    return int(np.minimum(item_spans(ids, sep_id)[1], window).sum())
