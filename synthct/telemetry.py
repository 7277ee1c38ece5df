"""Nothing written outside the output and the temp folder: third-party telemetry and caches turned off.

Measured with an empty ``HOME`` (``tests/test_faults.py``): importing ONNX Runtime 1.32 writes
``~/.cache/Microsoft/DeveloperTools/.onnxruntime/{deviceid,onnxruntime.db}`` (its 1DS telemetry; calling
``onnxruntime.disable_telemetry_events()`` after the import is too late for these files, the environment variable
``ORT_DISABLE_TELEMETRY=1`` read at import prevents them); importing OpenVINO writes ``~/intel/{stats,
openvino_ga_cid}`` (``openvino_telemetry``, initialised by ``openvino.tools.ovc`` at import, declines in CI:
:func:`import_openvino` sets ``CI=true`` for the import only); matplotlib writes its font cache under
``~/.cache/matplotlib`` (``MPLCONFIGDIR`` points it to a private folder in the system temp folder instead).

:func:`quiet_third_parties` runs when :mod:`synthct` is imported, so every entry point gets it before any of those
libraries is imported; a variable the user set is kept.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path
from typing import Any


def quiet_third_parties() -> None:
    """Set the environment that keeps ONNX Runtime and matplotlib from writing under ``$HOME``."""
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    if not os.environ.get("MPLCONFIGDIR"):
        folder = private_temp_folder("matplotlib")
        if folder is not None:
            os.environ["MPLCONFIGDIR"] = str(folder)


def private_temp_folder(name: str) -> Path | None:
    """``<system temp>/synthct-<uid>/<name>``, created 0700 and checked to be ours (not a symlink, our uid, no
    access for others); a fresh ``mkdtemp`` folder when that fails. None if the temp folder is unusable."""
    uid = os.getuid() if hasattr(os, "getuid") else 0
    base = Path(tempfile.gettempdir()) / f"synthct-{uid}"
    try:
        for folder in (base, base / name):
            with contextlib.suppress(FileExistsError):
                folder.mkdir(mode=0o700)
            info = folder.lstat()
            if (not stat.S_ISDIR(info.st_mode) or info.st_uid != uid or info.st_mode & 0o077):
                raise PermissionError(f"{folder}: not a private folder of uid {uid}")
        return base / name
    except OSError:
        try:
            return Path(tempfile.mkdtemp(prefix=f"synthct-{name}-"))
        except OSError:
            return None


def import_openvino() -> Any:
    """``import openvino`` with its usage telemetry declined (no ``~/intel`` files): ``CI=true`` during the import,
    the opt-out ``openvino_telemetry`` honours for OpenVINO's own tools; the previous value is restored."""
    previous = os.environ.get("CI")
    os.environ["CI"] = "true"
    try:
        import openvino
    finally:
        if previous is None:
            os.environ.pop("CI", None)
        else:
            os.environ["CI"] = previous
    return openvino
