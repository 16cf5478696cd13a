"""How charlstm looks on a terminal: the training display (a live bar on a terminal, one plain
line per event in a pipe or log), the summary, the lines of `info`, and loss plots. Used by
cli.py only; everything here writes to stderr (or to an image file), never to stdout.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console

from charlstm.errors import CharlstmError
from charlstm.formats.run_folder import BEST, LAST, METRICS


def err_console(quiet: bool = False) -> Console:
    """The console for logs, progress and errors. NO_COLOR and non-terminals are honoured by
    Rich itself; off a terminal (a log file, a pipe) lines are never wrapped, so that each
    event stays one line for grep."""
    console = Console(stderr=True, quiet=quiet, highlight=False)
    if not console.is_terminal:
        console = Console(stderr=True, quiet=quiet, highlight=False, width=100_000)
    return console


def sparkline(values: list[float]) -> str:
    """A one-line chart of `values`, lowest ▁ to highest █; non-finite values show as a space."""
    bars = "▁▂▃▄▅▆▇█"
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return ""
    lo, hi = min(finite), max(finite)
    span = hi - lo
    out = []
    for v in values:
        if v is None or not math.isfinite(v):
            out.append(" ")
        else:
            out.append(bars[round((v - lo) / span * (len(bars) - 1)) if span > 0 else 0])
    return "".join(out)


def fmt_seconds(s: float) -> str:
    s = int(round(s))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def step_line(step: int, elapsed: float, loss: float) -> str:
    """The start of every plain log line of a run: where it is and its latest training loss."""
    return f"step {step:>7,} · {fmt_seconds(elapsed):>6} · train {loss:.4f}"


class TrainDisplay:
    """Receives a run's events (training.Report): a live progress bar on a terminal, plain lines
    otherwise; a spinner while a stage (reading, sizing) runs."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.cfg: Any = None
        self.setup_seconds = 0.0
        self.progress: Any = None
        self.task: Any = None
        self.status: Any = None
        self.last_val: float | None = None
        # Off a terminal (a log file, CI) the bar is replaced by a plain line now and then: only
        # where validations, capped at ~2% of the run's time, leave a gap of over 15% of it.
        self.progress_now = 0.0
        self.progress_at_last_line = 0.0

    def __call__(self, event: str, data: dict[str, Any]) -> None:
        if self.status is not None:  # a stage ends when anything else happens
            self.status.stop()
            self.status = None
        getattr(self, f"_on_{event}", self._on_unknown)(data)

    def _on_unknown(self, data: dict[str, Any]) -> None:
        pass  # events a newer library version sends: nothing to show

    def _on_stage(self, data: dict[str, Any]) -> None:
        if self.console.is_terminal and not self.console.quiet:
            self.status = self.console.status(data["message"])
            self.status.start()

    def _on_note(self, data: dict[str, Any]) -> None:
        self.console.print(f"[yellow]note:[/] {data['message']}")

    def _on_message(self, data: dict[str, Any]) -> None:
        self.console.print(data["text"], markup=False)

    def _on_tokenized(self, d: dict[str, Any]) -> None:
        how = "read from the cache" if d["cached"] else f"{d['seconds']:.1f}s"
        if d["kind"] == "char" and d["seconds"] > 2:
            self.console.print(f"char tokenizer: {d['tokens']:,} tokens · {how} · "
                               f"{d['chars'] / d['seconds'] / 1e6:.0f}M chars/s")  # fmt: skip
        elif d["kind"] != "char":
            self.console.print(
                f"{d['kind']} tokenizer: vocabulary {d['vocab_size']:,} · {d['tokens']:,} tokens "
                f"({d['chars'] / max(d['tokens'], 1):.2f} chars per token) · {how}"
            )

    def _on_ready(self, data: dict[str, Any]) -> None:
        self.setup_seconds = data["seconds"]

    def _on_start(self, d: dict[str, Any]) -> None:
        limits = d["limits"]
        resumed = f" · resumed at step {d['resumed_at']:,}" if d["resumed_at"] is not None else ""
        self.console.print(
            f"vocabulary {d['vocab_size']:,} · parameters {d['parameters']:,} · "
            f"{d['streams']} streams × {d['window']} steps = "
            f"{d['tokens_per_step']:,} tokens/step · "
            f"{d['train_tokens']:,} train / {d['val_tokens']:,} validation tokens · "
            f"{' or '.join(_limits(limits))}{resumed} · {d['where']} · "
            f"ready in {self.setup_seconds:.1f}s"
        )
        if self.console.is_terminal and not self.console.quiet:
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

            self.progress = Progress(
                TextColumn("[bold]train"),
                BarColumn(),
                TextColumn("{task.percentage:>3.0f}%"),
                TimeRemainingColumn(),
                TextColumn("{task.fields[status]}"),
                console=self.console,
                transient=True,
            )
            self.progress.start()
            self.task = self.progress.add_task("train", total=1.0, status="")

    def _on_progress(self, d: dict[str, Any]) -> None:
        self.progress_now = d["progress"]
        if self.progress is None:
            if 1.0 > d["progress"] >= self.progress_at_last_line + 0.15 - 1e-9:
                self.console.print(
                    f"{step_line(d['step'], d['elapsed'], d['loss'])} · "
                    f"{d['tokens_per_s']:,.0f} tok/s"
                )
                self.progress_at_last_line = d["progress"]
            return
        val = f" · val {self.last_val:.3f}" if self.last_val is not None else ""
        status = (
            f"step {d['step']:,} · loss {d['loss']:.3f}{val} · "
            f"{d['tokens_per_s']:,.0f} tok/s · epoch {d['epoch']:.2f}"
        )
        self.progress.update(self.task, completed=d["progress"], status=status)

    def _on_eval(self, d: dict[str, Any]) -> None:
        self.progress_at_last_line = self.progress_now
        if d["val_loss"] is not None:
            self.last_val = d["val_loss"]
            val = f"val {d['val_loss']:.4f} ({d['val_bpc']:.3f} bpc)"
        elif d.get("skipped"):
            val = "validation skipped (the budget's end)"
        else:
            val = "no validation split"
        mark = " [green]best[/]" if d["best"] else ""
        keep = f" · keep-eval {d['keep_loss']:.4f}" if d.get("keep_loss") is not None else ""
        self.console.print(
            f"{step_line(d['step'], d['elapsed'], d['train_loss'])} · {val}{keep}{mark}"
        )

    def close(self) -> None:
        for live in (self.progress, self.status):
            if live is not None:
                live.stop()
        self.progress = self.status = None


