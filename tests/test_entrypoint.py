"""The algorithm image's entry point without Docker: ``python -m synthct.algorithm`` dispatch and predict's model
default."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from synthct.algorithm.analytic import build_analytic_package, expected_hu
from train_helpers import HANG_GUARD_S

REPO = Path(__file__).resolve().parents[1]


def _algorithm(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {key: value for key, value in os.environ.items() if not key.startswith("SYNTHCT_")}
    return subprocess.run([sys.executable, "-m", "synthct.algorithm", *args], env={**environment, **env}, cwd=REPO,
                          capture_output=True, text=True, encoding="utf-8", timeout=HANG_GUARD_S, check=False)


def test_help_names_both_modes() -> None:
    done = _algorithm("--help")
    assert done.returncode == 0
    assert "predict ARGS" in done.stdout and "/input" in done.stdout and "--dicom-out" in done.stdout


def test_unknown_command_is_an_error_with_usage() -> None:
    done = _algorithm("evaluate")
    assert done.returncode == 2
    assert "unknown command 'evaluate'" in done.stderr and "usage:" in done.stderr


def test_predict_model_defaults_to_synthct_models_only_when_set(tmp_path: Path) -> None:
    words = " ".join(_algorithm("predict", "--help", SYNTHCT_MODELS="/opt/app/models").stdout.split())
    assert "(default: $SYNTHCT_MODELS = /opt/app/models)" in words
    done = _algorithm("predict", "--mr", str(tmp_path), "--mask", str(tmp_path), "--out", str(tmp_path / "out"))
    assert done.returncode == 2 and "--model" in done.stderr  # required without SYNTHCT_MODELS


def test_predict_mode_uses_the_installed_models(tmp_path: Path) -> None:
    build_analytic_package(tmp_path / "models" / "brain", "brain")
    rng = np.random.default_rng(0)
    mr = rng.uniform(0.0, 600.0, (20, 24, 28)).astype(np.float32)
    mask = np.zeros(mr.shape, np.uint8)
    mask[2:-2, 3:-3, 4:-4] = 1
    for array, name in ((mr, "mr"), (mask, "mask")):
        sitk.WriteImage(sitk.GetImageFromArray(array), str(tmp_path / f"{name}.mha"))
    out = tmp_path / "out"
    done = _algorithm("predict", "--mr", str(tmp_path / "mr.mha"), "--mask", str(tmp_path / "mask.mha"),
                      "--out", str(out), "--no-progress", SYNTHCT_MODELS=str(tmp_path / "models"))
    assert done.returncode == 0, done.stdout + done.stderr
    sct = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "mr.mha")))
    assert np.abs(sct.astype(np.int32) - expected_hu(mr, mask)).max() <= 1
