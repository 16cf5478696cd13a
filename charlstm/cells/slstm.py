"""The sLSTM of xLSTM (Beck et al., NeurIPS 2024), stabilised (eqs. 8-17), sigmoid forget gate:

    z = tanh(W_z x + R_z h + b_z)          cell input
    ĩ = W_i x + R_i h + b_i                 input gate, exponential: i = exp(ĩ)
    f̃ = W_f x + R_f h + b_f                 forget gate: f = σ(f̃)
    o = σ(W_o x + R_o h + b_o)              output gate
    m_t = max(log f + m_{t−1}, ĩ)           stabiliser; a fresh state (n = 0) takes m_t = ĩ
    i' = exp(ĩ − m_t),  f' = exp(log f + m_{t−1} − m_t)
    c_t = f' ⊙ c_{t−1} + i' ⊙ z     n_t = f' ⊙ n_{t−1} + i'     h_t = o ⊙ c_t / n_t

The state is (h, c, n, m): m rescales c and n alike and leaves h unchanged, so it only keeps
exp() in range; after any step n ≥ 1 (one of i', f' is 1), so the division is safe. Stored
blocks [i f z o] (xLSTM's order). `visualize` shows the stabilised gates f' and i' (in [0, 1]).
"""

NAME = "slstm"
STATE = ("h", "c", "n", "m")
BLOCKS = "ifzo"
PARAMS = {"w_x": "in", "w_h": "hidden", "b": "bias"}
SHOWN = ("forget", "input", "output")


def step(ops, p, zx, state):
    h, c, n, m = state
    i_t, f_t, z_t, o_t = ops.split(ops.add(zx, ops.matmul(h, p["w_h"])), 4)
    log_f = ops.add(ops.log_sigmoid(f_t), m)  # log f + m_{t−1}
    m = ops.where(ops.gt(n, 0.0), ops.maximum(log_f, i_t), i_t)
    i = ops.show("input", ops.exp(ops.sub(i_t, m)))
    f = ops.show("forget", ops.exp(ops.sub(log_f, m)))
    c = ops.add(ops.mul(f, c), ops.mul(i, ops.tanh(z_t)))
    n = ops.add(ops.mul(f, n), i)
    o = ops.show("output", ops.sigmoid(o_t))
    return ops.mul(o, ops.div(c, n)), c, n, m
