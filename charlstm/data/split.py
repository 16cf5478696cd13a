"""The one train/validation split: the first train_length(n, fraction) of n items (token ids,
or a corpus's characters before tokenizing) train, the tail validates. Contiguous, with the
validation part at the end, as nanoGPT splits tiny-shakespeare. Every place that cuts a
corpus (the token cache, a resume of an old run, a model's training ids) cuts here. A list of
items (--items) validates on the same share of its items, drawn at random: split_items."""

from __future__ import annotations

import numpy as np


def train_length(n: int, val_fraction: float) -> int:
    """How many of n items train: all of them when there is no validation part."""
    return int(n * (1.0 - val_fraction)) if val_fraction > 0 else n


def split_ids(ids: np.ndarray, val_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation): the ids cut at train_length."""
    n_train = train_length(len(ids), val_fraction)
    return ids[:n_train], ids[n_train:]


def split_items(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) indices of n items (a list's lines, --items): as many validate as
    the tail would hold (n - train_length), but drawn at random, seeded, so a sorted list does
    not validate on its last letters alone. Each part keeps the list's order."""
    n_val = n - train_length(n, val_fraction)
    chosen = np.zeros(n, dtype=bool)
    chosen[np.random.default_rng([seed, n]).choice(n, size=n_val, replace=False)] = True
    return np.flatnonzero(~chosen), np.flatnonzero(chosen)