def _limits(limits: dict[str, Any]) -> list[str]:
    out = []
    if limits.get("budget"):
        out.append(f"budget {fmt_seconds(limits['budget'])}")
    if limits.get("steps"):
        out.append(f"{limits['steps']:,} steps")
    if limits.get("epochs"):
        out.append(f"{limits['epochs']:g} epochs")
    return out


def print_summary(err: Console, s: dict[str, Any]) -> None:
    """The table at the end of a run (stderr)."""
    from rich.table import Table

    table = Table(title="training summary", show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    best = s["best_val_loss"]
    unit = {"char": "char", "word": "word"}.get(s.get("tokenizer", "char"), "token")
    run_dir = s["run_dir"]
    rows = [
        ("stopped", s["stop_reason"]),
        ("parameters", f"{s['parameters']:,}"),
        ("steps", f"{s['steps']:,} ({s['epochs']:.2f} epochs)"),
        ("tokens seen", f"{s['tokens_seen']:,}"),
        ("time", _time_row(s)),
        ("speed", f"{s['tokens_per_s'] or 0:,.0f} tokens/s training · "
         f"{s['tokens_seen'] / max(s['elapsed'], 1e-9):,.0f} with validation"),
        ("device", f"{s['device']}" + (f" × {s['processes']} processes" if s["processes"] > 1
         else "") + f" · {s['precision']}" + (f" · peak memory {s['peak_gpu_memory_mb']:,.0f} MiB"
         if s["peak_gpu_memory_mb"] is not None else "")),
        ("best validation", "—" if best is None else
         f"{best:.4f} nats/{unit} · {s['best_val_bpc']:.3f} bits/char · "
         f"perplexity {math.exp(best):.2f}"),
        ("validation curve", _val_curve(s.get("val_losses") or [])),
        ("keep-eval", _val_curve(s.get("keep_losses") or [])),
        ("fine-tuned from", s.get("fine_tuned_from") or ""),
        ("checkpoints", f"{run_dir}/{BEST}, {LAST}, {METRICS}"),
        ("sample", f"charlstm sample -m {run_dir}"),
    ]  # fmt: skip
    for k, v in rows:
        if v:
            table.add_row(k, v)
    err.print(table)


def _time_row(s: dict[str, Any]) -> str:
    """The command's seconds in all and part by part (they add up to the total); for a resumed
    run, also the training time over all its sessions."""
    total = s.get("total_seconds") or s["elapsed"]
    parts = s.get("time_parts")
    if not parts:
        return fmt_seconds(total)
    names = (("setup", "setting up"), ("training", "training"), ("validating", "validating"),
             ("final_validation", "final validation"), ("saving", "saving"),
             ("leaving", "leaving the process group"), ("other", "other"))
    shown = []
    for key, name in names:
        value = parts.get(key) or 0.0
        if value >= 0.05 or key in ("setup", "training"):
            sizing = s.get("sizing_seconds")
            extra = f" ({_secs(sizing)} sizing)" if key == "setup" and sizing else ""
            shown.append(f"{_secs(value)} {name}{extra}")
    row = f"{_secs(total)} in all: " + ", ".join(shown)
    if s.get("resumed_at_step") is not None:
        row += f"; {_secs(s['elapsed'])} of training over all the run's sessions"
    return row


def _secs(seconds: float) -> str:
    return f"{seconds:.1f}s" if seconds < 59.95 else fmt_seconds(seconds)


def _val_curve(values: list[float]) -> str:
    if len(values) < 2:
        return ""
    return f"{sparkline(values[-60:])}  {values[0]:.3f} → {values[-1]:.3f}"


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
        f"tied {m['tie_weights']}",
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


def unit_table(acts: dict, body: str, layer: int, unit: int | None, err: Console) -> list[dict]:
    """Rank the units by how well they track properties of the text; print the best 5 (stderr)
    and return them unless a --unit was given."""
    from rich.table import Table

    from charlstm.api import units_tracking

    best = units_tracking(acts, body, top=5)
    table = Table(title=f"layer {layer}: units that track the text", title_style="bold")
    for col in ("kind", "unit", "property", "r"):
        table.add_column(col, justify="right" if col in ("unit", "r") else "left")
    for b in best:
        table.add_row(b["kind"], str(b["unit"]), b["property"], f"{b['correlation']:+.3f}")
    err.print(table if best else "no unit varies with any property of this text")
    return best if unit is None else []


def show_units(
    body: str, acts: dict, shown: list[dict], layer: int, cell: str, html_out: Path | None,
    err: Console, form: str = "ansi",
) -> None:  # fmt: skip
    """The text coloured by each shown unit on stdout (or their values, `form` tsv or json);
    and the coloured text as a page with --html."""
    from charlstm.cli.output import _flush_pending, _StdoutConsole
    from charlstm.evaluation.visualize import render_html, render_terminal, value_lines

    rows = []
    for s in shown:
        label = f"layer {layer} · {s['kind']} · unit {s['unit']}"
        if "correlation" in s:
            label += f" · r={s['correlation']:+.2f} with {s['property']}"
        rows.append((label, acts[s["kind"]][:, s["unit"]], s["kind"]))
    if form != "ansi":
        columns = [(f"{s['kind']} {s['unit']}", values) for s, (_, values, _) in zip(shown, rows,
                   strict=True)]  # fmt: skip
        pending: list[str] = []
        for line in value_lines(body, columns, form):
            pending.append(line)
            if len(pending) >= 1000:
                _flush_pending(pending, "")
        _flush_pending(pending, "")
    # Colours also into a pipe when asked for (--format ansi); NO_COLOR still drops them.
    out = _StdoutConsole(file=sys.stdout, highlight=False, force_terminal=form == "ansi")
    for label, values, k in rows if form == "ansi" else ():
        out.print(label, style="bold", markup=False)
        end = "" if body.endswith("\n") else "\n"  # the text's own last newline ends it
        out.print(render_terminal(body, values, kind=k), soft_wrap=True, end=end)
    if html_out is not None:
        title = f"charlstm · {cell} · layer {layer}"
        page = render_html(body, [r[:2] for r in rows], title, kinds=[r[2] for r in rows])
        try:
            html_out.write_text(page, encoding="utf-8")
        except OSError as e:
            raise CharlstmError(f"cannot write {html_out}: {e.strerror or e}") from None
        err.print(f"wrote {html_out}", style="dim")


class CodingBar:
    """The library's progress callback: a bar on a terminal for long inputs, else nothing."""

    def __init__(self, err: Console, what: str) -> None:
        self.err, self.what, self.progress, self.task = err, what, None, None
        self.started = False

    def __call__(self, done: int, total: int) -> None:
        if not self.started:
            self.started = True
            if self.err.is_terminal and not self.err.quiet and total >= 20_000:
                from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

                self.progress = Progress(
                    TextColumn(f"[bold]{self.what}"),
                    BarColumn(),
                    TextColumn("{task.percentage:>3.0f}%"),
                    TimeRemainingColumn(),
                    console=self.err,
                    transient=True,
                )
                self.progress.start()
                self.task = self.progress.add_task(self.what, total=total)
        if self.progress is not None:  # the total grows when compress makes a second pass
            self.progress.update(self.task, completed=done, total=total)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()


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


def mb(n: int) -> str:
    """Bytes as megabytes, as `charlstm runs` shows them."""
    return f"{n / 2**20:,.1f} MB"


def serve_report(quiet: bool) -> Callable[[str, dict], None]:
    """What the server reports, as plain lines on stderr: where it listens, one line per
    request (status, method, path, model, tokens, seconds, seconds to the first token,
    client), errors (even --quiet)."""

    def report(event: str, data: dict) -> None:
        line = ""
        if event == "error":
            line = f"charlstm serve: {data['message']}\n{data['traceback']}"
        elif quiet:
            return
        elif event == "listening":
            key = ", API key required" if data["api_key"] else ""
            models = ", ".join(data["models"])
            line = (f"listening on {data['url']} (models: {models}; batch {data['max_batch']}, "
                    f"queue {data['queue']}{key}); Ctrl-C stops")  # fmt: skip
        elif event == "request":
            model = f" {data['model']}" if data["model"] else ""
            tokens = "" if data["tokens"] is None else f" {data['tokens']} tokens"
            first = "" if data["first"] is None else f" (first {data['first']:.3f} s)"
            line = (f"{data['status']} {data['method']} {data['path']}{model}{tokens} "
                    f"{data['seconds']:.3f} s{first} {data['client']}")  # fmt: skip
        elif event == "stopped":
            line = "stopped"
        if line:
            sys.stderr.write(line.rstrip("\n") + "\n")

    return report
