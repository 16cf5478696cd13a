"""Training from Python: `train` (the run `charlstm train` makes) and `train_options` (for
options already checked, as the CLI builds them), with training's events logged as lines."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from charlstm.options import TrainOptions

if TYPE_CHECKING:  # imports torch: only the calls that need it load it
    from charlstm.training.run import Report


# Training's events, as lines at INFO (and every progress event at DEBUG): a library user sees
# a run's life with logging.basicConfig(level=logging.INFO), nothing otherwise.
log = logging.getLogger("charlstm")


def train(
    corpus: list[str] | str | None = None,
    *,
    report: Report | None = None,
    should_stop: Callable[[], bool] | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Train a model on `corpus` (files, folders, "-" or a built-in name) with the options of
    `charlstm train` as keywords (budget="2m", hidden=512, resume="checkpoints/run", ...; see
    options.TrainOptions) and return the summary. `report(event, data)` sees what happens
    (print shows it all); the "charlstm" logger says it too, in lines at INFO (progress every
    10%, each validation). `should_stop()` returning True ends the run before its next step
    with last.pt saved."""
    if isinstance(corpus, str):
        corpus = [corpus]
    from charlstm.training import runs

    opts = TrainOptions(corpus=list(corpus or []), **options)
    return runs.train(opts, report=_logging(report), should_stop=should_stop or runs._never)


def _logging(report: Report | None) -> Report:
    """`report`, after each event is logged (see `log`)."""
    shown = {"progress": 0.0}

    def both(event: str, data: dict[str, Any]) -> None:
        line = _log_line(event, data)
        if event == "progress":
            due = data["progress"] >= shown["progress"] + 0.1
            log.log(logging.INFO if due else logging.DEBUG, "%s", line)
            if due:
                shown["progress"] = data["progress"] // 0.1 * 0.1
        elif line is not None:
            log.info("%s", line)
        if report is not None:
            report(event, data)

    return both


def _log_line(event: str, d: dict[str, Any]) -> str | None:
    """One event as one line of text (None: not worth a line)."""
    if event in ("message", "note", "stage"):
        return d.get("text") or d.get("message")
    if event == "tokenized":
        return f"{d['kind']} tokenizer: vocabulary {d['vocab_size']:,}, {d['tokens']:,} tokens"
    if event == "start":
        resumed = f", resumed at step {d['resumed_at']:,}" if d["resumed_at"] is not None else ""
        return (f"training {d['parameters']:,} parameters on {d['train_tokens']:,} tokens, "
                f"{d['tokens_per_step']:,} tokens a step, on {d['where']}{resumed}")  # fmt: skip
    if event == "progress":
        return (f"step {d['step']:,}: train loss {d['loss']:.4f}, {d['tokens_per_s']:,.0f} "
                f"tokens/s, {d['progress']:.0%} done")  # fmt: skip
    if event == "eval":
        val = "no validation split" if d["val_loss"] is None else f"val loss {d['val_loss']:.4f}"
        best = " (best)" if d.get("best") else ""
        return f"step {d['step']:,}: train loss {d['train_loss']:.4f}, {val}{best}"
    return None


def train_options(
    opts: TrainOptions,
    *,
    report: Report | None = None,
    should_stop: Callable[[], bool] | None = None,
    started: float | None = None,
) -> dict[str, Any]:
    """`train` for options already built (and so checked before torch loads); the budget counts
    from `started` (a time.perf_counter(), e.g. the process's start), else from now."""
    from charlstm.training import runs

    return runs.train(opts, report=report or runs._ignore,
                      should_stop=should_stop or runs._never, started=started)  # fmt: skip
