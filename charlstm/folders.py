"""The checkpoints folder: which runs it holds, what each is and weighs, and taking away the
ones (or the parts of them) no longer wanted. Reads each run's run.json, written by training,
so listing needs no torch; runs from before run.json existed are listed from their files, and
so is a run whose run.json is damaged (its record says why, in `damaged`): one bad run.json
never hides the other runs.

    for run in list_runs(Path("checkpoints")): print(run.name, run.best_val_loss, run.bytes)
    delete_run(root, "old-run")          # the whole folder
    slim_run(root, "done-run")           # keep best.pt: last.pt and tokens.npy go
"""

from __future__ import annotations

import math
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from charlstm import safejson
from charlstm.errors import CharlstmError, UsageError


class RunsError(CharlstmError):
    """A run that cannot be found or changed."""


@dataclass(frozen=True)
class RunRecord:
    name: str
    path: str
    corpus: str  # the first source, and how many more
    tokenizer: str
    model: str  # e.g. "lstm 2×256"
    parameters: int | None
    steps: int | None
    best_val_loss: float | None
    best_val_bpc: float | None
    finished: bool | None  # reached its limits (None: not known)
    modified: float  # seconds since the epoch, of the newest file
    bytes: int  # the folder's files (tokens.npy may share its blocks with corpora/cache)
    last_bytes: int  # of which last.pt and tokens.npy, which only resuming needs
    damaged: str | None = None  # why run.json was not used (None: it was, or there is none)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def list_runs(root: Path) -> list[RunRecord]:
    """The runs under `root` (folders holding best.pt or last.pt), newest first."""
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and _is_run(p)]
    records = [_record(p) for p in found]
    return sorted(records, key=lambda r: -r.modified)


def _is_run(folder: Path) -> bool:
    return (folder / "best.pt").is_file() or (folder / "last.pt").is_file()


# run.json's fields `charlstm runs` shows, with the types training writes (None: absent).
_COUNTS = ("parameters", "step")
_LOSSES = ("best_val_loss", "best_val_bpc")


def _read_run_json(folder: Path) -> dict[str, Any]:
    """The fields of a run's run.json that listing uses, checked; {} when there is none.
    ValueError (one line) when it is there but damaged."""
    path = folder / "run.json"
    try:
        if path.stat().st_size > 1 << 20:  # training writes a few KB
            raise ValueError("run.json is over 1 MB")
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}  # a run from before run.json: what the files say
    except (OSError, UnicodeError) as e:
        raise ValueError(f"run.json cannot be read ({e})") from None
    info = safejson.loads(text, "run.json", strict=False)
    if not isinstance(info, dict):
        raise ValueError("run.json is no JSON object")
    for key in _COUNTS:
        if info.get(key) is not None and not (type(info[key]) is int and info[key] >= 0):
            raise ValueError(f"run.json's {key} is {str(info[key])[:20]!r}")
    for key in _LOSSES:
        v = info.get(key)
        if v is not None and (type(v) not in (int, float) or not math.isfinite(v)):
            if isinstance(v, float):  # a NaN or infinite loss: not known
                info[key] = None
                continue
            raise ValueError(f"run.json's {key} is {str(v)[:20]!r}")
    if not isinstance(info.get("finished"), bool | None) or not isinstance(
        info.get("tokenizer", "?"), str
    ):
        raise ValueError("run.json's finished or tokenizer is damaged")
    model = info.get("model") or {}
    if not isinstance(model, dict) or (model and not (
        isinstance(model.get("cell"), str)
        and all(type(model.get(k)) is int for k in ("num_layers", "hidden_size")))):  # fmt: skip
        raise ValueError("run.json's model is damaged")
    corpus = info.get("corpus") or {}
    sources = corpus.get("sources") if isinstance(corpus, dict) else None
    if not isinstance(corpus, dict) or not isinstance(sources or [], list) or not all(
        isinstance(s, str) for s in sources or []
    ) or type(corpus.get("n_sources") or 0) is not int:
        raise ValueError("run.json's corpus is damaged")
    return info


def _record(folder: Path) -> RunRecord:
    damaged = None
    try:
        info = _read_run_json(folder)
    except ValueError as e:
        info, damaged = {}, str(e)
    sizes: dict[str, tuple[float, int]] = {}
    try:
        for p in folder.iterdir():
            try:
                st = p.stat()
            except OSError:
                continue  # gone meanwhile, or a link to nowhere
            if p.is_file():
                sizes[p.name] = (st.st_mtime, st.st_size)
    except OSError as e:
        damaged = damaged or f"its folder cannot be read ({e.strerror or e})"
    model = info.get("model") or {}
    corpus = info.get("corpus") or {}
    sources = corpus.get("sources") or []
    more = (corpus.get("n_sources") or len(sources)) - 1
    first = sources[0] if sources else "?"
    return RunRecord(
        name=folder.name,
        path=str(folder),
        corpus=first + (f" +{more}" if more > 0 else ""),
        tokenizer=str(info.get("tokenizer", "?")),
        model=f"{model['cell']} {model['num_layers']}×{model['hidden_size']}" if model else "?",
        parameters=info.get("parameters"),
        steps=info.get("step"),
        best_val_loss=info.get("best_val_loss"),
        best_val_bpc=info.get("best_val_bpc"),
        finished=info.get("finished"),
        modified=max((m for m, _ in sizes.values()), default=0.0),
        bytes=sum(n for _, n in sizes.values()),
        last_bytes=sum(n for name, (_, n) in sizes.items() if name in ("last.pt", "tokens.npy")),
        damaged=damaged,
    )


def _run_folder(root: Path, name: str) -> Path:
    if not name or name.strip(". ") == "" or any(sep in name for sep in "/\\"):
        raise UsageError(f"{name!r} is not a run name: give the folder's name under '{root}'")
    folder = root / name
    if not folder.is_dir() or not _is_run(folder):
        known = ", ".join(r.name for r in list_runs(root)[:10]) or "none"
        raise RunsError(f"no run {name!r} under '{root}' (runs: {known})")
    return folder


def delete_run(root: Path, name: str) -> int:
    """Delete the run folder `root/name`; returns the bytes freed."""
    folder = _run_folder(root, name)
    freed = _record(folder).bytes
    try:
        shutil.rmtree(folder)
    except OSError as e:
        raise RunsError(f"could not delete '{folder}': {e.strerror or e}") from None
    return freed


def slim_run(root: Path, name: str) -> int:
    """Keep a run's best.pt (all that sampling and evaluating need) and delete last.pt and
    tokens.npy (all that only resuming needs); returns the bytes freed."""
    folder = _run_folder(root, name)
    if not (folder / "best.pt").is_file():
        raise RunsError(f"'{folder}' has no best.pt to keep; delete the run instead")
    freed = 0
    for part in ("last.pt", "tokens.npy"):
        path = folder / part
        if path.is_file():
            freed += path.stat().st_size
            path.unlink()
    return freed


def age(seconds_since_epoch: float) -> str:
    """How long ago, in the largest unit that fits: 45s, 12m, 3h, 5d."""
    s = max(0.0, time.time() - seconds_since_epoch)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            return f"{int(s // size)}{unit}"
    return f"{int(s)}s"
