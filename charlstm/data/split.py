"""The one train/validation split: the first train_length(n, fraction) of n items (token ids,
or a corpus's characters before tokenizing) train, the tail validates. Contiguous, with the
validation part at the end, as nanoGPT splits tiny-shakespeare. Every place that cuts a
corpus (the token cache, a resume of an old run, a model's training ids) cuts here."""

from __future__ import annotations

import numpy as np


def train_length(n: int, val_fraction: float) -> int:
    """How many of n items train: all of them when there is no validation part."""
    return int(n * (1.0 - val_fraction)) if val_fraction > 0 else n


def split_ids(ids: np.ndarray, val_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation): the ids cut at train_length."""
    n_train = train_length(len(ids), val_fraction)
    return ids[:n_train], ids[n_train:]
