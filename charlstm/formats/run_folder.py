"""The checkpoints folder: which runs it holds, what each is and weighs, and taking away the
ones (or the parts of them) no longer wanted. Reads each run's run.json, written by training,
so listing needs no torch; runs from before run.json existed are listed from their files, and
so is a run whose run.json is damaged (its record says why, in `damaged`): one bad run.json
never hides the other runs.

    for run in list_runs(Path("checkpoints")): print(run.name, run.best_val_loss, run.bytes)
    delete_run(root, "old-run")          # the whole folder
    slim_run(root, "done-run")           # keep best.pt: last.pt and tokens.npy go
    held = hold_run(folder, new=True)    # one training process per folder, until held.release()
"""

from __future__ import annotations

import math
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from charlstm import files, safejson
from charlstm.errors import CharlstmError, UsageError

# The names of a run folder's files: spelled here only (RunFolder's properties use them).
BEST, LAST, MODEL_FILE = "best.pt", "last.pt", "model.safetensors"
METRICS, TOKENS, KEEP, SUMMARY = "metrics.jsonl", "tokens.npy", "keep.npy", "run.json"
ITEMS = "items.npy"  # an item model's list, as hashes (data/items.py): what --novel checks
LOCK_FILE = ".lock"  # held by the one process training the run (files.try_lock)
# What a run folder holds (training writes these; --overwrite deletes them).
RUN_FILES = (BEST, LAST, METRICS, TOKENS, KEEP, SUMMARY, MODEL_FILE, ITEMS)
RESUME_READS = (LAST, TOKENS, KEEP)  # what resuming reads from the folder
# `charlstm export` writes model.safetensors too, maybe now: its temporary file may be live.
ONLY_TRAINING_WRITES = tuple(name for name in RUN_FILES if name != MODEL_FILE)


@dataclass(frozen=True)
class RunFolder:
    """One run's folder and the paths of its files; `checkpoint()` is the model a reader
    takes from it (best.pt, else last.pt, else model.safetensors)."""

    path: Path

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def best(self) -> Path:
        return self.path / BEST

    @property
    def last(self) -> Path:
        return self.path / LAST

    @property
    def model_file(self) -> Path:
        return self.path / MODEL_FILE

    @property
    def metrics(self) -> Path:
        return self.path / METRICS

    @property
    def tokens(self) -> Path:
        return self.path / TOKENS

    @property
    def keep(self) -> Path:
        return self.path / KEEP

    @property
    def items(self) -> Path:
        return self.path / ITEMS

    @property
    def summary(self) -> Path:
        return self.path / SUMMARY

    @property
    def lock(self) -> Path:
        return self.path / LOCK_FILE

    def checkpoint(self) -> Path | None:
        """The model file a reader takes: best.pt, else last.pt, else model.safetensors."""
        for path in (self.best, self.last, self.model_file):
            if path.is_file():
                return path
        return None

    def has_checkpoint(self) -> bool:
        """Whether training left a checkpoint here (best.pt or last.pt): a run."""
        return self.best.is_file() or self.last.is_file()

    @classmethod
    def of(cls, file: Path) -> RunFolder | None:
        """The run folder a checkpoint file is one of (None: a file of another name)."""
        return cls(file.parent) if file.name in (BEST, LAST) else None


class RunsError(CharlstmError):
    """A run that cannot be found or changed."""


class RunBusy(RunsError):
    """Another process is training the run now."""


class HeldRun:
    """A run folder held by the one process training in it: locked against every other
    charlstm process until release(), or until this process ends, however it ends."""

    def __init__(self, path: Path, lock: files.Lock, *, new: bool, made: bool) -> None:
        self.path, self.lock, self.new, self.made = path, lock, new, made

    def release(self, failed: bool = False) -> None:
        """Let go of the folder. A new run that failed before its first checkpoint takes what
        it wrote with it, and the folder if it made it: a folder without last.pt could not be
        resumed, and would only stand in the way of the next run of the name."""
        try:
            if failed and self.new and not RunFolder(self.path).has_checkpoint():
                for name in RUN_FILES:
                    (self.path / name).unlink(missing_ok=True)
                files.remove_temporaries(self.path, RUN_FILES)
        except OSError:
            pass  # what cannot be deleted stays; the next run of the name replaces it
        finally:
            self.lock.release()
        if failed and self.made and not RunFolder(self.path).has_checkpoint():
            try:
                self.path.rmdir()  # only if empty: anything else in it is not ours
            except OSError:
                pass


