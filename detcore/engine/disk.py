"""A full disk while the run writes its files (checkpoints, ``latest.json``,
``scalars.jsonl``): one :class:`DiskFullError` naming the file, the space it
needed when known and the free space, instead of torch's chained traceback.

The runner adds which checkpoint is still intact (checkpoints are written to
a temporary file and renamed, so a failed write never replaces one).
"""

from __future__ import annotations

import contextlib
import errno
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from detcore.errors import DetcoreError

# ENOSPC: the file system is full; EDQUOT: the user's quota is.
_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


class DiskFullError(DetcoreError):
    """No space left while writing ``path`` (``what``: how to call it)."""

    def __init__(self, path: str | Path, what: str, needed: int | None = None):
        self.path = Path(path)
        self.what = what
        self.needed = needed
        self.free = _free(self.path)
        self.intact: Path | None = None  # set by the runner: the newest complete checkpoint
        self.checked_intact = False
        self.resume_hint = ""
        super().__init__(self.path)

    def __str__(self) -> str:
        sizes = [f"it needs about {format_size(self.needed)}"] if self.needed else []
        if self.free is not None:
            sizes.append(f"{format_size(self.free)} free there")
        text = f"no space left on the device while writing {self.what} '{self.path}'"
        text += f" ({'; '.join(sizes)})." if sizes else "."
        if self.intact is not None:
            text += f" The previous checkpoint '{self.intact}' is intact (a checkpoint is replaced only once its successor is complete)."
        elif self.checked_intact:
            text += " No checkpoint had been written yet."
        text += " Free some space (or move work_dir to a larger disk, or lower checkpoint.keep)"
        if self.resume_hint:
            text += f", then resume: {self.resume_hint}"
        elif self.checked_intact and self.intact is None:
            text += ", then start the run again."
        else:
            text += " and resume with --resume auto."
        return text


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` or an exception it was raised from is ENOSPC/EDQUOT
    (torch.save reports a failed write as a RuntimeError whose context is
    the OSError)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in _FULL:
            return True
        exc = exc.__cause__ or exc.__context__
    return False


@contextlib.contextmanager
def writing(path: str | Path, what: str, needed: int | None = None) -> Iterator[None]:
    """Turn a full disk inside the block into :class:`DiskFullError`."""
    try:
        yield
    except DiskFullError:
        raise
    except (OSError, RuntimeError) as exc:
        if not is_disk_full(exc):
            raise
        raise DiskFullError(path, what, needed) from None


def nbytes(obj: Any) -> int:
    """Bytes of the tensors in ``obj`` (nested dicts, lists and tuples), each
    storage counted once: about what ``torch.save`` writes."""
    import torch

    seen: set = set()
    total = 0
    stack = [obj]
    while stack:
        item = stack.pop()
        if isinstance(item, torch.Tensor):
            storage = item.untyped_storage()
            key = (storage.data_ptr(), storage.nbytes())
            if key not in seen:
                seen.add(key)
                total += storage.nbytes()
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return total


def format_size(n: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"  # pragma: no cover


def _free(path: Path) -> int | None:
    for p in (path.parent, *path.parents):
        try:
            return shutil.disk_usage(p).free
        except OSError:
            continue
    return None
