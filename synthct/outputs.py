"""Output folders: checked before any work, locked while a command writes, cleaned of stale temporaries.

Every command that writes results (``synthct predict``, the algorithm job, ``synthct evaluate``, the evaluation job)
opens an :func:`output_session` on its output folders first:

1. **Check** (:func:`check_output_folder`): each folder exists or can be created, is a folder, and is writable (a
   temporary file is created and removed). Otherwise :class:`OutputError` with one message naming the folder and
   the reason; the command exits with status 2 before reading a single image.
2. **Lock**: an exclusive ``flock`` on ``<folder>/.synthct-lock`` (pid, command and start time inside) for the whole
   run; the file is removed at the end. A second synthct command writing into the same folder while the first
   runs is refused with a message naming the first (:class:`OutputError`, exit 2): two concurrent runs would
   interleave ``results.json``. Sequential runs merge their ``results.json`` and QA index per case instead.
3. **Clean**: holding the lock, every ``.synthct-tmp-*`` entry directly in the command's output folders is the
   leftover of a killed run (a running writer would hold the lock), so it is removed, with a log note. Only names
   with synthct's prefix are touched (never followed if a symlink). Where the file system offers no ``flock``
   (some network mounts) the run goes on unlocked, with a warning, and only temporaries older than
   :data:`STALE_AFTER_S` are removed.

An unexpected exception (a bug, not a bad input) is summarised in one log line; its traceback goes to
``<first folder>/synthct-errors.log`` (the system temp folder when that is not writable): :func:`report_unexpected`.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import tempfile
import time
import traceback
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from synthct.atomic import TEMP_PREFIX, is_temporary

log = logging.getLogger(__name__)

LOCK_NAME = ".synthct-lock"
ERROR_LOG_NAME = "synthct-errors.log"
STALE_AFTER_S = 3600.0
"""Without a lock (no ``flock`` on the file system) a temporary counts as stale only after an hour untouched."""


class OutputError(OSError):
    """An output location cannot be used (not a folder, not creatable, not writable, or in use by another run)."""


def check_output_folder(folder: Path, what: str = "output folder", create: bool = True) -> Path:
    """Make sure ``folder`` is (or can be made) a writable folder; raises :class:`OutputError` naming it.

    ``create`` False: a missing folder is accepted when its nearest existing parent is a writable folder (it is
    created later, by the write). Returns ``folder``.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{what} {folder}: exists and is not a folder")
    if not folder.exists():
        if not create:
            parent = folder.parent
            while not parent.exists() and parent != parent.parent:
                parent = parent.parent
            check_output_folder(parent, f"{what} {folder}: its parent", create=False)
            return folder
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"{what} {folder}: cannot be created ({_reason(exc)})") from exc
    try:
        fd, probe = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}probe.", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OutputError(f"{what} {folder}: not writable ({_reason(exc)})") from exc
    return folder


def check_output_file(path: Path, what: str = "output file") -> Path:
    """``path`` can be written: not an existing folder, and its folder is (or can be made) writable."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{what} {path}: is a folder (give a file name, e.g. {path / 'metrics.json'})")
    check_output_folder(path.parent if str(path.parent) else Path("."), f"{what} {path}: its folder")
    return path


def _reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def remove_stale_temporaries(folders: Sequence[Path], min_age_s: float = 0.0) -> list[Path]:
    """Remove synthct temporaries (``.synthct-tmp-*``) directly in ``folders``; returns what was removed.

    Only entries with synthct's prefix, untouched for ``min_age_s`` seconds, are removed; a symlink is unlinked,
    never followed; a folder is removed with its content. Each removal is logged.
    """
    removed = []
    now = time.time()
    for folder in dict.fromkeys(Path(f) for f in folders):
        if not folder.is_dir() or folder.is_symlink():
            continue
        for entry in sorted(folder.iterdir()):
            if not is_temporary(entry.name):
                continue
            try:
                info = entry.lstat()
                if now - info.st_mtime < min_age_s:
                    continue
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
            except FileNotFoundError:
                continue
            except OSError as exc:
                log.warning("%s: leftover temporary not removed (%s)", entry, _reason(exc))
                continue
            log.info("removed %s: the temporary of an interrupted earlier write", entry)
            removed.append(entry)
    return removed


@dataclass
class OutputSession:
    """What :func:`output_session` set up: the folders, whether they are locked, the error log's place."""

    folders: list[Path]
    command: str
    locked: bool = False
    removed: list[Path] = field(default_factory=list)

    @property
    def error_log(self) -> Path:
        return self.folders[0] / ERROR_LOG_NAME


