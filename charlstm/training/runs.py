"""A training run from a user's options: the corpus read and tokenized, the model sized to the
budget and built, the run folder made, or a run picked up again from its last.pt; then trained.
`charlstm train` and `charlstm.train()` both come here. Nothing here prints: what happens is
reported as events (training.Report) for the caller to show or ignore.

    summary = train(TrainOptions(corpus=["notes/"], budget="2m"), report=show)

    options ─ apply_preset ─▶ tokenize ─▶ ModelConfig, TrainConfig ─ size_to_budget ─▶ Run ─▶ fit
    options.resume ─────────▶ last.pt + tokens.npy ──────────────────────────────────▶ Run ─▶ fit
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from charlstm import files
from charlstm.config import CORPORA, DEFAULT_BUDGET, ModelConfig, TrainConfig, adaptive_cutoffs
from charlstm.data.batches import DataError
from charlstm.data.corpus import CorpusStream
from charlstm.data.tokenizer import AnyTokenizer
from charlstm.data.tokens import (
    CorpusInfo,
    TokenizedCorpus,
    spelled_chars,
    tokenize_corpus,
)
from charlstm.device import (
    check_precision,
    configure,
    precision_available,
    resolve_device,
    resolve_precision,
    set_threads,
)
from charlstm.errors import CharlstmError
from charlstm.formats.checkpoint import (
    Checkpoint,
    check_size,
    read_checkpoint,
    resolve_checkpoint,
    weights_fingerprint,
)
from charlstm.formats.run_folder import HeldRun, RunFolder, hold_run, model_shape
from charlstm.model.language_model import LanguageModel, with_vocabulary
from charlstm.options import FINE_TUNE_BUDGET, TrainOptions, apply_preset
from charlstm.training import distributed, sizing
from charlstm.training.distributed import World
from charlstm.training.held_out import item_sizing, tokenize_apart
from charlstm.training.loop import fit
from charlstm.training.resume import resume_run
from charlstm.training.run import KeepEval, Prepared, Report, Run


def _ignore(event: str, data: dict[str, Any]) -> None:
    pass


def _never() -> bool:
    return False


def train(
    options: TrainOptions,
    *,
    report: Report = _ignore,
    should_stop: Callable[[], bool] = _never,
    started: float | None = None,
) -> dict[str, Any]:
    """Set up the run the options describe (or resume one), train it, and return the summary.

    Under torchrun every rank calls this; rank 0 alone reports and writes. `should_stop` is
    polled before each step: a True ends the run there, with last.pt saved. A budget is the
    whole run from `started` (a time.perf_counter() reading; default: now): what setting up
    took (importing, tokenizing, sizing) comes out of it, and the final validation fits in it."""
    t_start = time.perf_counter() if started is None else started
    set_threads(options.threads)
    device = resolve_device(options.device)
    if options.precision != "auto":
        check_precision(options.precision, device)  # before anything slow
    world = distributed.init_world(device)
    configure(world.device)
    if not world.is_main:
        report = _ignore  # rank 0 speaks for all
    finished = False
    held: HeldRun | None = None  # the run folder, locked by rank 0 against other processes
    try:
        if options.resume is not None:
            held = _hold(world, Path(options.resume), new=False)
            prepared = resume_run(options, report)
            # A resumed run keeps its precision unless told otherwise, where the device has it.
            wanted, saved = options.precision, prepared.resume_state.get("precision")
            if wanted == "auto" and saved and precision_available(saved, world.device):
                wanted = saved
            precision = resolve_precision(wanted, world.device)
        else:
            precision = resolve_precision(options.precision, world.device)
            run_dir = _run_dir(options, world)
            held = _hold(world, run_dir, new=True, overwrite=options.overwrite)
            prepared = new_run(options, world, precision, report, run_dir)
        run = prepared.run
        # Rank 0's precision and setup time for all: a budget every rank counts alike, or the
        # ranks would leave the loop at different steps and wait on each other for ever.
        precision = distributed.broadcast(world, precision)
        run.world, run.precision = world, precision
        setup = distributed.sum_across(
            world, [time.perf_counter() - t_start if world.is_main else 0.0]
        )[0]
        budget = run.train_cfg.budget
        if budget and (options.resume is None or options.budget is not None):  # a new budget
            run.train_cfg = replace(run.train_cfg, budget=max(1.0, budget - setup))
        report("ready", {"seconds": setup})
        summary = fit(run, report=report, should_stop=should_stop, resume=prepared.resume_state)
        finished = True
    finally:
        if held is not None:
            held.release(failed=not finished)  # a new run failed before last.pt leaves nothing
        leaving = time.perf_counter()
        distributed.shutdown(world, clean=finished)
    total = time.perf_counter() - t_start
    summary.update(prepared.info, rank=world.rank, setup_seconds=round(setup, 3),
                   total_seconds=round(total, 3))  # fmt: skip
    # Every second of this command, part by part (they add up to total_seconds); a resumed
    # run's "elapsed" counts all its sessions, these only this one.
    parts = {"setup": round(setup, 3), **summary.pop("session_seconds"),
             "leaving": round(time.perf_counter() - leaving, 3)}  # the process group  # fmt: skip
    parts["other"] = round(max(total - sum(parts.values()), 0.0), 3)
    summary["time_parts"] = parts
    return summary


def new_run(
    options: TrainOptions, world: World, precision: str, report: Report, run_dir: Path
) -> Prepared:
    """Tokenize the corpus, choose the model (preset, budget sizing, defaults), fill the run
    folder (held: _hold) and build the model; with --init-from, start from the base's instead
    (fine_tune)."""
    opts, preset = apply_preset(options)
    base = read_checkpoint(resolve_checkpoint(opts.init_from)) if opts.init_from else None
    if preset:
        chosen = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in preset.items())
        what = "fine-tuning" if base else f"{opts.kind} model"
        report("message", {"text": f"{what} defaults: {chosen} (override with their flags)"})
    if opts.budget is None and opts.steps is None and opts.epochs is None:
        opts = replace(opts, budget=FINE_TUNE_BUDGET if base else DEFAULT_BUDGET)
    train_cfg = TrainConfig(**opts.train_fields())
    tokenized, corpus, seconds, hashes = tokenize(
        opts, train_cfg.val_fraction, report, base=base.tokenizer if base else None,
        seed=train_cfg.seed)  # fmt: skip
    train_ids, val_ids = tokenized.train_ids, tokenized.val_ids
    if len(val_ids) < 2 and train_cfg.val_fraction > 0:
        raise DataError(
            f"the corpus is too short for a validation split ({len(tokenized.ids)} tokens); "
            "give more text or --val-fraction 0"
        )
    val_ids, corpus.val_chars = validation_part(
        val_ids, tokenized.val_chars, train_cfg.val_tokens, tokenized.tokenizer, report
    )
    info: dict[str, Any] = {"tokenize_seconds": round(seconds, 3),
                            "tokens_from_cache": tokenized.cached}  # fmt: skip
    torch.manual_seed(train_cfg.seed)
    parent = None
    if base is not None:
        model, parent = fine_tune(base, tokenized, opts, report)
        model_cfg = model.cfg
        info["fine_tuned_from"] = parent["path"]
    else:
        vocab = tokenized.tokenizer.vocab_size
        cutoffs = adaptive_cutoffs(vocab) if opts.softmax == "adaptive" else None
        model_cfg = ModelConfig(vocab_size=vocab, softmax_cutoffs=cutoffs, **opts.model_fields())
        sized_by_user = len(opts.given("hidden", "layers", "lr", "dropout")) == 4
        if opts.kind == "char" and train_cfg.budget and not sized_by_user:
            if world.active:
                note = ("budget-aware sizing runs in one process only; using the default size "
                        "(set --hidden, --layers, --lr, --dropout)")  # fmt: skip
                report("note", {"message": note})
            else:
                sizing_started = time.perf_counter()
                measured, tokens = train_cfg, len(train_ids)
                if train_cfg.items:  # measured at its batches' width, with their padding
                    width, tokens = item_sizing(train_ids, train_cfg, tokenized.tokenizer.to_dict())
                    measured = replace(train_cfg, window=width)
                model_cfg, measured, info["chosen"] = size_to_budget(
                    model_cfg, measured, opts, tokens, world.device, precision, report
                )
                # An item model's window is its longest item, not a choice the sizing makes.
                keep = {"window": train_cfg.window} if train_cfg.items else {}
                train_cfg = replace(measured, **keep)
                info["sizing_seconds"] = round(time.perf_counter() - sizing_started, 3)
        check_size(model_cfg, training=True)  # one line now, not an allocation failure later
        model = LanguageModel(model_cfg)
    keep = keep_texts(opts, tokenized.tokenizer, report)
    if world.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        folder = RunFolder(run_dir)
        keep_tokens(tokenized.ids, tokenized.path, folder.tokens)  # resume needs no corpus
        if keep is not None:
            files.write_atomic(folder.keep, lambda f: np.save(f, keep.ids))
        if hashes is not None:  # what `sample --novel` checks new items against
            files.write_atomic(folder.items, lambda f: np.save(f, hashes))
    run = Run(
        model=model, model_cfg=model_cfg, train_cfg=train_cfg,
        tokenizer=tokenized.tokenizer.to_dict(), train_ids=train_ids, val_ids=val_ids,
        corpus=corpus, run_dir=run_dir, parent=parent, keep=keep,
    )  # fmt: skip
    return Prepared(run, None, info)


def _run_dir(opts: TrainOptions, world: World) -> Path:
    """The run's folder under --checkpoints."""
    # The default name has a time in it: every rank takes rank 0's.
    return distributed.broadcast(
        world, opts.checkpoints / (opts.name or default_run_name(opts.corpus))
    )