def hold_run(folder: Path, *, new: bool, overwrite: bool = False) -> HeldRun:
    """Hold `folder` for training (HeldRun); while another process trains in it, refuse in one
    line (RunBusy). A new run's folder is made, and must hold no run unless `overwrite` (then
    the old run's files go); a resumed run's files must be its own, not symbolic links that
    could lead its reads anywhere. Temporary files that killed writers left are deleted.
    Every write into the folder replaces the name it writes (files.py): links are never
    written through."""
    if not new and not RunFolder(folder).last.is_file():
        raise RunsError(f"cannot resume: no last.pt in '{folder}'")
    made = new and not folder.is_dir()
    lock = None
    for _ in range(10):  # a failed run may be deleting the folder as we make it
        try:
            if new:
                folder.mkdir(parents=True, exist_ok=True)
            lock = files.try_lock(RunFolder(folder).lock)
            break
        except FileNotFoundError:
            continue
        except OSError as e:
            raise RunsError(f"cannot train in '{folder}': {e.strerror or e}") from None
    else:
        raise RunsError(f"cannot train in '{folder}': it keeps vanishing")
    if lock is None:
        what = "choose another --name, or wait for it to end" if new else "wait for it to end"
        raise RunBusy(f"another process is training '{folder}' now; {what}")
    try:
        if new and RunFolder(folder).has_checkpoint():
            if not overwrite:
                raise RunsError(
                    f"'{folder}' already holds a run; continue it with --resume {folder}, "
                    "replace it with --overwrite, or choose another --name"
                )
            for name in RUN_FILES:  # the old run's files; nothing else is ours to touch
                (folder / name).unlink(missing_ok=True)
        if not new:
            for name in RESUME_READS:
                if (folder / name).is_symlink():
                    raise RunsError(f"cannot resume: '{folder / name}' is a symbolic link; "
                                    "a run folder's files must be its own")  # fmt: skip
        files.remove_temporaries(folder, ONLY_TRAINING_WRITES)  # others' once an hour old
    except OSError as e:
        lock.release()
        raise RunsError(f"cannot train in '{folder}': {e.strerror or e}") from None
    except BaseException:
        lock.release()
        raise
    return HeldRun(folder, lock, new=new, made=made)


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


def model_shape(model: dict[str, Any]) -> str:
    """A model's shape in a few words from its saved ModelConfig fields: "lstm 2×256", and
    "lstm 2×256 + attention 256" with an attention head."""
    head = model.get("attention") or 0
    return (f"{model['cell']} {model['num_layers']}×{model['hidden_size']}"
            + (f" + attention {head}" if head else ""))  # fmt: skip


def list_runs(root: Path) -> list[RunRecord]:
    """The runs under `root` (folders holding best.pt or last.pt), newest first."""
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and RunFolder(p).has_checkpoint()]
    records = [_record(p) for p in found]
    return sorted(records, key=lambda r: -r.modified)


# run.json's fields `charlstm runs` shows, with the types training writes (None: absent).
_COUNTS = ("parameters", "step")
_LOSSES = ("best_val_loss", "best_val_bpc")


def _read_run_json(folder: Path) -> dict[str, Any]:
    """The fields of a run's run.json that listing uses, checked; {} when there is none.
    ValueError (one line) when it is there but damaged."""
    path = RunFolder(folder).summary
    try:
        if path.stat().st_size > 1 << 20:  # training writes a few KB
            raise ValueError("run.json is over 1 MB")
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}  # a run from before run.json: what the files say
    except (OSError, UnicodeError) as e:
        raise ValueError(f"run.json cannot be read ({e})") from None
    info = safejson.loads(text, SUMMARY, strict=False)
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
        model=model_shape(model) if model else "?",
        parameters=info.get("parameters"),
        steps=info.get("step"),
        best_val_loss=info.get("best_val_loss"),
        best_val_bpc=info.get("best_val_bpc"),
        finished=info.get("finished"),
        modified=max((m for m, _ in sizes.values()), default=0.0),
        bytes=sum(n for _, n in sizes.values()),
        last_bytes=sum(n for name, (_, n) in sizes.items() if name in (LAST, TOKENS)),
        damaged=damaged,
    )


def _run_folder(root: Path, name: str) -> Path:
    if not name or name.strip(". ") == "" or any(sep in name for sep in "/\\"):
        raise UsageError(f"{name!r} is not a run name: give the folder's name under '{root}'")
    folder = root / name
    if not folder.is_dir() or not RunFolder(folder).has_checkpoint():
        known = ", ".join(r.name for r in list_runs(root)[:10]) or "none"
        raise RunsError(f"no run {name!r} under '{root}' (runs: {known})")
    return folder


def _not_training(folder: Path) -> files.Lock:
    """The run's lock, for changing it: refused while a process trains it."""
    try:
        lock = files.try_lock(RunFolder(folder).lock)
    except OSError as e:
        raise RunsError(f"could not change '{folder}': {e.strerror or e}") from None
    if lock is None:
        raise RunBusy(f"'{folder}' is being trained now; wait for it to end")
    return lock


def delete_run(root: Path, name: str) -> int:
    """Delete the run folder `root/name`; returns the bytes freed."""
    folder = _run_folder(root, name)
    lock = _not_training(folder)
    try:
        freed = _record(folder).bytes
        for entry in folder.iterdir():  # all but the lock, which goes as it is let go
            if entry.name == LOCK_FILE:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    except OSError as e:
        lock.release()
        raise RunsError(f"could not delete '{folder}': {e.strerror or e}") from None
    lock.release()
    try:
        folder.rmdir()
    except OSError as e:
        raise RunsError(f"could not delete '{folder}': {e.strerror or e}") from None
    return freed


def slim_run(root: Path, name: str) -> int:
    """Keep a run's best.pt (all that sampling and evaluating need) and delete last.pt and
    tokens.npy (all that only resuming needs); returns the bytes freed."""
    folder = _run_folder(root, name)
    if not RunFolder(folder).best.is_file():
        raise RunsError(f"'{folder}' has no best.pt to keep; delete the run instead")
    lock = _not_training(folder)
    freed = 0
    try:
        for path in (RunFolder(folder).last, RunFolder(folder).tokens):
            if path.is_file():
                freed += path.stat().st_size
                path.unlink()
    finally:
        lock.release()
    return freed


def age(seconds_since_epoch: float) -> str:
    """How long ago, in the largest unit that fits: 45s, 12m, 3h, 5d."""
    s = max(0.0, time.time() - seconds_since_epoch)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            return f"{int(s // size)}{unit}"
    return f"{int(s)}s"
