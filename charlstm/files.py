"""Files that are whole or absent, and short content fingerprints: what every writer in charlstm
(checkpoints, the token cache, built-in corpora, exports) shares. No torch here.

    write_atomic(path, "text")                 # or bytes, or a function that writes to the file
    with AtomicFile(path) as f: f.write(...)   # commit on success, nothing left on failure
    fingerprint("some", b"parts")              # 16 hex digits of sha256
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

from charlstm.errors import CharlstmError

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
        self.file: BinaryIO = os.fdopen(fd, "wb")

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
    try:
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


def _write_error(path: Path, e: BaseException) -> FileWriteError:
    reason = getattr(e, "strerror", None) or _first_line(e)
    return FileWriteError(f"could not write '{path}': {reason}")


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:160] if text else type(e).__name__
