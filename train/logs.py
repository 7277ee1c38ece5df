"""Run logs (rank 0 only): ``log.jsonl`` (one JSON object per line), per-validation JSON files, TensorBoard."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from synthct.atomic import write_json_atomic


def _finite_or_none(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class RunLog:
    """Appends records to ``<run>/log.jsonl`` and mirrors scalars (and images) to TensorBoard when enabled."""

    def __init__(self, run_dir: Path, tensorboard: bool) -> None:
        self.run_dir = run_dir
        self.path = run_dir / "log.jsonl"
        self.writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=os.fspath(run_dir / "tensorboard"))

    def record(self, kind: str, step: int, values: dict[str, Any]) -> None:
        """One line ``{"kind", "step", **values}`` in log.jsonl (non-finite floats written as null)."""
        line = {"kind": kind, "step": int(step), **{k: _finite_or_none(v) for k, v in values.items()}}
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(line, allow_nan=False) + "\n")

    def scalars(self, prefix: str, step: int, values: dict[str, float]) -> None:
        if self.writer is None:
            return
        for key, value in values.items():
            if isinstance(value, int | float) and math.isfinite(float(value)):
                self.writer.add_scalar(f"{prefix}/{key}", float(value), step)

    def image(self, tag: str, step: int, image_chw: np.ndarray) -> None:
        if self.writer is not None:
            self.writer.add_image(tag, image_chw, step, dataformats="CHW")

    def validation_file(self, step: int, payload: dict[str, Any], suffix: str = "") -> Path:
        """Write ``<run>/validation/step_XXXXXXXX<suffix>.json`` atomically (strict JSON)."""
        path = self.run_dir / "validation" / f"step_{step:08d}{suffix}.json"
        write_json_atomic(path, payload)
        return path

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
