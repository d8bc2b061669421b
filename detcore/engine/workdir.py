"""One run per work dir: the lock a live run holds, the refusal to start a
new run over a finished or interrupted one, and the clean-up of temporary
files that killed checkpoint writes left behind.

Rank 0 of a run calls :func:`claim` before it writes anything. The work dir
then holds ``.detcore.lock`` (an ``flock`` on it, and the holder's pid, host
and command inside) until the run ends; the kernel drops the lock when the
process dies, however it dies, so a lock left by a killed run never blocks
the next one. Where ``flock`` is not available the file alone is the lock,
and a holder on this host whose pid is gone counts as stale.
"""

from __future__ import annotations

import errno
import json
import os
import re
import socket
import sys
import time
from pathlib import Path

import attrs

from detcore.errors import DetcoreError

__all__ = ["LOCK_NAME", "Claim", "WorkDirError", "WorkDirLock", "claim", "previous_run", "remove_stale_temp_files", "take"]

LOCK_NAME = ".detcore.lock"
# atomic_save's temporary files: ``.iter_8.pth.tmp<pid>``, ``.latest.json.tmp<pid>``.
_TEMP = re.compile(r"\.(?P<name>.+)\.tmp(?P<pid>\d+)")
# A run that trained: its checkpoints and logged iterations. (A run that
# failed during setup leaves only resolved.toml, env.json and its log: a new
# run may replace the first two.)
_RUN_FILES = re.compile(r"latest\.json|scalars\.jsonl|(epoch|iter)_\d+\.pth|best_.+\.pth")


class WorkDirError(DetcoreError):
    """The work dir is used by a live run, or holds a run that a new one
    would overwrite."""

    exit_code = 1


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    except OSError:  # pragma: no cover - e.g. Windows without that pid
        return False
    return True