def _hold(world: World, folder: Path, *, new: bool, overwrite: bool = False) -> HeldRun | None:
    """Rank 0 holds the run folder for this run alone (folders.hold_run: a second process is
    refused, a new run's folder made free); a refusal stops every rank alike."""
    held, refused = None, None
    if world.is_main:
        try:
            held = hold_run(folder, new=new, overwrite=overwrite)
        except CharlstmError as e:
            refused = e
    refused = distributed.broadcast(world, refused)
    if refused is not None:
        raise refused
    return held


def fine_tune(
    base: Checkpoint, tokenized: TokenizedCorpus, opts: TrainOptions, report: Report
) -> tuple[LanguageModel, dict[str, Any]]:
    """The base's model for the new text: its weights, its tokenizer (a char vocabulary grown
    by the characters the base never saw), the dropout asked for; and where it came from."""
    tok, cfg = tokenized.tokenizer, base.config
    model = with_vocabulary(base.model(), tok.vocab_size)
    dropout = opts.dropout if opts.dropout is not None else cfg.dropout
    model.cfg.dropout = dropout
    model.drop.p = dropout
    if cfg.num_layers > 1:
        model.rnn.dropout = dropout  # between layers: torch's and our cells read it each call
    check_size(model.cfg, training=True)
    shape = model_shape(asdict(cfg))
    said = [f"fine-tuning {base.path} ({shape}, {tok.kind}, step {base.data.get('step', 0):,}); "
            "the budget sizing does not apply"]  # fmt: skip
    added = tok.vocab_size - cfg.vocab_size
    if added:
        new = "".join(tok.chars[cfg.vocab_size :])  # type: ignore[union-attr]
        said.append(f"added {added} characters the base never saw: {new[:40]!r}")
    ids = np.asarray(tokenized.ids)
    if tok.kind == "word":
        unknown = float(np.isin(ids, tok.unknown_ids).mean()) if len(ids) else 0.0
        said.append(f"{unknown:.1%} of the new text's words are outside the base's vocabulary "
                    "(read as its unknown token)")  # fmt: skip
    elif tok.kind == "bpe":
        said.append(f"{len(ids) / max(tokenized.chars, 1):.3f} tokens per character")
    report("message", {"text": "; ".join(said)})
    parent = {"path": str(base.path), "fingerprint": weights_fingerprint(base.data),
              "step": base.data.get("step"), "corpus": (base.data.get("corpus") or {}).get(
                  "fingerprint")}  # fmt: skip
    return model, parent


