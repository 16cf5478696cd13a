"""Picking a run up again where its last.pt left it: the run's own token ids (tokens.npy) and
--keep-eval text (keep.npy), and the settings a resume may change, with limits given counted
as "this much more"."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from charlstm.config import CORPORA, TrainConfig
from charlstm.data.batches import StreamLayout, fit_layout
from charlstm.data.corpus import CorpusStream
from charlstm.data.items import ItemLayout
from charlstm.data.split import split_ids
from charlstm.data.tokens import CorpusInfo, corpus_fingerprint
from charlstm.errors import UsageError
from charlstm.formats.checkpoint import CheckpointError, read_checkpoint
from charlstm.formats.run_folder import RunFolder
from charlstm.options import CHANGEABLE_ON_RESUME, TrainOptions
from charlstm.training.held_out import training_layout
from charlstm.training.run import KeepEval, Prepared, Report, Run
from charlstm.training.schedule import Position, progress_of


def resume_run(options: TrainOptions, report: Report) -> Prepared:
    """The run in options.resume as its last.pt left it, with its own token ids (tokens.npy);
    a corpus given is only checked against the run's. What may change mid-run (learning rate
    and schedule, clipping, weight decay, validation cadence, patience, state resets) is taken
    from the options, and limits given mean "this much more"."""
    assert options.resume is not None
    run_dir = Path(options.resume)
    folder = RunFolder(run_dir)
    if not folder.last.is_file():
        raise CheckpointError(f"cannot resume: no last.pt in '{run_dir}'")
    checked = read_checkpoint(folder.last, resume=True)
    ckpt = checked.data
    tokens = folder.tokens
    if not tokens.is_file():
        raise CheckpointError(f"cannot resume: '{tokens}' (the run's token ids) is missing")
    ids = np.load(tokens, mmap_mode="r")
    corpus = CorpusInfo.from_dict(ckpt["corpus"])
    if options.corpus:
        stream = CorpusStream(options.corpus, cache_dir=CORPORA, encoding=options.encoding,
                              errors=options.errors)  # fmt: skip
        report("stage", {"message": "checking the corpus…"})
        if corpus_fingerprint(stream) != corpus.fingerprint:
            raise CheckpointError(
                "cannot resume: the corpus given differs from the one this run was trained on"
            )
    # Runs saved before --val-tokens validated on the whole split.
    saved = TrainConfig(**{"val_tokens": 0, **ckpt["train_config"]})
    if corpus.n_train is not None:  # where the text was cut before tokenizing
        train_ids, val_ids = ids[: corpus.n_train], ids[corpus.n_train :]
        if saved.val_tokens:  # the part the run validated on; its val_chars are saved
            val_ids = val_ids[: saved.val_tokens]
    else:
        train_ids, val_ids = split_ids(np.asarray(ids), saved.val_fraction)
    pos = Position(**ckpt["resume"]["position"])
    layout, _ = training_layout(train_ids, saved, ckpt["tokenizer"])
    train_cfg = resumed_config(saved, options, pos, len(train_ids), report, layout=layout)
    model = checked.model()
    run = Run(
        model=model, model_cfg=model.cfg, train_cfg=train_cfg, tokenizer=ckpt["tokenizer"],
        train_ids=train_ids, val_ids=val_ids, corpus=corpus, run_dir=run_dir,
        metrics=list(ckpt.get("metrics") or []), curve=list(ckpt.get("train_curve") or []),
        parent=ckpt.get("parent"), keep=_resumed_keep(run_dir, ckpt.get("keep_eval")),
    )  # fmt: skip
    return Prepared(run, ckpt["resume"], {})


def _resumed_keep(run_dir: Path, saved: dict[str, Any] | None) -> KeepEval | None:
    """A run's --keep-eval text, from its keep.npy."""
    if not saved:
        return None
    try:
        ids = np.load(RunFolder(run_dir).keep)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"cannot resume: the run's keep.npy cannot be read ({e})") from None
    if len(ids) != saved["tokens"]:
        raise CheckpointError("cannot resume: the run's keep.npy does not match its last.pt")
    return KeepEval(ids=ids, chars=saved["chars"], sources=list(saved["sources"]))


def resumed_config(
    saved: TrainConfig,
    options: TrainOptions,
    pos: Position,
    train_tokens: int,
    report: Report,
    layout: StreamLayout | ItemLayout | None = None,
) -> TrainConfig:
    """The run's settings with the options a resume may change. Limits given are counted from
    where the run stands (`--steps 500`: 500 more steps), and replace the old ones; the
    learning-rate schedule then stretches over the new length. A run that has reached its
    limits is refused unless new ones are given: resuming must never silently do nothing."""
    given = options.train_fields()
    changes = {k: v for k, v in given.items() if k in CHANGEABLE_ON_RESUME}
    said = [f"--{k.replace('_steps', '').replace('_', '-')} {v:g} (was {getattr(saved, k):g})"
            for k, v in changes.items() if v != getattr(saved, k)]  # fmt: skip
    if layout is None:
        layout, _ = fit_layout(train_tokens, saved.batch_size, saved.window)
    if pos.window >= layout.windows_per_epoch:
        raise CheckpointError("cannot resume: its data position is past the end of an epoch")
    epoch = pos.epoch + pos.window / layout.windows_per_epoch
    if options.given("budget", "steps", "epochs"):
        changes["budget"] = None if options.budget is None else pos.elapsed + float(options.budget)
        changes["steps"] = None if options.steps is None else pos.step + options.steps
        changes["epochs"] = None if options.epochs is None else epoch + options.epochs
        more = []
        if options.steps:
            more.append(f"{options.steps:,} more steps (to step {pos.step + options.steps:,})")
        if options.budget:
            more.append(f"{_duration(float(options.budget))} more")
        if options.epochs:
            more.append(f"{options.epochs:g} more epochs")
        said.append("training " + " or ".join(more))
    train_cfg = replace(saved, **changes)
    # As the loop tests it: a budget run ends when only its final validation's time is left.
    if progress_of(train_cfg, pos, layout, reserve=pos.reserve) >= 1.0:
        raise UsageError(
            f"the run has reached its limit ({_where(pos, saved)}); to train more, give "
            "--steps N, --budget TIME or --epochs N: that much more"
        )
    if said:
        report("message", {"text": f"resuming at step {pos.step:,}: " + "; ".join(said)})
    return train_cfg


def _where(pos: Position, cfg: TrainConfig) -> str:
    parts = []
    if cfg.steps:
        parts.append(f"step {pos.step:,} of {cfg.steps:,}")
    if cfg.budget:
        parts.append(f"{pos.elapsed:.0f}s of a {cfg.budget:.0f}s budget")
    if cfg.epochs:
        parts.append(f"{cfg.epochs:g} epochs")
    return ", ".join(parts) or f"step {pos.step:,}"


def _duration(seconds: float) -> str:
    return f"{seconds / 60:g} min" if seconds >= 60 else f"{seconds:g}s"
