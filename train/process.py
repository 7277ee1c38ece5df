"""Process settings of a training run: the C allocator and heap trim, the locale torch.compile needs, seeding,
peak RSS, and SIGINT/SIGTERM turned into a stop request."""

from __future__ import annotations

import contextlib
import ctypes
import locale
import logging
import os
import random
import signal
import sys
from typing import Any

import numpy as np
import torch

log = logging.getLogger("synthct.train")


def restore_utf8_ctype() -> None:
    """Give the process a UTF-8 ``LC_CTYPE`` again if a C library (ITK does) reset it to ``C``.

    TorchInductor reads its kernel templates with the locale's encoding; under ``C`` that is ASCII and compiling
    fails on their non-ASCII characters. Tried in order: the environment's locale, ``C.UTF-8``.
    """
    if locale.getpreferredencoding(False).lower().replace("-", "") == "utf8":
        return
    for name in ("", "C.UTF-8"):
        try:
            locale.setlocale(locale.LC_CTYPE, name)
        except locale.Error:
            continue
        if locale.getpreferredencoding(False).lower().replace("-", "") == "utf8":
            log.debug("LC_CTYPE set to %r for torch.compile", locale.setlocale(locale.LC_CTYPE))
            return


def tune_cpu_allocator() -> bool:
    """Keep freed memory in glibc's heap instead of returning it to the OS after every step (Linux/glibc only).

    Training allocates and frees tens of MB per activation; with glibc's defaults each such block is a fresh
    ``mmap`` whose pages fault in again on every step, which on CPU costs ~30 % of a step in kernel time. Raising
    the mmap and trim thresholds (and padding heap growth) removes most of it. The environment variable
    ``GLIBC_TUNABLES=glibc.malloc.mmap_threshold=4294967296:glibc.malloc.trim_threshold=68719476736`` (set before
    the process starts) goes further, as ``mallopt`` caps the mmap threshold at 32 MiB. Returns True if applied.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    settings = (  # (mallopt parameter, value, tunable name, legacy environment variable)
        (-3, 32 * 1024 * 1024, "mmap_threshold", "MALLOC_MMAP_THRESHOLD_"),
        (-1, 2**31 - 1, "trim_threshold", "MALLOC_TRIM_THRESHOLD_"),
        (-2, 256 * 1024 * 1024, "top_pad", "MALLOC_TOP_PAD_"),
    )
    applied = False
    for parameter, value, tunable, variable in settings:
        if f"glibc.malloc.{tunable}" in tunables or variable in os.environ:
            continue  # the user's setting wins
        applied |= libc.mallopt(parameter, value) == 1
    return applied


def trim_heap() -> bool:
    """Return the C heap's free memory to the OS (glibc ``malloc_trim``; Linux only). Called before validation:
    :func:`tune_cpu_allocator` keeps freed training memory in the heap, and validation's large arrays would
    otherwise add to it. Returns True if memory was released."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        return bool(ctypes.CDLL("libc.so.6").malloc_trim(0))
    except (OSError, AttributeError):
        return False


def peak_rss_mb() -> float:
    """This process's peak resident set (MB, memory-mapped pages included); 0 where ``resource`` is missing."""
    try:
        import resource
    except ImportError:  # not POSIX
        return 0.0
    scale = 1.0 if sys.platform == "darwin" else 1024.0  # bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class StopSignals:
    """SIGINT/SIGTERM → stop after the current step (a second SIGINT interrupts at once)."""

    def __init__(self) -> None:
        self.received: str | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError):  # not the main thread: leave signals alone
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum: int, _frame: Any) -> None:
        name = signal.Signals(signum).name
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = name
        log.warning("%s received: stopping after the current step and saving a checkpoint", name)

    def __exit__(self, *_exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
