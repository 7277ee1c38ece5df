"""Shared helpers of the trainer tests (no tests here; not collected): a tiny on-disk dataset, a tiny config, a
fake clock, child-process settings."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
import yaml

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
HANG_GUARD_S = 1800
"""Timeout of a child process in these tests: a guard against a hang, not a speed requirement (a machine busy with
other work may take many times a quiet one's time)."""


class FakeClock:
    """A clock for ``Trainer(clock=...)`` that moves only when told to (:meth:`advance`): time budgets become
    deterministic, whatever the machine's speed."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def write_tiny_dataset(root: Path, n_cases: int = 3, shape: tuple[int, int, int] = (40, 56, 52)) -> Path:
    """``root/Task1/brain/1BA00N/{mr,ct,mask}.mha``: an ellipsoid head (skull shell, brain, a dark air cell).

    Volumes are smaller than a 64³ patch on purpose (the trainer pads them). Returns ``root``.
    """
    for index in range(n_cases):
        rng = np.random.default_rng(index)
        z, y, x = np.indices(shape, dtype=np.float32)
        centre = [(n - 1) / 2 + rng.uniform(-2, 2) for n in shape]
        r = np.sqrt(sum(((c - m) / (0.45 * n)) ** 2 for c, m, n in zip((z, y, x), centre, shape, strict=True)))
        mask = (r < 1.0).astype(np.uint8)
        skull = (r >= 0.8) & (r < 1.0)
        ct = np.where(mask > 0, 35.0 + rng.normal(0, 10, shape), -1000.0)
        ct[skull] = 1100.0
        mr = np.where(mask > 0, 600.0 + rng.normal(0, 20, shape), 0.0)
        mr[skull] = 80.0
        folder = root / "Task1" / "brain" / f"1BA{index + 1:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        for name, array in (("mr", mr.astype(np.float32)), ("ct", ct.astype(np.int16)), ("mask", mask)):
            image = sitk.GetImageFromArray(array)
            image.SetSpacing((1.0, 1.0, 1.0))
            sitk.WriteImage(image, str(folder / f"{name}.mha"))
    return root


def tiny_config(**sections: dict[str, Any]) -> dict[str, Any]:
    """configs/tiny.yaml (feature_size 12, depths 1, 64³, batch 1) with ``sections`` merged in, progress off."""
    config = yaml.safe_load((REPO / "configs" / "tiny.yaml").read_text(encoding="utf-8"))
    config.setdefault("logging", {}).update({"progress": False, "tensorboard": False})
    config["data"]["augment"]["enabled"] = False
    for name, values in sections.items():
        config.setdefault(name, {}).update(values)
    return config


def write_config(path: Path, config: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def subprocess_env() -> dict[str, str]:
    """Environment for child processes: one torch thread each (the machine has 2 cores), repo importable."""
    env = dict(os.environ)
    env.update({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"})
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env
