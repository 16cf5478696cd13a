"""The coupled-gate LSTM (Greff et al., 2017): the input gate is tied to the forget gate.

    f = σ(W_f x + U_f h + b_f)        o = σ(W_o x + U_o h + b_o)
    c_t = f ⊙ c_{t−1} + (1 − f) ⊙ tanh(W_c x + U_c h + b_c)
    h_t = o ⊙ tanh(c_t)

Stored blocks [f o g]: the two sigmoid gates side by side. c_t is computed as
g + f ⊙ (c_{t−1} − g), the same number with one product fewer.
"""

NAME = "coupled"
STATE = ("h", "c")
BLOCKS = "fog"
PARAMS = {"w_x": "in", "w_h": "hidden", "b": "bias"}
SHOWN = ("forget", "input", "output")


def step(ops, p, zx, state):
    h, c = state
    f, o, g = ops.split(ops.add(zx, ops.matmul(h, p["w_h"])), 3)
    f = ops.show("forget", ops.sigmoid(f))
    ops.show("input", ops.sub(1.0, f))
    o = ops.show("output", ops.sigmoid(o))
    g = ops.tanh(g)
    c = ops.add(g, ops.mul(f, ops.sub(c, g)))
    return ops.mul(o, ops.tanh(c)), c