class WorkDirLock:
    """An exclusive lock on ``work_dir`` for one live run (see the module
    docstring). :meth:`acquire` raises :class:`WorkDirError` naming the
    holder's pid and host; :meth:`release` removes the lock file."""

    def __init__(self, work_dir: str | Path):
        self.work_dir = Path(work_dir)
        self.path = self.work_dir / LOCK_NAME
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def holder(self) -> dict:
        """What the lock file says about its holder (``{}`` if unreadable)."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8") or "{}")
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def acquire(self) -> None:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            fcntl = None
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            if fcntl is None:
                os.close(fd)
                return self._acquire_by_pid()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                self._busy(self._wait_for_holder())
            except OSError as exc:
                os.close(fd)
                if exc.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                    return self._acquire_by_pid()  # a file system without flock
                raise
            # The previous holder may have removed the file between our open
            # and flock: then we hold a lock on a file nobody else sees.
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        self._fd = fd
        self._write_holder()

    def _acquire_by_pid(self) -> None:
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                holder = self.holder()
                if holder.get("host") == socket.gethostname() and not _pid_alive(int(holder.get("pid", -1))):
                    self.path.unlink(missing_ok=True)  # stale: its run is gone
                    continue
                self._busy(holder, stale_hint=True)
            self._fd = fd
            self._write_holder()
            return

    def _wait_for_holder(self) -> dict:
        # A run that has just taken the lock writes its details a moment later.
        for _ in range(20):
            holder = self.holder()
            if holder.get("pid"):
                return holder
            time.sleep(0.05)
        return {}

    def _busy(self, holder: dict, *, stale_hint: bool = False) -> None:
        who = f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}"
        since = f", started {holder['started']}" if holder.get("started") else ""
        command = f" ({holder['command']})" if holder.get("command") else ""
        hint = (
            f" If no run is using it (the host has no such process), delete {self.path}."
            if stale_hint
            else " Wait for it to finish, stop it, or give this run another work dir (--work-dir DIR)."
        )
        raise WorkDirError(f"work dir {self.work_dir} is in use by another detcore run: {who}{since}{command}.{hint}")

    def _write_holder(self) -> None:
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": " ".join(["detcore", *sys.argv[1:]])[:300],
        }
        os.ftruncate(self._fd, 0)
        os.write(self._fd, json.dumps(info).encode())

    def release(self) -> None:
        if self._fd is None:
            return
        # Remove the file while still holding the lock, so no one locks it
        # between our unlink and close (acquire re-checks the inode).
        self.path.unlink(missing_ok=True)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> WorkDirLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def previous_run(work_dir: str | Path) -> str | None:
    """A description of the run that trained in ``work_dir`` (checkpoints
    or logged iterations), or ``None`` when there is none."""
    work_dir = Path(work_dir)
    if not work_dir.is_dir():
        return None
    found = sorted(p for p in work_dir.iterdir() if p.is_file() and _RUN_FILES.fullmatch(p.name))
    found = [p for p in found if not (p.name == "scalars.jsonl" and p.stat().st_size == 0)]
    if not found:
        return None
    newest = max(found, key=lambda p: p.stat().st_mtime)
    checkpoints = [p.name for p in found if p.suffix == ".pth"]
    try:
        latest = json.loads((work_dir / "latest.json").read_text()).get("checkpoint")
    except (OSError, ValueError, AttributeError):
        latest = None
    if checkpoints:
        newest_ckpt = latest if latest in checkpoints else max(checkpoints, key=lambda n: (work_dir / n).stat().st_mtime)
        what = f"{len(checkpoints)} checkpoint file(s), the newest {newest_ckpt}"
    else:
        what = ", ".join(p.name for p in found)
    return f"{what}; last written {time.strftime('%Y-%m-%d %H:%M', time.localtime(newest.stat().st_mtime))}"


def remove_stale_temp_files(work_dir: str | Path) -> list[Path]:
    """Remove the temporary files (``.iter_8.pth.tmp<pid>``) of checkpoint
    writes whose process is gone (killed mid-write); those of live processes
    stay. Called by the lock holder, so no write of this run is under way.
    Returns the removed paths."""
    removed = []
    work_dir = Path(work_dir)
    if not work_dir.is_dir():
        return removed
    for p in work_dir.iterdir():
        m = _TEMP.fullmatch(p.name)
        if not m or not p.is_file():
            continue
        pid = int(m.group("pid"))
        if pid == os.getpid() or not _pid_alive(pid):
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def claim(work_dir: str | Path, *, resume: str | None) -> tuple[WorkDirLock, list[Path]]:
    """Take ``work_dir`` for a run (rank 0, before writing anything): lock
    it, refuse when it holds a run that this one does not continue, and
    remove stale temporary files. ``resume`` is ``--resume``'s value: ``auto``
    or a checkpoint in ``work_dir`` continues the run there; a checkpoint
    from elsewhere, or none, starts another. Returns the held lock (release
    it when the run ends) and the removed files."""
    lock = WorkDirLock(work_dir)
    lock.acquire()
    try:
        found = None if _continues(work_dir, resume) else previous_run(work_dir)
        if found is not None:
            elsewhere = f" (resuming from {resume}, which is not in it)" if resume else ""
            raise WorkDirError(
                f"work dir {Path(work_dir)} already holds a run ({found}); a new run there{elsewhere} would "
                f"overwrite or rotate away its files. Continue that run with --resume auto, give the new run its "
                f"own folder with --work-dir DIR (or work_dir in the run file), or delete {Path(work_dir)} to "
                f"start over."
            )
        removed = remove_stale_temp_files(work_dir)
    except BaseException:
        lock.release()
        raise
    return lock, removed


def _continues(work_dir: str | Path, resume: str | None) -> bool:
    if not resume:
        return False
    if resume == "auto":
        return True
    try:
        return Path(resume).resolve().parent == Path(work_dir).resolve()
    except OSError:  # pragma: no cover
        return False


@attrs.frozen
class Claim:
    """What :func:`take` got: the lock (rank 0 only) and the stale temporary
    files it removed."""

    lock: WorkDirLock | None
    removed: tuple[Path, ...] = ()

    def release(self) -> None:
        if self.lock is not None:
            self.lock.release()

    def report(self, logger) -> None:
        for p in self.removed:
            logger.info("removed %s, left by a checkpoint write that was killed", p)


def take(work_dir: str | Path, *, resume: str | None, is_main: bool) -> Claim:
    """:func:`claim` on rank 0, called by every rank of a run: a refusal is
    raised on every rank, so none is left waiting for the others."""
    from detcore.engine import dist

    lock, removed, error = None, [], None
    if is_main:
        try:
            lock, removed = claim(work_dir, resume=resume)
        except WorkDirError as exc:
            error = str(exc)
    error = dist.broadcast_object(error)
    if error is not None:
        raise WorkDirError(error)
    return Claim(lock, tuple(removed))
