"""New items from an item model (`train --items`): rows of the one loop (loop.py), each primed
with the separator from a zero state, as every training item began, and ending at the
separator (its stop text); with `novel`, only items that are not in the training list (its
hashes: data/items.py) and not drawn already are kept, drawing more rows until there are
enough or MAX_DRAWS per item asked for have been drawn.

    got = draw_items(stepper, tokenizer, Request(sep_ids, cfg, seed, stop=("\\n",)), 50, hashes)
    got.items, got.drawn, got.short     # the items, the candidates drawn, fewer than asked

Round r draws its rows from the seed's r-th stream (round 0: the seed itself), so the same
seed gives the same items on either engine.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from charlstm.data.items import known
from charlstm.data.tokenizer import AnyTokenizer
from charlstm.generate.choose import MAX_SEED, ModelOutputError
from charlstm.generate.loop import Done, Failed, Request, Rows, Stepper, Text

MAX_DRAWS = 50  # candidates drawn per item asked for, at most, before giving up
MAX_ROUND = 1024  # rows drawn together at most


@dataclass
class Drawn:
    """What draw_items made: the items kept, in order, and how many candidates it drew."""

    items: list[str] = field(default_factory=list)
    drawn: int = 0
    wanted: int = 0

    @property
    def short(self) -> bool:
        """Fewer items than asked for: the bound on candidates was reached."""
        return len(self.items) < self.wanted


def draw_items(
    stepper: Stepper,
    tokenizer: AnyTokenizer,
    req: Request,
    n: int,
    hashes: np.ndarray | None = None,
    novel: bool = False,
) -> Drawn:
    """`n` items from rows of `req` (primed with the separator, stopping at it). A candidate
    is an item when its row ended at the separator with some text before it (a row that runs
    to its length is no item). With `novel`, items in `hashes` or drawn already are left out."""
    got, seen = Drawn(wanted=n), set()
    for r in range(n * MAX_DRAWS):
        need = n - len(got.items)
        budget = n * MAX_DRAWS - got.drawn
        if need <= 0 or budget <= 0:
            break
        rows = min(need * (2 if novel else 1), MAX_ROUND, budget)
        seed = req.seed if r == 0 else _round_seed(req.seed, r)
        one = replace(req, n=rows, seed=seed, rng=None)
        for text in _candidates(stepper, tokenizer, one):
            got.drawn += 1
            if text is None or (novel and (text in seen or _known(hashes, text))):
                continue
            seen.add(text)
            got.items.append(text)
            if len(got.items) == n:
                break
    return got


def _known(hashes: np.ndarray | None, text: str) -> bool:
    return hashes is not None and known(hashes, text)


def _round_seed(seed: int, r: int) -> int:
    return int(np.random.SeedSequence([seed, r]).generate_state(1)[0]) % (MAX_SEED + 1)


def _candidates(stepper: Stepper, tokenizer: AnyTokenizer, req: Request) -> list[str | None]:
    """Each row's item, in row order (None: no item), through the one loop."""
    logits = stepper.prime(req.prime_ids, None)  # the separator, from a zero state
    rows = Rows(stepper, tokenizer)
    rows.join(req, stepper.state(), logits)
    texts: list[list[str]] = [[] for _ in range(req.n)]
    ended = [False] * req.n
    while rows.live:
        for _, event in rows.advance():
            if isinstance(event, Text):
                texts[event.index].append(event.text)
            elif isinstance(event, Done):
                ended[event.index] = event.reason == "stop"
            elif isinstance(event, Failed):
                raise ModelOutputError(event.message)
    out = ["".join(t) for t in texts]
    return [t if end and t.strip() else None for t, end in zip(out, ended, strict=True)]
