"""A validation during training: score the validation split (and --keep-eval's text), record
it in the metrics, and write what a run folder holds at that moment (last.pt, best.pt and its
model file when it improved, metrics.jsonl, run.json). Under a budget, the split is cut at
the first validation to what the budget affords."""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict
from typing import Any

from charlstm.data.items import item_loss_total, item_predictions, separator_id
from charlstm.data.tokenizer import tokenizer_from_dict
from charlstm.evaluation.exact import EvalResult, loss_total
from charlstm.export.convert import write_model_file
from charlstm.files import write_atomic
from charlstm.formats.checkpoint import save_checkpoint
from charlstm.formats.model_file import no_portable_form
from charlstm.formats.run_folder import RunFolder
from charlstm.training import distributed
from charlstm.training.run import Report, Run, Timing, fit_validation


def stale_validations(metrics: list[dict[str, Any]]) -> int:
    """How many validations have come since the best one (0: the last was the best)."""
    scored = [m["val_loss"] for m in metrics if m.get("val_loss") is not None]
    if not scored:
        return 0
    return len(scored) - 1 - scored.index(min(scored))

def validate(run: Run, train_loss: float, report: Report, final: bool = False) -> float:
    """Evaluate the validation split, log a metrics line, write last.pt and maybe best.pt;
    returns the seconds the scoring took. Under a budget, the split is cut to fit the budget at
    the first validation (fit_validation), and a final validation that cannot fit in what is
    left of the budget is skipped with a note.

    Under DDP each rank scores its share of the validation streams and the sums are added, so
    the figure equals a single process's; rank 0 writes the files. Every decision here is taken
    from figures all ranks share."""
    pos, world = run.pos, run.world
    timing = run.timing or Timing(world, time.perf_counter(), pos, time.perf_counter())
    t0 = time.perf_counter()
    if not run.metrics:
        fit_validation(run, timing, report)
    cfg = run.train_cfg
    record: dict[str, Any] = {
        "step": pos.step,
        "tokens_seen": pos.tokens_seen,
        "elapsed": round(pos.elapsed, 3),
        "train_loss": train_loss,
        "val_loss": None,
    }
    skipped = None
    if final and cfg.budget:
        left, cost = cfg.budget - timing.clock(), timing.eval_cost(run)
        # Within a little of what is left: the bound is max(2 s, 3% of the budget).
        if cost > left + max(0.5, 0.01 * cfg.budget):
            skipped = f"~{cost:.1f}s, with {max(left, 0.0):.1f}s of the budget left"
    has_val = len(run.val_ids) >= 2
    if skipped is None and (has_val or run.keep is not None):
        _score(run, timing, record)
    else:
        record["eval_seconds"] = 0.0
    if skipped is not None:
        record["skipped"] = skipped
        report("note", {"message": f"the final validation ({skipped}) is skipped: it would "
                                   "overrun the budget"})  # fmt: skip
    run.metrics.append(record)
    improved = _improved(run, record, skipped, train_loss)
    # The budget's end holds back what the final validation is now expected to cost, and
    # last.pt records it: resuming a run that has reached its budget is refused.
    # After the final one, never less than the reserve that ended the loop (a validation
    # faster than predicted must not make a finished budget look unfinished).
    pos.reserve = max(pos.reserve, timing.reserve(run)) if final else timing.reserve(run)
    # A collective: every rank sends its streams' state, rank 0 saves all of them.
    full_state = [distributed.gather_rows(world, s, dim=1) for s in run.rnn_state or ()]
    saving = time.perf_counter()
    if world.is_main:
        _save(run, improved, full_state)
    now = time.perf_counter()
    timing.last_save = now - saving
    if final:
        timing.final += saving - t0
        timing.saving += now - saving
    else:
        timing.validating += now - t0
    report("eval", {**record, "best": improved})
    return record["eval_seconds"]


