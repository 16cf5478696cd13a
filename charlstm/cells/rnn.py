"""The plain (Elman) RNN: one tanh layer over the input and the previous output.

    h_t = tanh(W x_t + U h_{t−1} + b)

Training runs torch's fused nn.RNN (tanh); its two biases are summed here into b.
"""

NAME = "rnn"
STATE = ("h",)
BLOCKS = "g"
PARAMS = {"w_x": "in", "w_h": "hidden", "b": "bias"}


def step(ops, p, zx, state):
    (h,) = state
    return (ops.tanh(ops.add(zx, ops.matmul(h, p["w_h"]))),)
