"""Full disks: a free-space precheck before a checkpoint and one-line errors for ENOSPC / EDQUOT during writes.

A write that runs out of space (a checkpoint, a video, a report) becomes :class:`DiskFullError`, whose message says
where, how much space the write needed and how much is free. Callers clean up what they half-wrote (checkpoints are
written into a temporary directory that is deleted; see :func:`animate124.io.checkpoint.save_checkpoint`).

Example:
    >>> check_free_space(ckpt_dir, needed=dir_size(latest), what="a checkpoint")
    >>> with disk_full_guard("the final video", phase_dir, needed=50 * 2**20):
    ...     write_video(...)
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

from animate124.errors import Animate124Error

FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
# safetensors (Rust) reports an io::Error as text, e.g. 'IoError(Os { code: 28, kind: StorageFull, ... })'
_RUST_IO = re.compile(r"code:\s*(\d+)")
_FULL_TEXT = ("No space left on device", "Disk quota exceeded", "StorageFull", "QuotaExceeded")
MARGIN_BYTES = 2**20
"""Free space kept on top of an estimate, plus 5% of it (file system metadata, the report, TensorBoard events)."""


def margin(needed: int) -> int:
    """Bytes to require beyond ``needed``."""
    return MARGIN_BYTES + needed // 20


class DiskFullError(Animate124Error):
    """No space left (ENOSPC) or quota exceeded (EDQUOT) while writing; nothing half-written is left behind."""


def mb(n_bytes: float) -> str:
    """``12.3 MB`` (MiB)."""
    return f"{n_bytes / 2**20:.1f} MB"


def dir_size(path: str | Path | None) -> int:
    """Total size in bytes of the files under ``path`` (0 for None or a missing path)."""
    if path is None or not Path(path).exists():
        return 0
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def free_bytes(path: str | Path) -> int:
    """Free bytes (for this user) on the file system holding ``path`` (its nearest existing parent)."""
    path = Path(path)
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


def is_disk_full(exc: BaseException) -> bool:
    """True for ENOSPC / EDQUOT, whether raised by Python (OSError) or reported as text by safetensors."""
    if isinstance(exc, OSError) and exc.errno in FULL_ERRNOS:
        return True
    text = str(exc)
    codes = {int(c) for c in _RUST_IO.findall(text)}
    return bool(codes & FULL_ERRNOS) or any(t in text for t in _FULL_TEXT)


def _message(what: str, where: Path, needed: int | None, free: int) -> str:
    need = f"it needs about {mb(needed + margin(needed))}, " if needed else ""
    return (f"no space left on the disk of {where} while writing {what} ({need}{mb(free)} free); free some space or "
            f"quota there (or put run_dir= on another disk), then re-run the same command to resume")


def check_free_space(where: str | Path, needed: int, what: str) -> None:
    """Raise DiskFullError when less than ``needed`` + a margin is free at ``where`` (no-op for needed <= 0)."""
    if needed <= 0:
        return
    free = free_bytes(where)
    if free < needed + margin(needed):
        raise DiskFullError(_message(what, Path(where), needed, free))


def _remove_new_files(dirs: Sequence[Path], since: float) -> None:
    for d in dirs:
        if not d.is_dir():
            continue
        for f in d.rglob("*"):
            try:
                if f.is_file() and f.stat().st_mtime >= since:
                    f.unlink()
            except OSError:
                pass


@contextmanager
def disk_full_guard(what: str, where: str | Path, needed: int | None = None,
                    cleanup: Sequence[str | Path] = ()) -> Iterator[None]:
    """Turn ENOSPC / EDQUOT raised inside the block into one :class:`DiskFullError`.

    Args:
        what: What is being written ("a checkpoint", "the final video"), named in the message.
        where: The folder written into (its disk is named and measured).
        needed: Bytes the write needs, when known.
        cleanup: Folders whose files created or modified inside the block are deleted on a full disk (half-written
            videos); other errors leave them alone.
    """
    start = time.time() - 1.0  # mtime granularity
    try:
        yield
    except DiskFullError:
        raise
    except Exception as exc:
        if not is_disk_full(exc):
            raise
        _remove_new_files([Path(c) for c in cleanup], start)
        try:
            free = free_bytes(where)
        except OSError:
            free = 0
        raise DiskFullError(_message(what, Path(where), needed, free)) from exc


def fsync_dir(path: str | Path) -> None:
    """fsync a directory so a rename inside it is durable (ignored where the platform refuses)."""
    try:
        fd = os.open(str(path), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
