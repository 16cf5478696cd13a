import numpy as np
import pytest
import torch

from charlstm.data.batches import (
    DataError,
    epoch_offset,
    eval_layout,
    eval_window,
    fit_layout,
    window_batch,
)
from charlstm.data.split import split_ids, train_length


def test_split_is_contiguous_with_validation_at_the_end():
    ids = np.arange(100)
    train, val = split_ids(ids, 0.1)
    assert list(train) == list(range(90)) and list(val) == list(range(90, 100))


def test_windows_continue_each_stream():
    ids = np.arange(1000)
    layout, notes = fit_layout(len(ids), batch_size=4, window=10)
    assert not notes
    x0, y0 = window_batch(ids, layout, 0, 0)
    x1, _ = window_batch(ids, layout, 0, 1)
    assert x0.shape == (4, 10)
    assert torch.equal(y0[:, :-1], x0[:, 1:])  # targets are inputs shifted by one
    assert torch.equal(x1[:, 0], x0[:, -1] + 1)  # row b of window 1 continues row b of window 0
    assert torch.equal(x0[1, 0] - x0[0, 0], torch.tensor(layout.stream_len))


def test_small_corpus_shrinks_layout_instead_of_failing():
    layout, notes = fit_layout(50, batch_size=32, window=64)
    assert layout.batch_size * layout.window <= 49 and layout.windows_per_epoch >= 1
    assert notes and "too small" in notes[0]
    with pytest.raises(DataError):
        fit_layout(2, 4, 4)


def test_epoch_offset_is_deterministic_and_in_range():
    layout, _ = fit_layout(10_000, 8, 16)
    offsets = [epoch_offset(7, e, layout, 10_000) for e in range(1, 20)]
    assert offsets == [epoch_offset(7, e, layout, 10_000) for e in range(1, 20)]
    assert len(set(offsets)) > 1 and all(0 <= o <= 16 for o in offsets)
    ids = np.arange(10_000)
    last = layout.windows_per_epoch - 1
    x, y = window_batch(ids, layout, max(offsets), last)  # stays in range
    assert int(y.max()) < len(ids)
    x_rows, _ = window_batch(ids, layout, max(offsets), last, slice(2, 4))  # one rank's rows
    assert torch.equal(x_rows, x[2:4])


@pytest.mark.parametrize("n,s", [(2, 1), (10, 3), (101, 7), (64, 64), (5, 100)])
def test_eval_streams_predict_every_token_once(n, s):
    ids = np.arange(n)
    layout = eval_layout(n, s)
    windows = [eval_window(ids, layout, start, 3) for start in range(0, layout[1], 3)]
    x = torch.cat([w[0] for w in windows], dim=1)
    y = torch.cat([w[1] for w in windows], dim=1)
    assert x.shape == y.shape == layout
    half = slice(0, (layout[0] + 1) // 2)  # one rank's streams
    assert torch.equal(eval_window(ids, layout, 0, 3, half)[1], windows[0][1][half])
    valid = y != -100
    assert int(valid.sum()) == n - 1
    assert sorted(y[valid].tolist()) == list(range(1, n))
    assert torch.equal(y[valid], x[valid] + 1)


def test_one_split_cuts_ids_and_characters_alike():
    # The token cache cuts characters at train_length before tokenizing; split_ids cuts ids at
    # the same point, so a char run's two ways to its split agree.
    for n, fraction in ((100, 0.1), (7, 0.5), (10, 0.0), (3, 0.99)):
        train, val = split_ids(np.arange(n), fraction)
        assert len(train) == train_length(n, fraction) and len(train) + len(val) == n
    assert train_length(10, 0.0) == 10
