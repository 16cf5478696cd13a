"""The GRU (Cho et al., 2014), in torch's variant: the reset gate also scales b_hn.

    z = σ(W_z x + U_z h + b_z)        update      r = σ(W_r x + U_r h + b_r)   reset
    n = tanh(W_n x + b_in + r ⊙ (U_n h + b_hn))   candidate
    h_t = (1 − z) ⊙ n + z ⊙ h_{t−1}   (torch's z keeps the old state: the textbook update
                                       gate is 1 − z, and that is what `visualize` shows)

Training runs torch's fused nn.GRU (blocks [r z n]); b is the input bias, b_h the hidden one,
kept apart because r multiplies U_n h + b_hn alone.
"""

NAME = "gru"
STATE = ("h",)
BLOCKS = "rzn"
PARAMS = {"w_x": "in", "w_h": "hidden", "b": "bias", "b_h": "bias"}
SHOWN = ("reset", "update")


def step(ops, p, zx, state):
    (h,) = state
    x_r, x_z, x_n = ops.split(zx, 3)
    h_r, h_z, h_n = ops.split(ops.add(ops.matmul(h, p["w_h"]), p["b_h"]), 3)
    r = ops.show("reset", ops.sigmoid(ops.add(x_r, h_r)))
    z = ops.sigmoid(ops.add(x_z, h_z))
    ops.show("update", ops.sub(1.0, z))
    n = ops.tanh(ops.add(x_n, ops.mul(r, h_n)))
    return (ops.add(n, ops.mul(z, ops.sub(h, n))),)
