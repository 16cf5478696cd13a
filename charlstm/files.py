"""Files that are whole or absent, and short content fingerprints: what every writer in charlstm
(checkpoints, the token cache, built-in corpora, exports) shares. No torch here.

    write_atomic(path, "text")                 # or bytes, or a function that writes to the file
    with AtomicFile(path) as f: f.write(...)   # commit on success, nothing left on failure
    link_atomic(source, path)                  # a hard link (or a copy) replacing what was there
    lock = try_lock(path / ".lock")            # None while another process holds it
    fingerprint("some", b"parts")              # 16 hex digits of sha256

Every write replaces the name it writes (a rename over it): a symbolic link there is replaced,
never written through, so a link planted in a folder cannot make a write land outside it.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

from charlstm.errors import CharlstmError

try:  # the OS lock a killed process cannot leave held: flock on POSIX, msvcrt on Windows
    import fcntl
except ImportError:  # pragma: no cover (Windows)
    fcntl = None  # type: ignore[assignment]
try:
    import msvcrt
except ImportError:
    msvcrt = None  # type: ignore[assignment]

FINGERPRINT_DIGITS = 16  # 64 bits of sha256: collisions are out of reach for cache keys


class FileWriteError(CharlstmError):
    """A file could not be written (full disk, no permission); the old file is untouched."""


class Fingerprinter:
    """sha256 over pieces fed one at a time (text as UTF-8); `hex()` is the short fingerprint."""

    def __init__(self) -> None:
        self._h = hashlib.sha256()

    def update(self, piece: str | bytes) -> None:
        self._h.update(piece.encode("utf-8") if isinstance(piece, str) else piece)

    def hex(self, digits: int = FINGERPRINT_DIGITS) -> str:
        return self._h.hexdigest()[:digits]


def fingerprint(*parts: str | bytes, digits: int = FINGERPRINT_DIGITS) -> str:
    """The short sha256 fingerprint of the parts, concatenated."""
    f = Fingerprinter()
    for part in parts:
        f.update(part)
    return f.hex(digits)


class AtomicFile:
    """A temporary file beside the target that replaces it only on `commit()`.

    A crash, a kill -9 or an error at any moment leaves the old file (or none) and never a torn
    one; `commit` flushes and fsyncs the file and its folder, so the rename survives a power
    cut too. Used as a context manager it commits on success and abandons on any exception
    (Ctrl-C included). The temporary name is random, so two processes never share one.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._tmp: Path | None = self.path.with_name(
                f".{self.path.name}.{uuid.uuid4().hex[:12]}.tmp"
            )
            # os.open with 0o666 keeps the usual umask permissions (mkstemp would make 0600).
            fd = os.open(self._tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except OSError as e:
            raise _write_error(self.path, e) from e
        try:
            self.file: BinaryIO = os.fdopen(fd, "wb")
        except BaseException:  # a Ctrl-C here must not leave the file behind
            os.close(fd)
            self._tmp.unlink(missing_ok=True)
            raise

    def commit(self, path: Path | str | None = None) -> Path:
        """Make the written bytes the file at `path` (default: the path given at the start)."""
        target = self.path if path is None else Path(path)
        assert self._tmp is not None, "already committed or abandoned"
        try:
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()
            os.replace(self._tmp, target)
            self._tmp = None
            dir_fd = os.open(target.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)  # the rename itself, durably
            finally:
                os.close(dir_fd)
        except OSError as e:
            self.abandon()
            raise _write_error(target, e) from e
        except BaseException:  # a second Ctrl-C during the fsync: no temporary file left
            self.abandon()
            raise
        return target

    def abandon(self) -> None:
        """Close and delete the temporary file; the target is left as it was."""
        if not self.file.closed:
            self.file.close()
        if self._tmp is not None:
            self._tmp.unlink(missing_ok=True)
            self._tmp = None

    def __enter__(self) -> BinaryIO:
        return self.file

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if kind is None:
            self.commit()
        else:
            self.abandon()


def write_atomic(path: Path | str, content: str | bytes | Callable[[BinaryIO], None]) -> None:
    """Write `content` (text as UTF-8, bytes, or a function that writes to the binary file) to
    `path` through an `AtomicFile`. Raises FileWriteError (one line) when the disk refuses."""
    atomic = AtomicFile(path)
    try:  # every way out but success abandons the temporary file (commit abandons its own)
        if isinstance(content, str):
            atomic.file.write(content.encode("utf-8"))
        elif isinstance(content, bytes):
            atomic.file.write(content)
        else:
            content(atomic.file)
    except OSError as e:
        atomic.abandon()
        raise _write_error(atomic.path, e) from e
    except RuntimeError as e:
        atomic.abandon()
        # torch.save reports a failed write (a full disk) as a RuntimeError.
        if "write" not in str(e).lower():
            raise
        raise _write_error(atomic.path, e) from e
    except BaseException:
        atomic.abandon()
        raise
    atomic.commit()


def link_atomic(source: Path | str, path: Path | str) -> None:
    """Make `path` a hard link to `source` (no second copy on disk), or a copy of it where no
    link can be made (another file system); whatever was at `path`, a symbolic link included,
    is replaced, never written through."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        os.link(source, tmp)
    except OSError:
        try:
            with open(source, "rb") as src:
                write_atomic(path, lambda f: shutil.copyfileobj(src, f, 2**20))
        except OSError as e:  # the source cannot be read
            raise _write_error(path, e) from e
        return
    try:
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise _write_error(path, e) from e
    except BaseException:  # Ctrl-C between the link and the rename
        tmp.unlink(missing_ok=True)
        raise


TEMPORARY = re.compile(r"\.(.+)\.[0-9a-f]{12}\.tmp")  # AtomicFile's names: .NAME.RANDOM.tmp


def remove_temporaries(
    folder: Path, names: tuple[str, ...], others_after: float = 3600.0
) -> list[Path]:
    """Delete the temporary files that killed writers left in `folder` (a kill -9 leaves its
    AtomicFile behind): those of `names` at once, for a caller that knows no writer of them is
    at work (one holding the folder's lock); any other once untouched for `others_after`
    seconds (a live writer keeps writing it). Returns the files deleted."""
    removed, now = [], time.time()
    for tmp in folder.glob(".*.tmp"):
        match = TEMPORARY.fullmatch(tmp.name)
        if not match:
            continue
        try:
            if match.group(1) in names or now - tmp.lstat().st_mtime > others_after:
                tmp.unlink()
                removed.append(tmp)
        except OSError:
            pass  # gone already, or not ours to delete
    return removed


class Lock:
    """An exclusive lock held through an open lock file: the OS drops it when the process ends,
    however it ends (kill -9 included), so a lock never outlives its holder."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    def release(self) -> None:
        """Drop the lock and delete the lock file (where the system allows it)."""
        if self._fd is None:
            return
        try:
            self.path.unlink()  # still held: a waiter that opened this file sees it was removed
        except OSError:
            pass  # Windows keeps an open file; gone already
        os.close(self._fd)
        self._fd = None


def try_lock(path: Path | str) -> Lock | None:
    """The lock of the lock file `path` (made if missing), or None while another process holds
    it. A symbolic link at `path` is refused (OSError), never followed. Without an OS lock
    (neither fcntl nor msvcrt: no such system in use) every call gets the lock."""
    path = Path(path)
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
    while True:
        fd = os.open(path, flags, 0o666)
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            elif msvcrt is not None:
                msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            os.close(fd)
            return None
        # The holder before us deletes the file as it lets go: if it did so between our open
        # and our lock, we hold a deleted file's lock, which no one else sees. Take the new one.
        try:
            same = os.stat(path, follow_symlinks=False).st_ino == os.fstat(fd).st_ino
        except OSError:
            same = False
        if same:
            return Lock(path, fd)
        os.close(fd)


def _write_error(path: Path, e: BaseException) -> FileWriteError:
    reason = getattr(e, "strerror", None) or _first_line(e)
    return FileWriteError(f"could not write '{path}': {reason}")


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:160] if text else type(e).__name__
