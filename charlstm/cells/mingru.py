"""minGRU (Feng et al., 2024, "Were RNNs All We Needed?"): the gates read only x_t, so a
training window runs as a parallel scan over time; sampling runs the ordinary recurrent step.

    z_t = σ(W_z x_t + b_z)                    update gate
    h̃_t = g(W_h x_t + b_h)                   candidate, g(a) = a + ½ (a ≥ 0), σ(a) (a < 0)
    h_t = (1 − z_t) ⊙ h_{t−1} + z_t ⊙ h̃_t

g > 0 keeps b_t positive, so training can scan in log space (model/scan.py):
h_t = a_t ⊙ h_{t−1} + b_t with log a_t = log(1 − z_t), log b_t = log z_t + log h̃_t.
Stored blocks of w_x and b: [ z | h̃ ]; there is no recurrent matrix.
"""

NAME = "mingru"
STATE = ("h",)
BLOCKS = "za"
PARAMS = {"w_x": "in", "b": "bias"}
SHOWN = ("update",)
PARALLEL = True  # trained by model/scan.py from `log_terms`
# g(a) = a + ½ has no ceiling: h is a convex mix of g values, far below this in a trained
# model; the integer-exact engine (compress) clips |h| here.
H_BOUND = 64


def step(ops, p, zx, state):
    (h,) = state
    k, a = ops.split(zx, 2)
    z = ops.show("update", ops.sigmoid(k))
    candidate = ops.where(ops.gt(a, 0.0), ops.add(a, 0.5), ops.sigmoid(a))  # g(a)
    return (ops.add(h, ops.mul(z, ops.sub(candidate, h))),)


def log_terms(zx):
    """zx (B, T, 2H), a torch tensor -> (log a_t, log b_t), each (B, T, H)."""
    import torch.nn.functional as F  # torch only here: the cell file stays importable without it

    k, a = zx.chunk(2, dim=-1)
    log_g = (a.clamp_min(0) + 0.5).log().where(a >= 0, -F.softplus(-a))
    return -F.softplus(k), -F.softplus(-k) + log_g
