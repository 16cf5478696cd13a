"""The numpy engine's --attention block (generate/numpy_attention.py) against the training
block, one stream (its 1-D path) and several at once (a product per stream, and one for all):
memories full, empty and partly held, the ring wrapping round more than once, the memory handed
back oldest first, and scores both inside the bound that lets the softmax skip its peak and
beyond it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from charlstm.generate.numpy_attention import NumpyAttention
from charlstm.model.attention import Attention

HID, MEMORY, STEPS = 16, 5, 13  # 13 steps: the ring of 6 rows wraps twice


def _block(sharp: float) -> Attention:
    torch.manual_seed(5)
    blk = Attention(HID, MEMORY).eval()
    with torch.no_grad():  # every parameter away from its initial value (gates at ½, LN 1/0)
        for p in blk.parameters():
            p.add_(0.3 * torch.randn_like(p))
        blk.ln_q.weight.mul_(sharp)  # scores up to ~sharp × their usual size
        blk.ln_mem.weight.mul_(sharp)
    return blk


@pytest.mark.parametrize(  # 1 stream: 1-D rows; 3: a product per stream; 5: one for all
    ("streams", "sharp"), [(3, 1.0), (1, 1.0), (5, 1.0), (3, 40.0), (1, 40.0)]
)
def test_the_numpy_block_steps_as_the_training_block_runs_it(streams: int, sharp: float) -> None:
    blk = _block(sharp)
    mem = torch.randn(MEMORY, streams, HID)
    if streams > 1:
        mem[:, 1] = 0  # stream 1: an empty memory (a fresh stream)
    mem[:3, -1] = 0  # the last stream: two slots held, the oldest three empty
    h = 2 * torch.randn(streams, STEPS, HID)
    with torch.no_grad():
        want, want_mem, _ = blk(h, mem)
    numpy_block = NumpyAttention({n: p.numpy() for n, p in blk.state_dict().items()}, MEMORY)
    numpy_block.load(mem.numpy())
    assert numpy_block.shifting == (sharp > 1)  # both ways of the softmax are run
    np.testing.assert_array_equal(numpy_block.unload(), mem.numpy())  # oldest first, as given
    out = np.empty((streams, HID), np.float32)
    for t in range(STEPS):
        got = numpy_block.step(h[:, t].numpy(), out=out)
        assert got is out
        np.testing.assert_allclose(got, want[:, t].numpy(), atol=1e-5, rtol=1e-5, err_msg=t)
        if t == 2:  # the memory mid-way round the ring: what the block holds after 3 positions
            with torch.no_grad():
                _, mid, _ = blk(h[:, :3], mem)
            np.testing.assert_allclose(numpy_block.unload(), mid.numpy(), atol=1e-6, rtol=1e-6)
    np.testing.assert_allclose(numpy_block.unload(), want_mem.numpy(), atol=1e-6, rtol=1e-6)
    again = NumpyAttention({n: p.numpy() for n, p in blk.state_dict().items()}, MEMORY)
    again.load(numpy_block.unload())  # a state handed on: the next step is the same
    nxt = torch.randn(streams, HID)
    np.testing.assert_allclose(again.step(nxt.numpy()), numpy_block.step(nxt.numpy()), atol=1e-6)
