"""The numpy engine's --attention block (generate/numpy_attention.py) against the training
block, several streams at once: memories full, empty and partly held, the ring wrapping round
more than once, and the memory handed back oldest first."""

from __future__ import annotations

import numpy as np
import torch

from charlstm.generate.numpy_attention import NumpyAttention
from charlstm.model.attention import Attention

HID, MEMORY, STREAMS, STEPS = 16, 5, 3, 13  # 13 steps: the ring of 6 rows wraps twice


def _block() -> Attention:
    torch.manual_seed(5)
    blk = Attention(HID, MEMORY).eval()
    with torch.no_grad():  # every parameter away from its initial value (gates at ½, LN 1/0)
        for p in blk.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return blk


def test_the_numpy_block_steps_several_streams_as_the_training_block_runs_them() -> None:
    blk = _block()
    mem = torch.randn(MEMORY, STREAMS, HID)
    mem[:, 1] = 0  # stream 1: an empty memory (a fresh stream)
    mem[:3, 2] = 0  # stream 2: two slots held, the oldest three empty
    h = 2 * torch.randn(STREAMS, STEPS, HID)
    with torch.no_grad():
        want, want_mem, _ = blk(h, mem)
    numpy_block = NumpyAttention({n: p.numpy() for n, p in blk.state_dict().items()}, MEMORY)
    numpy_block.load(mem.numpy())
    np.testing.assert_array_equal(numpy_block.unload(), mem.numpy())  # oldest first, as given
    out = np.empty((STREAMS, HID), np.float32)
    for t in range(STEPS):
        got = numpy_block.step(h[:, t].numpy(), out=out)
        assert got is out
        np.testing.assert_allclose(got, want[:, t].numpy(), atol=1e-5, rtol=1e-5, err_msg=t)
        if t == 2:  # the memory mid-way round the ring: what the block holds after 3 positions
            with torch.no_grad():
                _, mid, _ = blk(h[:, :3], mem)
            np.testing.assert_allclose(numpy_block.unload(), mid.numpy(), atol=1e-6)
    np.testing.assert_allclose(numpy_block.unload(), want_mem.numpy(), atol=1e-6)
    again = NumpyAttention({n: p.numpy() for n, p in blk.state_dict().items()}, MEMORY)
    again.load(numpy_block.unload())  # a state handed on: the next step is the same
    nxt = torch.randn(STREAMS, HID)
    np.testing.assert_allclose(again.step(nxt.numpy()), numpy_block.step(nxt.numpy()), atol=1e-6)
