"""The pytest process never forks a copy of itself (not collected: no ``test_`` prefix; used by conftest.py).

One process runs the whole suite, so by the time a test starts, earlier tests may have loaded native runtimes that
keep their own thread pools (OpenVINO's TBB, ONNX Runtime's, torch's OpenMP, ITK's). ``fork()`` copies only the
calling thread: a child that goes on running Python inherits those pools' locks and heap state mid-operation, the
classic cause of deadlocks and heap corruption (this suite once crashed in malloc after OpenVINO, then DataLoader
workers, then a ``subprocess.run``; a crash of that shape was later traced to OpenVINO plugins leaving a dangling
alternate signal stack, see ``algorithm/backends.py`` ``openvino_core``). So:

* :func:`install` makes ``forkserver`` the default multiprocessing start method of the pytest process: pools and
  processes of code under test (``ProcessPoolExecutor`` without ``mp_context``, for one) start from a clean server
  process. ``subprocess`` is unaffected (fork + exec at once, no Python in between).
* Any remaining plain fork of the pytest process (``os.fork``, a ``fork`` multiprocessing context) is recorded by an
  ``os.register_at_fork`` hook; conftest.py fails the test that made it.
"""

from __future__ import annotations

import multiprocessing
import os
import sys

START_METHOD = "forkserver"
NATIVE_RUNTIMES = ("openvino", "onnxruntime", "torch", "SimpleITK", "numba")
"""Modules named in the failure message when loaded at the time of the fork."""

_forks: list[str] = []
_pytest_pid: list[int] = []


def install() -> None:
    """Forkserver as the default start method and the fork hook, in the pytest process (idempotent)."""
    multiprocessing.set_start_method(START_METHOD, force=True)
    if not _pytest_pid:
        os.register_at_fork(before=_before_fork)
        _pytest_pid.append(os.getpid())


def _before_fork() -> None:
    if os.getpid() != _pytest_pid[0]:  # a child of a child forking: not the pytest process
        return
    loaded = [name for name in NATIVE_RUNTIMES if name in sys.modules]
    _forks.append(", ".join(loaded) or "none of " + ", ".join(NATIVE_RUNTIMES))


def take_forks() -> list[str]:
    """The forks of the pytest process since the last call (each: the native runtimes loaded then)."""
    taken = list(_forks)
    _forks.clear()
    return taken


def fork_failure(forks: list[str]) -> str:
    """The message of a test that forked the pytest process."""
    return (f"this test forked the pytest process {len(forks)} time(s) (native runtimes loaded: {forks[0]}); a forked "
            f"copy inherits their thread pools mid-operation. Start child processes with subprocess, or a "
            f"'{START_METHOD}'/'spawn' multiprocessing context (see tests/fork_guard.py).")
