"""How a run looks at rest: the lines of `charlstm info`, its loss plot, the `runs` table and
what `runs` says it removed."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from charlstm.display.console import mb
from charlstm.display.stdout import write_stdout
from charlstm.errors import CharlstmError


def info_lines(data: dict[str, Any]) -> str:
    """`charlstm info` as text (stdout)."""
    m = data["model"]
    corpus = data["corpus"] or {}
    best = data["best_val_loss"]
    lines = [
        f"checkpoint   {data['path']} (charlstm {data['charlstm_version']}, "
        f"format {data['format_version']})",
        f"model        {m['cell']} {m['num_layers']}×{m['hidden_size']}, embedding "
        f"{m['embed_size']}, dropout {m['dropout']}, weight-drop {m.get('weight_drop', 0.0)}, "
        f"tied {m['tie_weights']}"
        + (f", attention over {m['attention']}" if m.get("attention") else ""),
        f"parameters   {data['parameters']:,}",
        f"fingerprint  {data.get('fingerprint') or '—'}",
        f"tokenizer    {data['tokenizer']['kind']}, vocabulary {data['tokenizer']['vocab_size']:,}",
        f"corpus       {corpus.get('chars', 0):,} chars, fingerprint {corpus.get('fingerprint')}"
        + _files(corpus),
        *_items(data, corpus),
        f"trained      {data['steps'] or 0:,} steps, {data['tokens_seen'] or 0:,} tokens",
        "best val     " + ("—" if best is None else f"{best:.4f} nats/token"),
        f"resumable    {'yes (last.pt)' if data['resumable'] else 'no'}",
        *(
            [
                f"fine-tuned   from {data['parent']['path']} (fingerprint "
                f"{data['parent'].get('fingerprint')})"
            ]
            if data.get("parent")
            else []
        ),
    ]
    return "\n".join(lines) + "\n"


def _items(data: dict[str, Any], corpus: dict[str, Any]) -> list[str]:
    """An item model's line (train --items), and the held-out file it validated on."""
    items, out = (data.get("train_config") or {}).get("items"), []
    if items:
        out.append(f"items        {items}: a list of {corpus.get('items') or 0:,} items, each "
                   "learnt from the start (sample prints new items)")  # fmt: skip
    if corpus.get("val_file"):
        out.append(f"validation   {corpus['val_file']} (--val-file)")
    return out


def _files(corpus: dict[str, Any]) -> str:
    """', 12 files (2 left out: a.bin (binary...), ...)' for a corpus read from files."""
    n, skipped = corpus.get("n_sources") or 0, corpus.get("skipped") or []
    if n <= 1 and not skipped:
        return ""
    out = f", {n:,} files"
    if skipped:
        shown = ", ".join(f"{name} ({why})" for name, why in skipped[:3])
        more = corpus.get("n_skipped", len(skipped)) - min(len(skipped), 3)
        out += f" ({corpus.get('n_skipped', len(skipped)):,} left out as not text: {shown}"
        out += f" and {more} more)" if more > 0 else ")"
    return out


def plot_info(data: dict[str, Any], out: Path) -> None:
    """`charlstm info --plot`: the loss curves of a checkpoint (api.info's `data`) into `out`."""
    if not data["metrics"] and data["path"].endswith(".safetensors"):
        raise CharlstmError(
            f"a model file keeps no training curve to plot: plot its run's checkpoint "
            f"(charlstm info {Path(data['path']).with_name('best.pt')} --plot {out})"
        )
    plot_metrics(data["metrics"], out, title=data["path"], curve=data["train_curve"])


def plot_metrics(
    metrics: list[dict[str, Any]], out: Path, title: str, curve: list[dict[str, Any]] = ()
) -> None:
    """Training and validation loss against step, into an image file (needs matplotlib):
    the training loss recorded steadily through the run (`curve`), and at each validation."""
    try:
        import matplotlib
    except ImportError:
        raise CharlstmError("--plot needs matplotlib: pip install 'charlstm[plot]'") from None
    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    if not metrics and not curve:
        raise CharlstmError("the checkpoint holds no metrics to plot")
    fig, ax = plt.subplots(figsize=(7, 4))
    points = sorted([*curve, *metrics], key=lambda m: m["step"])
    keys = (("train_loss", "train"), ("val_loss", "validation"), ("keep_loss", "keep-eval"))
    for key, label in keys:
        pts = [(m["step"], m[key]) for m in points
               if m.get(key) is not None and math.isfinite(m[key])]  # fmt: skip
        if pts:
            ax.plot(*zip(*pts, strict=True), marker="." if len(pts) < 50 else None, label=label)
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/token)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    try:
        fig.savefig(out)
    except (OSError, ValueError) as e:
        raise CharlstmError(f"could not write '{out}': {getattr(e, 'strerror', None) or e}") from e
    finally:
        plt.close(fig)


def runs_table(found: list[Any]) -> str:
    """`charlstm runs`: one row per run, columns aligned."""
    from charlstm.api import run_age

    rows = [("name", "corpus", "tokens", "model", "steps", "best", "bits/char", "age", "disk")]
    for r in found:
        name = r.name + (" (damaged run.json)" if r.damaged else "")
        rows.append((name, r.corpus[:32], r.tokenizer, r.model,
                     "—" if r.steps is None else f"{r.steps:,}",
                     "—" if r.best_val_loss is None else f"{r.best_val_loss:.4f}",
                     "—" if r.best_val_bpc is None else f"{r.best_val_bpc:.3f}",
                     run_age(r.modified), mb(r.bytes)))  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() + "\n"
                   for row in rows)  # fmt: skip


def show_runs(found: list[Any], checkpoints: Path, err: Console) -> None:
    """`charlstm runs`: the table on stdout; on stderr the damaged run.json files and how much
    of the disk only resuming needs, or how to make a first run."""
    if not found:
        err.print(f"no runs under '{checkpoints}'; train one with: charlstm train CORPUS")
        return
    write_stdout(runs_table(found))
    for r in found:
        if r.damaged:
            err.print(f"[yellow]note:[/] {escape(f'{r.name}: {r.damaged}')}; listed from its files")
    total, resumable = sum(r.bytes for r in found), sum(r.last_bytes for r in found)
    err.print(
        f"{len(found)} runs, {mb(total)}; {mb(resumable)} of it is last.pt and tokens.npy, "
        "which only resuming needs (charlstm runs --slim-finished frees it for finished runs)",
        style="dim",
    )


def removed(err: Console, folder: Path, freed: int, slimmed: bool = False) -> None:
    """A run deleted, or slimmed to its best.pt, and the disk it freed."""
    if slimmed:
        err.print(f"slimmed {folder}: kept best.pt, freed {mb(freed)}; it can no longer be "
                  "resumed")  # fmt: skip
    else:
        err.print(f"deleted {folder} ({mb(freed)})")
