"""Where --attention's head looks (`charlstm visualize --kind attention`): for each character
of a text, the earlier characters that received the most attention weight.

    f = focus(model, ids, top=3)       # Focus: sources (T, k), weights (T, k), itself (T,)
    for line in focus_lines(text, f, "ansi"): ...    # one line per character (or tsv, json)
    page = focus_html(text, f, title)  # hover a character: its sources light up

The text is read from an empty memory, window by window with the state and memory carried, so
position i's sources are among i − M … i − 1 (M the memory), as sampling would see them.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from charlstm.model.language_model import LanguageModel

CONTEXT = 6  # characters shown before a source in the terminal


@dataclass
class Focus:
    sources: np.ndarray  # (T, k) int: the earlier positions with the most weight, best first
    weights: np.ndarray  # (T, k) float: their weights (0 where there was no earlier position)
    itself: np.ndarray  # (T,) float: the weight each position gave to itself


# Weights kept per window, (T_w, M + T_w) doubles: about 32 MB, whatever the memory M.
_WEIGHTS_PER_WINDOW = 1 << 22


@torch.no_grad()
def focus(model: LanguageModel, ids: torch.Tensor, top: int = 3) -> Focus:
    """The attention weights of `model` (which has --attention) over ids (T,), read window by
    window with the state and memory carried: memory and time grow with T, not T²."""
    assert model.attend is not None, "the model has no attention"
    m, t = model.attend.memory, ids.numel()
    k = min(top, t)
    window = max(1, min(256, _WEIGHTS_PER_WINDOW // (m + 256)))
    sources, weights, itself = np.zeros((t, k), np.int64), np.zeros((t, k)), np.zeros(t)
    was = model.training
    model.eval()
    state, mem = None, None
    try:
        for s in range(0, t, window):
            chunk = ids[s : s + window].view(1, -1)
            out, state = model._layers(model.embed(chunk), state)  # (1, T_w, H)
            _, mem, w = model.attend(out, mem, weights=True)  # (1, T_w, M + T_w)
            assert w is not None
            # Column c of a row is position s − M + c of the text: memory slots, then the window.
            seen = w[0].double().numpy()
            tw = seen.shape[0]
            rows = np.arange(tw)
            itself[s : s + tw] = seen[rows, m + rows]
            earlier = np.where(np.arange(seen.shape[1]) < (m + rows)[:, None], seen, 0.0)
            if earlier.shape[1] < k:
                earlier = np.pad(earlier, ((0, 0), (0, k - earlier.shape[1])))
            best = np.argsort(-earlier, axis=1, kind="stable")[:, :k]
            weights[s : s + tw] = np.take_along_axis(earlier, best, axis=1)
            # Empty slots (before the text) and padding have weight 0 and are never shown;
            # their positions are kept inside the text all the same.
            sources[s : s + tw] = np.clip(best + (s - m), 0, t - 1)
    finally:
        model.train(was)
    return Focus(sources, weights, itself)


def _shown(ch: str) -> str:
    return json.dumps(ch, ensure_ascii=False)[1:-1]  # \n, \t and quotes escaped


def focus_lines(text: str, f: Focus, form: str) -> Iterator[str]:
    """One line per character: ansi (readable: position, character, ← each source with the
    characters before it and its weight), tsv (a header, then position, character, and per
    source its position, character and weight) or json (one object per character)."""
    k = f.sources.shape[1]
    if form == "tsv":
        yield "\t".join(["position", "char", "self"] + [f"{n}{i}" for i in range(1, k + 1)
                        for n in ("source", "char", "weight")])  # fmt: skip
    for i, ch in enumerate(text):
        found = [(int(j), float(w)) for j, w in zip(f.sources[i], f.weights[i], strict=True)
                 if w > 0]  # fmt: skip
        if form == "json":
            yield json.dumps({"position": i, "char": ch, "self": round(float(f.itself[i]), 4),
                              "looks_at": [{"position": j, "char": text[j], "weight": round(w, 4)}
                                           for j, w in found]}, ensure_ascii=False)  # fmt: skip
        elif form == "tsv":
            cells = [str(i), _shown(ch), f"{f.itself[i]:.4f}"]
            for j, w in found + [(-1, 0.0)] * (k - len(found)):
                cells += [str(j), _shown(text[j]) if j >= 0 else "", f"{w:.4f}"]
            yield "\t".join(cells)
        else:
            looks = " · ".join(f"{j:>5} {_shown(text[max(0, j - CONTEXT) : j])}[{_shown(text[j])}] "
                               f"{w:.2f}" for j, w in found)  # fmt: skip
            yield f"{i:>5} [{_shown(ch)}] ← {looks or '(nothing earlier)'}"


def focus_html(text: str, f: Focus, title: str) -> str:
    """One self-contained page: the text, and hovering a character lights up the earlier
    characters it attended to, as strongly as their weights."""
    spans = "".join(f'<span id="c{i}">{html.escape(ch)}</span>' for i, ch in enumerate(text))
    data = [[[int(j), round(float(w), 4)] for j, w in zip(f.sources[i], f.weights[i],
             strict=True) if w > 0] for i in range(len(text))]  # fmt: skip
    script = (
        "const F=" + json.dumps(data) + ";let lit=[];"
        "function show(i){lit.forEach(e=>e.style.background='');lit=[];"
        "const me=document.getElementById('c'+i);me.style.background='#ffd54f';lit.push(me);"
        "for(const [j,w] of F[i]){const e=document.getElementById('c'+j);"
        "e.style.background='rgba(33,150,243,'+Math.min(1,0.15+w)+')';lit.push(e);}"
        "document.getElementById('what').textContent='position '+i+': '+F[i].map("
        "([j,w])=>j+' ('+w.toFixed(2)+')').join(', ');}"
        "document.querySelectorAll('pre span').forEach((e,i)=>e.onmouseover=()=>show(i));"
    )
    return (
        f"<!doctype html><meta charset=utf-8><title>{html.escape(title)}</title>"
        "<style>body{font-family:sans-serif;margin:2em}pre{font-size:15px;line-height:1.5;"
        "white-space:pre-wrap}#what{position:sticky;top:0;background:#fff;padding:.3em}</style>"
        f"<h3>{html.escape(title)}</h3><div id=what>hover a character: the earlier characters "
        f"the head looked at light up (blue, by weight)</div><pre>{spans}</pre>"
        f"<script>{script}</script>\n"
    )
