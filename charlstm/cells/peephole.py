"""The peephole LSTM (Gers & Schmidhuber, 2000): the gates also see the cell, through diagonal
weights p_i, p_f (the old cell) and p_o (the new one).

    i = σ(W_i x + U_i h + p_i ⊙ c_{t−1} + b_i)     f = σ(W_f x + U_f h + p_f ⊙ c_{t−1} + b_f)
    c_t = f ⊙ c_{t−1} + i ⊙ tanh(W_c x + U_c h + b_c)
    o = σ(W_o x + U_o h + p_o ⊙ c_t + b_o)         (o sees the new cell)
    h_t = o ⊙ tanh(c_t)

Stored blocks [i f g o] (o last: it needs c_t first); the step layout keeps the three
peephole rows as one p (3, H) = [p_i; p_f; p_o], which `bind` splits.
"""

NAME = "peephole"
STATE = ("h", "c")
BLOCKS = "ifgo"
PARAMS = {"w_x": "in", "w_h": "hidden", "b": "bias", "p_i": "diag", "p_f": "diag", "p_o": "diag"}
SHOWN = ("forget", "input", "output")


def bind(layer):
    p_i, p_f, p_o = layer["p"]
    return {"w_x": layer["w_x"], "w_h": layer["w_h"], "b": layer["b"],
            "p_i": p_i, "p_f": p_f, "p_o": p_o}  # fmt: skip


def step(ops, p, zx, state):
    h, c = state
    i, f, g, o = ops.split(ops.add(zx, ops.matmul(h, p["w_h"])), 4)
    i = ops.show("input", ops.sigmoid(ops.add(i, ops.mul(c, p["p_i"]))))
    f = ops.show("forget", ops.sigmoid(ops.add(f, ops.mul(c, p["p_f"]))))
    c = ops.add(ops.mul(f, c), ops.mul(i, ops.tanh(g)))
    o = ops.show("output", ops.sigmoid(ops.add(o, ops.mul(c, p["p_o"]))))
    return ops.mul(o, ops.tanh(c)), c
