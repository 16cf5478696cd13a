"""minLSTM (Feng et al., 2024, "Were RNNs All We Needed?"): an LSTM whose gates read only x_t,
with no output gate and no cell apart from h, so a training window runs as a parallel scan.

    f_t = σ(W_f x_t + b_f)     i_t = σ(W_i x_t + b_i)     h̃_t = g(W_h x_t + b_h)
    f'_t = f_t / (f_t + i_t)   i'_t = i_t / (f_t + i_t)   (normalised: the scale of h does not
                                                            drift with time)
    h_t = f'_t ⊙ h_{t−1} + i'_t ⊙ h̃_t,      g(a) = a + ½ (a ≥ 0), σ(a) (a < 0)

In log space (model/scan.py): log a_t = log f'_t, log b_t = log i'_t + log h̃_t.
Stored blocks of w_x and b: [ f | i | h̃ ]; there is no recurrent matrix.
"""

NAME = "minlstm"
STATE = ("h",)
BLOCKS = "fia"
PARAMS = {"w_x": "in", "b": "bias"}
SHOWN = ("forget", "input")
PARALLEL = True
# g(a) = a + ½ has no ceiling: h is a convex mix of g values, far below this in a trained
# model; the integer-exact engine (compress) clips |h| here.
H_BOUND = 64


def step(ops, p, zx, state):
    (h,) = state
    pf, pi, pa = ops.split(zx, 3)
    f, i = ops.sigmoid(pf), ops.sigmoid(pi)
    total = ops.add(f, i)
    f = ops.show("forget", ops.div(f, total))
    i = ops.show("input", ops.div(i, total))
    candidate = ops.where(ops.gt(pa, 0.0), ops.add(pa, 0.5), ops.sigmoid(pa))  # g(p_a)
    return (ops.add(ops.mul(f, h), ops.mul(i, candidate)),)


def log_terms(zx):
    """zx (B, T, 3H), a torch tensor -> (log a_t, log b_t), each (B, T, H)."""
    import torch.nn.functional as F

    pf, pi, pa = zx.chunk(3, dim=-1)
    diff = F.softplus(-pf) - F.softplus(-pi)  # log i − log f
    log_g = (pa.clamp_min(0) + 0.5).log().where(pa >= 0, -F.softplus(-pa))
    return -F.softplus(diff), -F.softplus(-diff) + log_g