_current: list[OutputSession] = []


@contextlib.contextmanager
def output_session(folders: Sequence[Path], command: str, clean: Sequence[Path] | None = None,
                   create: Sequence[Path] = ()) -> Iterator[OutputSession]:
    """Check, lock and clean the output ``folders`` of ``command`` (see the module docstring).

    ``folders[0]`` is created when missing; the others must be folders where they exist (``create``: also made).
    ``clean``: the folders whose stale temporaries are removed (default ``folders``). Raises
    :class:`OutputError` before anything is written when a folder is unusable or another run holds its lock.
    """
    folders = [Path(f) for f in folders]
    for index, folder in enumerate(folders):
        check_output_folder(folder, create=index == 0 or folder in create)
    session = OutputSession(folders, command)
    with contextlib.ExitStack() as stack:
        absolute = {folder: Path(os.path.abspath(folder)) for folder in folders}
        roots = [f for f in dict.fromkeys(folders) if f.is_dir()
                 and not any(absolute[o] in absolute[f].parents for o in folders)]  # a sub-folder: locked with it
        locks = [stack.enter_context(_folder_lock(folder, command)) for folder in roots]
        session.locked = all(locks)
        if not session.locked:
            log.warning("%s: the file system offers no lock; a concurrent run into the same folder would not be "
                        "noticed, and only temporaries older than %g min are cleaned", folders[0],
                        STALE_AFTER_S / 60)
        session.removed = remove_stale_temporaries(clean if clean is not None else folders,
                                                   0.0 if session.locked else STALE_AFTER_S)
        _current.append(session)
        try:
            yield session
        finally:
            _current.remove(session)


@contextlib.contextmanager
def _folder_lock(folder: Path, command: str) -> Iterator[bool]:
    """Hold an exclusive lock on ``folder/.synthct-lock`` (True), or yield False where flock is unsupported."""
    import fcntl

    path = folder / LOCK_NAME
    for _ in range(10):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
        except OSError as exc:
            raise OutputError(f"output folder {folder}: cannot create its lock file {path} ({_reason(exc)})") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise OutputError(f"output folder {folder}: another synthct run is writing into it ({holder}); wait "
                              "for it to finish or choose another output folder") from None
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                yield False
                return
            raise OutputError(f"output folder {folder}: cannot lock {path} ({_reason(exc)})") from exc
        try:  # the file may have been removed by the previous holder between our open and our flock: retry
            same = os.fstat(fd).st_ino == os.stat(path, follow_symlinks=False).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    else:
        raise OutputError(f"output folder {folder}: its lock file {path} keeps changing; is another run starting?")
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()}, synthct {command}, since {time.strftime('%Y-%m-%d %H:%M:%S')}\n"
                 .encode())
        yield True
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)
        os.close(fd)


def _read_holder(fd: int) -> str:
    with contextlib.suppress(OSError):
        text = os.pread(fd, 200, 0).decode("utf-8", "replace").strip()
        if text:
            return text
    return "holder unknown"


def report_unexpected(logger: logging.Logger, exc: BaseException, what: str) -> Path | None:
    """Log ``exc`` (a bug, not a bad input) in one line; its traceback goes to the current session's error log.

    Without a session (or when its folder is not writable) the traceback goes to a file in the system temp
    folder. Returns the file holding the traceback (None if none could be written).
    """
    text = (f"{time.strftime('%Y-%m-%d %H:%M:%S')} pid {os.getpid()}: {what}\n"
            + "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)) + "\n")
    candidates = [_current[-1].error_log] if _current else []
    candidates.append(Path(tempfile.gettempdir()) / f"synthct-errors-{os.getpid()}.log")
    written = None
    for path in candidates:
        try:
            with open(path, "a", encoding="utf-8") as handle:
                handle.write(text)
            written = path
            break
        except OSError:
            continue
    logger.error("%s: unexpected error %s: %s (%s)", what, type(exc).__name__, exc,
                 f"traceback in {written}" if written else "no traceback file could be written")
    return written


def is_expected_failure(exc: BaseException) -> bool:
    """True for the failures of a bad input or environment (their message says it all): ValueError (ImageError,
    ModelPackageError, RegionError, …), OSError, and SimpleITK's reading errors; False for a bug."""
    return isinstance(exc, ValueError | OSError)
