"""A normalised MR is padded with the case's normalised MR 0 (air), not -1, wherever the code pads it: the window
engine at inference (and the shifted test-time members) and the export's parity patches. (The cache and training
crops: tests/test_cache.py and tests/test_train_data.py.)"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from synthct.algorithm.analytic import build_analytic_package
from synthct.algorithm.backends import make_predictor
from synthct.algorithm.inference import TrustRequest, predict_case
from synthct.export.parity import data_patches
from train_helpers import write_tiny_dataset

from synthct.dataset import find_cases, load_case
from synthct.intensity import apply_mr_statistics, mr_statistics, normalised_background
from synthct.model_package import load_model_package
from synthct.sliding_window import padding

PATCH = (32, 32, 32)
KERNEL = np.full((3, 3, 3), 1.0 / 27.0, dtype=np.float32)
"""A box blur: the border voxels' output depends on the padding."""


def _head(shape: tuple[int, int, int] = (20, 24, 28)) -> tuple[sitk.Image, sitk.Image, np.ndarray, np.ndarray]:
    """An MR smaller than the patch on every axis: a textured body in air (MR 0), identity direction (LPS)."""
    rng = np.random.default_rng(5)
    mask = np.zeros(shape, np.uint8)
    mask[3:-3, 4:-4, 4:-4] = 1
    mr = np.where(mask > 0, rng.uniform(200.0, 800.0, shape), 0.0).astype(np.float32)
    mr_image = sitk.GetImageFromArray(mr)
    mask_image = sitk.GetImageFromArray(mask)
    mask_image.CopyInformation(mr_image)
    return mr_image, mask_image, mr, mask


def _expected_background(mr: np.ndarray, mask: np.ndarray, rule: str) -> float:
    background = normalised_background(mr_statistics(mr, mask, rule))  # type: ignore[arg-type]
    if rule == "zscore":
        inside = mr[mask > 0].astype(np.float64)
        assert background == pytest.approx(-inside.mean() / inside.std(), rel=1e-6) and background < -2.0
    else:
        assert background == -1.0
    return background


@pytest.mark.parametrize("rule", ["max", "zscore"])
def test_inference_pads_the_mr_with_its_normalised_zero(tmp_path: Path, rule: str) -> None:
    package = load_model_package(build_analytic_package(tmp_path / "brain", mr_rule=rule,  # type: ignore[arg-type]
                                                        patch_size=PATCH, kernel=KERNEL,
                                                        spacing_zyx_mm=(1.0, 1.0, 1.0)))
    onnx = make_predictor(package, "onnxruntime", "cpu", 1)
    seen: list[np.ndarray] = []

    def predictor(batch: np.ndarray) -> np.ndarray:
        seen.append(np.array(batch, copy=True))
        return onnx(batch)

    mr_image, mask_image, mr, mask = _head()
    background = _expected_background(mr, mask, rule)
    normalised = apply_mr_statistics(mr, mr_statistics(mr, mask, rule))  # type: ignore[arg-type]
    sct, _ = predict_case(mr_image, mask_image, package, predictor, batch_size=2, progress=False)
    assert len(seen) == 1 and seen[0].shape == (1, 1, *PATCH)  # one window: the MR padded to the patch
    window = seen[0][0, 0]
    inner = tuple(slice(before, before + n) for (before, _), n in zip(padding(mr.shape, PATCH), mr.shape,
                                                                         strict=True))
    np.testing.assert_array_equal(window[inner], normalised)
    border = np.ones(PATCH, dtype=bool)
    border[inner] = False
    assert np.all(window[border] == np.float32(background))  # the padding is the case's air, as trained
    assert sitk.GetArrayFromImage(sct).shape == mr.shape

    seen.clear()  # the shifted test-time members pad the MR too (synthct.trust.member_predict)
    predict_case(mr_image, mask_image, package, predictor, batch_size=2, progress=False,
                 trust=TrustRequest(uncertainty="shift", ood=False))
    inputs = np.concatenate(seen)
    assert np.all(np.isin(inputs, np.unique(normalised)))  # MR voxels or its air, nothing else
    assert np.count_nonzero(inputs == np.float32(background)) > inputs.size // 2


@pytest.mark.parametrize("rule", ["max", "zscore"])
def test_parity_patches_pad_the_mr_with_its_normalised_zero(tmp_path: Path, rule: str) -> None:
    data = write_tiny_dataset(tmp_path / "data", n_cases=1, shape=(40, 56, 52))
    volumes = load_case(find_cases(data, region="brain")[0])
    background = normalised_background(mr_statistics(volumes.mr, volumes.mask, rule))  # type: ignore[arg-type]
    assert background == -1.0 if rule == "max" else background < -1.2
    patches, masks, _ = data_patches((64, 64, 64), 2, "brain", rule, 99.5,  # type: ignore[arg-type]
                                     np.random.default_rng(0), data_dir=data)
    for patch in patches[:, 0]:  # the 40-voxel z axis fills the 64-voxel patch from z 12 on
        assert np.all(patch[:12] == np.float32(background)) and np.all(patch[52:] == np.float32(background))
        assert not np.all(patch[12:52] == np.float32(background))
    assert not masks[:, 0, :12].any()
