"""Atomic file writes: write to a temporary file beside the target, then rename.

A reader never sees a half-written file, and a crash leaves the previous version in place. Every temporary the
project writes (files here, DICOM series folders in :mod:`synthct.dicom.folder`, export staging folders) is named
``.synthct-tmp-<target name>.<random><suffix>``: hidden, and recognisable as ours by :data:`TEMP_PREFIX`, so that
readers skip it (:func:`is_temporary`) and a later run removes the leftovers of a killed one
(:func:`synthct.outputs.remove_stale_temporaries`).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

TEMP_PREFIX = ".synthct-tmp-"
"""The name prefix of every temporary file or folder synthct writes beside its outputs."""


def temp_prefix(target_name: str) -> str:
    """``mkstemp``/``mkdtemp`` prefix for a temporary standing in for ``target_name``."""
    return f"{TEMP_PREFIX}{target_name}."


def is_temporary(name: str) -> bool:
    """True for the name of a synthct temporary (a write in progress, or the leftover of a killed one)."""
    return name.startswith(TEMP_PREFIX)


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str], suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; rename it onto ``target`` if the block succeeds.

    ``suffix`` defaults to the target's own suffix(es) so that writers choosing a format by extension
    (SimpleITK, torch) still work.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    if suffix is None:
        suffix = "".join(target.suffixes) or ".tmp"
    fd, tmp_name = tempfile.mkstemp(prefix=temp_prefix(target.name), suffix=suffix, dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if tmp.is_file():  # mkstemp creates 0600; give the file the permissions a plain open() would
            os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def write_bytes_atomic(target: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``target`` atomically."""
    with atomic_path(target) as tmp, open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def write_text_atomic(target: str | os.PathLike[str], text: str) -> None:
    """Write UTF-8 ``text`` to ``target`` atomically."""
    write_bytes_atomic(target, text.encode("utf-8"))


def write_json_atomic(target: str | os.PathLike[str], payload: Any) -> None:
    """Write ``payload`` as strict JSON (no NaN/Infinity: they raise) to ``target`` atomically."""
    write_text_atomic(target, json.dumps(payload, indent=2, allow_nan=False) + "\n")
