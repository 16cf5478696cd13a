"""The Mogrifier LSTM (Melis, Kočiský & Blunsom, ICLR 2020): before the LSTM step, the input
and the previous output gate each other for r rounds,

    x^{−1} = x_t,  h^0 = h_{t−1}
    x^i = 2σ(Q^i h^{i−1}) ⊙ x^{i−2}     odd i in 1…r      (q_j = Q^{2j+1}, (H, I) here)
    h^i = 2σ(R^i x^{i−1}) ⊙ h^{i−2}     even i in 1…r     (r_j = R^{2j+2}, (I, H) here)

and the LSTM (cells/lstm.py, blocks [i f o g]) then reads the last x^i and h^i in place of
x_t and h_{t−1}; r = 0 is the plain LSTM. The factor 2 keeps random Q and R near the identity.

x_t meets the gate weights only after h_{t−1} has gated it, so the step gets x itself
(INPUT_GATED) and projects it: its plan reads w_x and b. The step layout stacks the rounds'
matrices as q (⌈r/2⌉, H, I) and r (⌊r/2⌋, I, H) (absent when empty); `bind` splits them into
q0, q1, ... and r0, r1, ... The number of rounds is the model config's mogrifier_rounds.
"""

from charlstm.cells import lstm

NAME = "mogrifier"
STATE = ("h", "c")
BLOCKS = "ifog"
SHOWN = ("forget", "input", "output")
INPUT_GATED = True


def params(rounds: int = 5) -> dict[str, str]:
    q = {f"q{j}": "q" for j in range((rounds + 1) // 2)}
    r = {f"r{j}": "r" for j in range(rounds // 2)}
    return {"w_x": "in", "w_h": "hidden", "b": "bias", **q, **r}


def bind(layer):
    q = {f"q{j}": m for j, m in enumerate(layer.get("q", ()))}
    r = {f"r{j}": m for j, m in enumerate(layer.get("r", ()))}
    return {"w_x": layer["w_x"], "w_h": layer["w_h"], "b": layer["b"], **q, **r}


def step(ops, p, x, state):
    h, c = state
    rounds = sum(name[0] in "qr" and name[1:].isdigit() for name in p)
    for i in range(1, rounds + 1):
        if i % 2:  # x^i = 2σ(Q^i h^{i−1}) ⊙ x^{i−2}
            x = ops.mul(ops.mul(2.0, ops.sigmoid(ops.matmul(h, p[f"q{(i - 1) // 2}"]))), x)
        else:  # h^i = 2σ(R^i x^{i−1}) ⊙ h^{i−2}
            h = ops.mul(ops.mul(2.0, ops.sigmoid(ops.matmul(x, p[f"r{i // 2 - 1}"]))), h)
    return lstm.step(ops, p, ops.add(ops.matmul(x, p["w_x"]), p["b"]), (h, c))
