"""Checkpoints (BRIEF format): written atomically, read with ``torch.load(weights_only=True)``.

Only tensors and plain Python values are stored: numpy and ``random`` RNG states are converted to lists.
"""

from __future__ import annotations

import os
import platform
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from synthct.atomic import atomic_path

CHECKPOINT_FORMAT = "synthct-checkpoint"
CHECKPOINT_VERSION = 1
REQUIRED_KEYS = ("format", "format_version", "config", "generator", "discriminator", "optimizer_g", "optimizer_d",
                 "scaler", "epoch", "step", "rng", "metrics", "versions")


class CheckpointError(ValueError):
    """A checkpoint file is missing, unreadable or not a synthct checkpoint (the message names the file)."""


def versions() -> dict[str, str]:
    """Library versions a checkpoint was written with (MONAI matters: 1.5 changed SwinUNETR's layout)."""
    import monai

    import synthct

    return {"synthct": str(synthct.__version__), "torch": str(torch.__version__), "monai": str(monai.__version__),
            "numpy": str(np.__version__), "python": platform.python_version()}


def capture_rng() -> dict[str, Any]:
    """The process's torch, CUDA, numpy (legacy global) and ``random`` RNG states as tensors/lists."""
    numpy_state = np.random.get_state(legacy=True)
    if isinstance(numpy_state, dict):  # only for a non-MT19937 bit generator, which the global RNG never has
        raise ValueError(f"the global numpy RNG is not MT19937: {numpy_state.get('bit_generator')!r}")
    name, keys, pos, has_gauss, cached = numpy_state
    version, state, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else [],
        "numpy": {"name": str(name), "keys": [int(k) for k in keys], "pos": int(pos), "has_gauss": int(has_gauss),
                  "cached_gaussian": float(cached)},
        "python": {"version": int(version), "state": [int(s) for s in state], "gauss_next": gauss_next},
    }


def restore_rng(state: Mapping[str, Any]) -> None:
    """Inverse of :func:`capture_rng`."""
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(state["cuda"]))
    numpy_state = state["numpy"]
    np.random.set_state((numpy_state["name"], np.asarray(numpy_state["keys"], dtype=np.uint32),
                         numpy_state["pos"], numpy_state["has_gauss"], numpy_state["cached_gaussian"]))
    python_state = state["python"]
    random.setstate((python_state["version"], tuple(python_state["state"]), python_state["gauss_next"]))


def save_checkpoint(path: str | os.PathLike[str], checkpoint: Mapping[str, Any]) -> Path:
    """``torch.save`` to a temporary file beside ``path``, then rename: readers never see half a file."""
    missing = [key for key in REQUIRED_KEYS if key not in checkpoint]
    if missing:
        raise CheckpointError(f"{path}: checkpoint lacks {missing}")
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(dict(checkpoint), tmp)
    return path


def load_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True`` and check its format. Raises :class:`CheckpointError`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt/unsafe files
        raise CheckpointError(f"{path}: cannot read the checkpoint ({type(exc).__name__}: {exc})") from exc
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not a synthct checkpoint (format {CHECKPOINT_FORMAT!r} expected)")
    if checkpoint.get("format_version") != CHECKPOINT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format_version {checkpoint.get('format_version')!r} is not "
                              f"supported (expected {CHECKPOINT_VERSION})")
    missing = [key for key in REQUIRED_KEYS if key not in checkpoint]
    if missing:
        raise CheckpointError(f"{path}: checkpoint lacks {missing}")
    return checkpoint


def checkpoint_architecture(checkpoint: Mapping[str, Any]) -> str:
    """The generator architecture a checkpoint holds: its config's ``model.architecture`` (swinunetr for checkpoints
    from before the choice existed)."""
    from synthct.train.models import DEFAULT_ARCHITECTURE

    config = checkpoint.get("config") or {}
    model = config.get("model") if isinstance(config, Mapping) else None
    return str((model or {}).get("architecture") or DEFAULT_ARCHITECTURE)


def require_architecture(checkpoint: Mapping[str, Any], model_config: Mapping[str, Any],
                         where: str | os.PathLike[str]) -> None:
    """Raise :class:`CheckpointError` naming both architectures when the checkpoint's generator (its recorded
    architecture, or its weights' parameter names) is not the one ``model_config`` builds."""
    from synthct.train.models import ArchitectureError, architecture_of, check_generator_state

    try:
        expected = architecture_of(model_config)
    except ArchitectureError as exc:
        raise CheckpointError(f"{where}: {exc}") from exc
    found = checkpoint_architecture(checkpoint)
    if found != expected:
        raise CheckpointError(f"{where}: the checkpoint holds a {found!r} generator but this run builds a {expected!r} "
                              f"one (model.architecture); a {found} checkpoint cannot be loaded into a {expected} "
                              f"network: keep model.architecture: {found}, or start a new run")
    state = checkpoint.get("generator")
    if isinstance(state, Mapping):
        try:
            check_generator_state(state, model_config, str(where))
        except ArchitectureError as exc:
            raise CheckpointError(str(exc)) from exc