def keep_texts(opts: TrainOptions, tokenizer: AnyTokenizer, report: Report) -> KeepEval | None:
    """The --keep-eval texts as ids of the run's tokenizer (characters it cannot read are
    left out, words it cannot read are its unknown token), scored at every validation."""
    if not opts.keep_eval:
        return None
    stream = CorpusStream(opts.keep_eval, cache_dir=CORPORA, encoding=opts.encoding,
                          errors=opts.errors)  # fmt: skip
    text = "".join(stream)
    if tokenizer.kind == "word":
        ids = tokenizer.encode(text, on_unknown="token")
    else:
        ids = tokenizer.encode(text, skip_unknown=True)
    if len(ids) < 2:
        raise DataError("--keep-eval: the text holds fewer than 2 tokens the model can read")
    chars = spelled_chars(tokenizer, ids, None if tokenizer.kind == "char" else len(text))
    report("message", {"text": f"keep-eval: {len(ids):,} tokens of {', '.join(stream.sources)} "
                               "scored at every validation"})  # fmt: skip
    return KeepEval(ids=ids, chars=chars, sources=list(stream.sources))


def tokenize(
    opts: TrainOptions,
    val_fraction: float,
    report: Report,
    base: AnyTokenizer | None = None,
    seed: int = 0,
) -> tuple[TokenizedCorpus, CorpusInfo, float, np.ndarray | None]:
    """Read the corpus a piece at a time (a corpus larger than memory streams into the id
    file) and tokenize it through the cache under corpora/cache (with the `base` tokenizer's
    vocabulary when fine-tuning); with --items or --val-file, apart from its validation text
    (held_out.py), the items' hashes returned too."""
    t0 = time.perf_counter()
    kind = base.kind if base is not None else opts.kind
    report("stage", {"message": f"reading and tokenizing ({kind})…"})
    stream = CorpusStream(
        opts.corpus, cache_dir=CORPORA, encoding=opts.encoding, errors=opts.errors
    )
    hashes = None
    if opts.items or opts.val_file:  # the validation text apart: drawn items, or a file
        tokenized, hashes = tokenize_apart(opts, stream, kind=kind, val_fraction=val_fraction,
                                           seed=seed, base=base)  # fmt: skip
    else:
        tokenized = tokenize_corpus(
            stream, kind=kind, vocab_size=opts.vocab_size, min_frequency=opts.min_frequency,
            val_fraction=val_fraction, cache_dir=CORPORA / "cache", signature=stream.signature(),
            base=base,
        )  # fmt: skip
    seconds = time.perf_counter() - t0
    sources = list(tokenized.sources or stream.sources)
    skipped = [list(pair) for pair in tokenized.skipped]
    corpus = CorpusInfo(
        fingerprint=tokenized.fingerprint, chars=tokenized.chars, sources=sources[:20],
        n_sources=len(sources), tokenizer=kind, n_train=tokenized.n_train,
        skipped=skipped[:20], n_skipped=len(skipped),
        val_file=None if opts.val_file is None else str(opts.val_file),
        items=None if hashes is None else len(hashes),
    )  # fmt: skip
    if skipped:
        shown = "; ".join(f"{name} ({why})" for name, why in skipped[:5])
        more = f"; and {len(skipped) - 5} more" if len(skipped) > 5 else ""
        files = f"{len(sources):,} file{'s' if len(sources) != 1 else ''}"
        report("note", {"message": f"read {files}; left out {len(skipped):,} that are not "
                                   f"text: {shown}{more}"})  # fmt: skip
    report("tokenized", {"kind": kind, "vocab_size": tokenized.tokenizer.vocab_size,
                         "tokens": len(tokenized.ids), "chars": tokenized.chars,
                         "seconds": seconds, "cached": tokenized.cached})  # fmt: skip
    return tokenized, corpus, seconds, hashes


