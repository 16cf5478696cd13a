"""The LSTM (Hochreiter & Schmidhuber, 1997, with the forget gate of Gers et al., 2000).

    i = σ(W_i x + U_i h + b_i)   f = σ(W_f x + U_f h + b_f)   o = σ(W_o x + U_o h + b_o)
    c̃ = tanh(W_c x + U_c h + b_c)
    c_t = f ⊙ c_{t−1} + i ⊙ c̃        h_t = o ⊙ tanh(c_t)

Training runs torch's fused nn.LSTM (blocks [i f g o], two biases summed here into b); the
step layout stores the blocks as [i f o g], so the three sigmoid gates sit side by side.
"""

NAME = "lstm"
STATE = ("h", "c")
BLOCKS = "ifog"
PARAMS = {"w_x": "in", "w_h": "hidden", "b": "bias"}
SHOWN = ("forget", "input", "output")


def step(ops, p, zx, state):
    h, c = state
    i, f, o, g = ops.split(ops.add(zx, ops.matmul(h, p["w_h"])), 4)
    i = ops.show("input", ops.sigmoid(i))
    f = ops.show("forget", ops.sigmoid(f))
    o = ops.show("output", ops.sigmoid(o))
    c = ops.add(ops.mul(f, c), ops.mul(i, ops.tanh(g)))
    return ops.mul(o, ops.tanh(c)), c
