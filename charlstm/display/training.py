"""How a training run looks: a live bar on a terminal, one plain line per event in a pipe or
log, and the summary at the end."""

from __future__ import annotations

import math
from typing import Any

from rich.console import Console

from charlstm.display.console import fmt_seconds, sparkline
from charlstm.formats.run_folder import BEST, LAST, METRICS


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
        shape = (f"{d['streams']} items a step, each cut at {d['window']} tokens"
                 if d.get("items") else f"{d['streams']} streams × {d['window']} steps = "
                 f"{d['tokens_per_step']:,} tokens/step")  # fmt: skip
        self.console.print(
            f"vocabulary {d['vocab_size']:,} · parameters {d['parameters']:,} · {shape} · "
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