def validation_part(
    val_ids: np.ndarray, val_chars: int, limit: int, tokenizer: AnyTokenizer, report: Report
) -> tuple[np.ndarray, int]:
    """The validation ids training scores (at most `limit` from the start; 0 = all), and the
    characters their predicted tokens spell."""
    if not limit or len(val_ids) <= limit:
        return val_ids, val_chars
    report("message", {"text": f"validating on the first {limit:,} of {len(val_ids):,} "
                               "validation tokens (--val-tokens)"})  # fmt: skip
    part = val_ids[:limit]
    return part, spelled_chars(tokenizer, part)


def size_to_budget(
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    opts: TrainOptions,
    train_tokens: int,
    device: torch.device,
    precision: str,
    report: Report,
) -> tuple[ModelConfig, TrainConfig, str]:
    """Choose the size, learning rate, dropout, weight decay, batch and window for the budget
    (sizing.py), keeping what the user gave; the time spent measuring comes out of the budget.
    Returns the new configs and one line saying what was chosen."""
    # An optimizer's first use imports torch._dynamo (1-8 s, a process's cost, not measuring's):
    # imported before sizing's clock starts, or the first measurement would spend its share on it.
    import torch._dynamo  # noqa: F401

    t0 = time.perf_counter()
    rungs, small = sizing.LADDER, sizing.SMALL_LADDER
    if opts.hidden is not None or opts.layers is not None:
        rungs = (sizing.Rung(model_cfg.hidden_size, model_cfg.num_layers,
                             sizing.lr_for(model_cfg.hidden_size)),)  # fmt: skip
        small = ()
    report("stage", {"message": "measuring this machine's speed to size the model to the budget…"})
    assert train_cfg.budget is not None
    until = t0 + sizing.SIZING_SHARE * train_cfg.budget  # every measurement stops by this clock
    out_of_time = sizing.past(until)
    choice = sizing.choose(
        train_cfg.budget, train_tokens,
        rate=lambda r: sizing.measure_rate(
            r, model_cfg, train_cfg, device, precision,
            warmup_seconds=0.25 if r in (rungs[0], *small) else 0.0,  # the process's first steps
            until=until,
        ),
        params=lambda r: sizing.count_parameters(r, model_cfg), rungs=rungs, small=small,
        out_of_time=out_of_time,
    )  # fmt: skip
    rung, epochs = choice.rung, choice.epochs
    # The batch and window, for the size chosen (its speed at the run's layout is known).
    layouts = sizing.fitting_layouts(train_tokens, opts.batch_size, opts.window)
    here = (train_cfg.batch_size, train_cfg.window)
    layout_note = ""
    # Comparing layouts takes a dozen more measurements: not where the machine is so slow that
    # sizing has already taken its share of the budget.
    if out_of_time():
        layouts = ()
        layout_note = "; batch × window not compared (sizing took its share of the budget)"
    if train_cfg.items:  # an item model's rows are its items: their width is not a choice
        layouts = ()
    if len(layouts) > 1 and here in layouts:
        known = {here: choice.rates[str(rung)]}

        def rate(b: int, t: int) -> float:
            if (b, t) not in known:
                cfg = replace(train_cfg, batch_size=b, window=t)
                known[b, t] = sizing.measure_rate(rung, model_cfg, cfg, device, precision,
                                                  steps=4, until=until)  # fmt: skip
            return known[b, t]

        order = (here, *(bt for bt in layouts if bt != here))
        layout = sizing.choose_layout(rate, order, out_of_time=out_of_time)
        train_cfg = replace(train_cfg, batch_size=layout.batch, window=layout.window)
        epochs = epochs * layout.rate / known[here]
        layout_note = f"; batch × window: {layout.why}"
    spent = time.perf_counter() - t0
    lr = train_cfg.lr if opts.lr is not None else sizing.cell_lr(rung, model_cfg.cell)
    dropout = model_cfg.dropout if opts.dropout is not None else sizing.dropout_for(epochs)
    decay = train_cfg.weight_decay
    if opts.weight_decay is None:
        decay = sizing.weight_decay_for(epochs, model_cfg.cell, decay)
    train_cfg = replace(train_cfg, lr=lr, weight_decay=decay)
    model_cfg = sizing.sized(model_cfg, rung, embed_size=opts.embed or 0, dropout=dropout)
    chosen = (f"{rung}, lr {lr:g}, dropout {dropout:g}, weight decay {decay:g}, batch "
              f"{train_cfg.batch_size} × window {train_cfg.window}")  # fmt: skip
    # The attention head is never chosen: it has not been measured to win at any budget
    # (BENCHMARKS.md, issue #30). The line says so, and how to have it anyway.
    head = (f"attention over the last {model_cfg.attention:,} outputs (--attention)"
            if model_cfg.attention else
            "no attention head (not measured to win at any budget; --attention M adds one)")
    report("message", {"text": (
        f"sized for the budget: {chosen}, {head} (~{epochs:.1f} passes over the training "
        f"split); {choice.why}{layout_note}; {spent:.1f}s measuring, counted in the budget. "
        "Each yields to its flag (--hidden, --layers, --lr, --dropout, --weight-decay, "
        "--batch-size, --window, --attention).")})  # fmt: skip
    return model_cfg, train_cfg, chosen


def default_run_name(corpus: list[str]) -> str:
    """corpus-date-time, e.g. play-20261201-093000."""
    first = corpus[0] if corpus else "corpus"
    stem = "stdin" if first == "-" else Path(first.rstrip("/")).stem or "corpus"
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", stem)[:40]
    return f"{stem}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def keep_tokens(ids: np.ndarray, cached: Path | None, dest: Path) -> None:
    """The run's own copy of its token ids: a hard link to the cache file where one can be made
    (no second copy of a big corpus on disk), else a copy; either replaces what was at `dest`
    (a symbolic link too: never written through)."""
    if cached is not None:
        files.link_atomic(cached, dest)
        return
    files.write_atomic(dest, lambda f: np.save(f, ids))
