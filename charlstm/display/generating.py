"""How `charlstm sample` shows what it generated: several samples or beams, each whole, or an
item model's items on stdout; on stderr what the draws took and where a text was cut short."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from rich.console import Console

from charlstm.config import SampleConfig
from charlstm.display.stdout import write_stdout, write_whole


def write_samples(texts: Iterable[str], head: str, seed: int, as_json: bool,
                  logprobs: bool) -> None:  # fmt: skip
    """Samples, each `head` + its text: whole under a line `--- sample I ---`, or one JSON
    object per line; with `logprobs`, its tokens' log-probabilities too, as OpenAI's
    completions give them."""
    from charlstm.api import openai_logprobs

    for i, text in enumerate(texts, start=1):
        if logprobs:  # each sample is its tokens (text_offset: in "text")
            scored = openai_logprobs(text, len(head))
            line = {"sample": i, "seed": seed, "text": head + "".join(scored["tokens"]),
                    "logprobs": scored}  # fmt: skip
            write_stdout(json.dumps(line, ensure_ascii=False) + "\n")
        elif as_json:
            write_stdout(json.dumps({"sample": i, "seed": seed, "text": head + text}) + "\n")
        else:
            write_whole(i, f"sample {i}", head + text)


def write_beams(beams: Iterable[Any], head: str, as_json: bool) -> None:
    """Beam search's texts (generate/beam.py's Beam), best first, each whole under a line with
    its log-probability, or one JSON object per line."""
    for i, beam in enumerate(beams, start=1):
        if as_json:
            write_stdout(json.dumps({"beam": i, "logprob": beam.logprob, "tokens": beam.tokens,
                                     "text": head + beam.text}) + "\n")  # fmt: skip
        else:
            write_whole(i, f"beam {i} · log-prob {beam.logprob:.3f}", head + beam.text)


def write_items(items: list[str], seed: int, as_json: bool) -> None:
    """An item model's items, one per line (or one JSON object each)."""
    for i, item in enumerate(items, start=1):
        line = {"item": i, "seed": seed, "text": item} if as_json else None
        write_stdout((item if line is None else json.dumps(line)) + "\n")


def items_drawn(err: Console, got: Any, novel: bool) -> None:
    """How many items (api.Model.items' result) the candidates drawn gave."""
    what = "new items" if novel else "items"
    err.print(f"{len(got.items):,} {what} from {got.drawn:,} candidates", highlight=False)


def items_short(got: Any, asked: int, novel: bool) -> str:
    """Why fewer items came than were asked for: the failure's one line."""
    from charlstm.generate.items import MAX_DRAWS

    what = "new items" if novel else "items"
    why = ("a higher --temp strays further from the training list" if novel else
           "the others were empty or ran to --length without ending")  # fmt: skip
    return (
        f"only {len(got.items):,} {what} of the {asked:,} asked for: the model gave no more "
        f"in {got.drawn:,} candidates ({MAX_DRAWS} per item at most); {why}"
    )


def adapting(err: Console, passes: int) -> None:
    """That the model learns from the prime first (--adapt)."""
    err.print(f"learning from the prime ({passes} pass{'es' if passes > 1 else ''})…")


def cut_note(err: Console, reasons: list[str | None], constrained: bool,
             length: int | None) -> None:  # fmt: skip
    """Under a pattern (`constrained`), a sample that reached --length before its match ended
    is cut (its finish reason "length"): say so."""
    cut = [str(i) for i, reason in enumerate(reasons, start=1) if reason == "length"]
    if cut and constrained:
        if len(reasons) == 1:
            which = "the sample was"
        else:
            which = f"sample {cut[0]} was" if len(cut) == 1 else f"samples {', '.join(cut)} were"
        length = SampleConfig.length if length is None else length
        err.print(
            f"{which} cut at --length {length} tokens before the model "
            "ended its match: it may be only the start of one",
            markup=False,
        )