def _score(run: Run, timing: Timing, record: dict[str, Any]) -> None:
    """Score the validation split and the kept text into `record` (losses, bits/char, seconds):
    each rank its share of the streams, the sums added."""
    cfg, world = run.train_cfg, run.world
    has_val = len(run.val_ids) >= 2
    start = time.perf_counter()
    sums = []
    sep = separator_id(tokenizer_from_dict(run.tokenizer), cfg.items) if cfg.items else None
    if has_val and sep is not None:  # an item model: each item from a zero state
        sums.append(item_loss_total(run.model, run.val_ids, sep, cfg.window, part=world.rows))
    elif has_val:
        sums.append(loss_total(run.model, run.val_ids, streams=cfg.eval_streams,
                               part=world.rows))  # fmt: skip
    if run.keep is not None:
        sums.append(loss_total(run.model, run.keep.ids, streams=cfg.eval_streams,
                               part=world.rows))  # fmt: skip
    seconds = time.perf_counter() - start if world.is_main else 0.0
    saving = timing.last_save if world.is_main else 0.0
    # Rank 0's durations ride along, so every rank schedules validations alike.
    *sums, seconds, timing.save_seconds = distributed.sum_across(world, [*sums, seconds,
                                                                         saving])  # fmt: skip
    record["eval_seconds"] = round(seconds, 3)
    tokens = 0
    if has_val:
        n = len(run.val_ids) - 1
        # Bits per character count the characters of the text, whatever the tokens are.
        chars = run.corpus.val_chars if run.corpus.val_chars is not None else n
        if sep is not None:
            n = item_predictions(run.val_ids, sep, cfg.window)
            chars = n if run.corpus.tokenizer == "char" else chars
        result = EvalResult(loss=sums[0] / n, tokens=n, chars=chars)
        record.update(val_loss=result.loss, val_bpc=result.bits_per_char)
        tokens += n
    if run.keep is not None:
        n = len(run.keep.ids) - 1
        keep = EvalResult(loss=sums[-1] / n, tokens=n, chars=run.keep.chars)
        record.update(keep_loss=keep.loss, keep_bpc=keep.bits_per_char)
        tokens += n
    timing.eval_seconds += seconds
    if seconds > 0:
        timing.eval_rate = tokens / seconds


def _improved(run: Run, record: dict[str, Any], skipped: str | None, train_loss: float) -> bool:
    """Whether this validation makes a new best.pt (and records its loss as the best)."""
    pos = run.pos
    improved = record["val_loss"] is not None and record["val_loss"] < pos.best_val_loss
    if improved:
        pos.best_val_loss = record["val_loss"]
    elif skipped is not None:
        improved = not any(m.get("val_loss") is not None for m in run.metrics)  # a best.pt
    elif len(run.val_ids) < 2 and not math.isnan(train_loss):
        # No validation split: "best" follows the training loss.
        improved = train_loss < pos.best_val_loss
        pos.best_val_loss = min(pos.best_val_loss, train_loss)
    return improved


def _save(run: Run, improved: bool, full_state: list[Any]) -> None:
    """Write the run folder's files for where the run stands (rank 0's job); `full_state` is
    the carried state of all B streams."""
    folder = RunFolder(run.run_dir)
    if improved:
        best = run.checkpoint(with_resume=False)
        save_checkpoint(best, folder.best)
        if no_portable_form(run.model_cfg) is None:
            # After best.pt, so a crash between the two leaves a model file older than
            # best.pt, which is not used (portable.fresh_portable).
            write_model_file(folder.model_file, run.model, run.tokenizer, best)
    save_checkpoint(run.checkpoint(with_resume=True, full_state=full_state), folder.last)
    # Rewritten whole from the metrics that last.pt holds, so the two always agree.
    write_atomic(folder.metrics, "".join(json.dumps(m) + "\n" for m in run.metrics))
    write_run_json(run, finished=False)


def write_run_json(run: Run, finished: bool) -> None:
    """run.json: what `charlstm runs` lists, readable without torch (the checkpoints need it)."""
    scored = [m for m in run.metrics if m.get("val_loss") is not None]
    best = min(scored, key=lambda m: m["val_loss"], default=None)
    cfg = run.train_cfg
    summary = {
        "model": asdict(run.model_cfg),
        "parameters": run.model.num_parameters(),
        "tokenizer": run.tokenizer.get("kind", "char"),
        "corpus": asdict(run.corpus),
        "step": run.pos.step,
        "tokens_seen": run.pos.tokens_seen,
        "elapsed": round(run.pos.elapsed, 3),
        "best_val_loss": best["val_loss"] if best else None,
        "best_val_bpc": best.get("val_bpc") if best else None,
        "limits": {"budget": cfg.budget, "steps": cfg.steps, "epochs": cfg.epochs},
        "finished": finished,
        "parent": run.parent,
    }
    write_atomic(RunFolder(run.run_dir).summary, json.dumps(summary, indent=1) + "\n")
