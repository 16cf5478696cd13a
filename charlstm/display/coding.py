"""How `charlstm compress` and `decompress` look: a bar for long inputs, one summary line."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from rich.console import Console


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


def coded(err: Console, what: str, code: Callable[[CodingBar], bytes]) -> tuple[bytes, float]:
    """Run `code` with a progress bar: its bytes and the seconds it took."""
    bar = CodingBar(err, what)
    t0 = time.perf_counter()
    try:
        return code(bar), time.perf_counter() - t0
    finally:
        bar.close()


def compress_summary(path: Path, data: bytes, blob: bytes, seconds: float) -> str:
    """Sizes, bits per character, speed and segments of one compression."""
    from charlstm.api import compressed_header

    header = compressed_header(blob)
    chars = len(data.decode("utf-8", errors="surrogateescape"))
    raw = (f", {header.raw_segments} stored raw (the model cannot predict them)"
           if header.raw_segments else "")  # fmt: skip
    return (f"{path}: {len(data):,} → {len(blob):,} bytes "
            f"({8 * len(blob) / max(chars, 1):.3f} bits/char) in {seconds:.1f}s "
            f"({len(data) / 1000 / max(seconds, 1e-9):,.1f} KB/s) · {header.segments} segments"
            + raw)  # fmt: skip


def decompress_summary(path: Path, blob: bytes, data: bytes, seconds: float) -> str:
    return (f"{path}: {len(blob):,} → {len(data):,} bytes in {seconds:.1f}s "
            f"({len(data) / 1000 / max(seconds, 1e-9):,.1f} KB/s)")
