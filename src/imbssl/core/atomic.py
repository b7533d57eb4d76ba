"""Atomic file writes: a finished result is either complete on disk or absent, never half-written.

Every writer of the package goes through `atomic_path`, so it is also the one place that tells a
full disk (or an exhausted quota) from any other failed write: the job stops with one line naming
the file, its file system, what is free there and the fix, instead of the writer's own error
(torch.save into a full file system raises `RuntimeError: [enforce fail at inline_container.cc]
... unexpected pos`, with no errno). Nothing here imports torch: the reporting side writes through
this module too.
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
import traceback
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from imbssl import UserError

# A failed write that leaves less than this free on its file system ran out of space: a writer
# that hits the end of a disk has filled it up to its last blocks.
FULL_BELOW_BYTES = 1 << 20
OUT_OF_SPACE = (errno.ENOSPC, errno.EDQUOT)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds.

    A block that fails for lack of space (ENOSPC, EDQUOT, or any OSError/RuntimeError that leaves
    the file system full) raises a one-line UserError instead, once the temporary file is gone.
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; results follow the umask like any file
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException as err:
        # Measured before the partial file is removed: it holds the space the write used up.
        full = disk_full_error(err, path)
        if full is not None:
            # The failed writer's frames may hold its file open (torch.save's does): an unlinked
            # file keeps its blocks until closed, and the job's log may be on the same disk.
            _release_frames(err)
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        if full is not None:
            raise full from err
        raise


def disk_full_error(err: BaseException, path: Path) -> UserError | None:
    """The one-line error for a write of `path` that failed for lack of space, else None."""
    if not isinstance(err, (OSError, RuntimeError)):
        return None
    code = _errno_in_chain(err)
    if code == errno.EDQUOT:
        return UserError(f"disk quota exceeded writing {path} (file system {mount_point(path)}): free space in "
                         f"your quota there (`quota -s` shows it) or write results/ elsewhere, then rerun the same "
                         f"command")
    free, total = disk_space(path.parent)
    if code == errno.ENOSPC or (code is None and free < FULL_BELOW_BYTES):
        return UserError(f"no space left writing {path}: its file system {mount_point(path)} has "
                         f"{human_bytes(free)} free of {human_bytes(total)}; free space there (or put results/ "
                         f"on a larger disk), then rerun the same command: finished jobs are kept")
    return None


def _chain(err: BaseException | None) -> Iterator[BaseException]:
    """`err` and the exceptions it was raised from or during."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        yield err
        err = err.__cause__ or err.__context__


def _release_frames(err: BaseException) -> None:
    for each in _chain(err):
        traceback.clear_frames(each.__traceback__)


def _errno_in_chain(err: BaseException) -> int | None:
    """The out-of-space errno of `err` or of an exception it was raised from, if any."""
    return next((each.errno for each in _chain(err) if isinstance(each, OSError) and each.errno in OUT_OF_SPACE),
                None)


def disk_space(directory: str | os.PathLike) -> tuple[int, int]:
    """(bytes this process may still write, size) of the file system holding `directory`
    (root may use the blocks reserved for it)."""
    stat = os.statvfs(_existing(Path(directory)))
    blocks = stat.f_bfree if os.geteuid() == 0 else stat.f_bavail
    return blocks * stat.f_frsize, stat.f_blocks * stat.f_frsize


def mount_point(path: str | os.PathLike) -> Path:
    """The mount point of the file system `path` is on (the folder a user frees space in)."""
    path = _existing(Path(os.path.abspath(path)))
    while not os.path.ismount(path) and path != path.parent:
        path = path.parent
    return path


def _existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def human_bytes(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if count < 1024 or unit == "TiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("not reached")


def require_free_space(directory: str | os.PathLike, needed: int, what: str, setting: str) -> None:
    """Stop before writing `needed` bytes of `what` into `directory` when its file system has less
    free; `setting` names what makes them smaller."""
    free, _ = disk_space(directory)
    if needed > free:
        raise UserError(f"{what} needs {human_bytes(needed)} ({needed} bytes) under {directory} but its file "
                        f"system {mount_point(directory)} has {human_bytes(free)} ({free} bytes) free: free space "
                        f"there, put results/ on a larger disk or lower {setting}, then rerun")


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")
