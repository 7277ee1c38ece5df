"""Automatic body mask (synthct.body_mask): Dice against the phantoms' own masks (bias field and noise on), against a
mask made from a real CT (Debian's invesalius-examples head CT, when installed), anisotropic dilation in mm, and
clear errors for MRs without signal."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from synthct.body_mask import DEFAULT_THRESHOLD_FRACTION, body_mask_array, body_mask_from_mr, dice
from synthct.io import ImageError
from synthct.phantom import SIZES, case_seed, generate_volumes

REPO = Path(__file__).resolve().parents[1]
INV3 = Path("/usr/share/doc/invesalius-examples/examples/Cranium.inv3")


def phantom_margin_mm(region: str, size: str) -> float:
    """The dilation the phantom generator gives its own mask (synthct.phantom.generate)."""
    return float(round(4.0 * max(SIZES[region][size].scale) ** 0.5))


@pytest.mark.parametrize("region", ["brain", "pelvis"])
def test_dice_against_phantom_mask(region: str) -> None:
    volumes = generate_volumes(region, case_seed(7, region, 1), "small")
    spacing_zyx = SIZES[region]["small"].spacing_mm
    auto = body_mask_array(volumes.mr, spacing_zyx, dilation_mm=phantom_margin_mm(region, "small"))
    assert auto.dtype == np.uint8 and auto.shape == volumes.mask.shape
    score = dice(auto, volumes.mask)
    assert score >= 0.97, f"{region}: Dice {score:.4f}"
    # the default 10 mm margin only adds voxels around the same body
    wide = body_mask_array(volumes.mr, spacing_zyx)
    assert np.all(wide[auto > 0]) and wide.sum() > auto.sum()


def test_robust_to_a_strong_bias_field_and_extra_noise() -> None:
    """A smooth field varying the MR ~2.5× across the field of view plus extra Rician noise (3 % of p99)."""
    volumes = generate_volumes("pelvis", case_seed(7, "pelvis", 1), "small")
    z, y, x = np.meshgrid(*[np.linspace(-1, 1, n) for n in volumes.mr.shape], indexing="ij")
    biased = volumes.mr * np.exp(0.5 * (x + 0.5 * y - 0.3 * z))
    rng = np.random.default_rng(0)
    sigma = 0.03 * float(np.percentile(volumes.mr, 99))
    noisy = np.abs(biased + rng.normal(0, sigma, biased.shape) + 1j * rng.normal(0, sigma, biased.shape))
    auto = body_mask_array(noisy.astype(np.float32), SIZES["pelvis"]["small"].spacing_mm,
                           dilation_mm=phantom_margin_mm("pelvis", "small"))
    score = dice(auto, volumes.mask)
    assert score >= 0.97, f"Dice {score:.4f}"


def test_dice_on_mr_simulated_from_real_ct() -> None:
    if not INV3.exists():
        pytest.skip(f"{INV3} not installed (apt-get install invesalius-examples); measured figures in the README")
    sys.path.insert(0, str(REPO / "benchmarks"))
    from from_ct_example import read_inv3

    from synthct.phantom.from_ct import simulate_pair

    image = read_inv3(INV3)
    hu = sitk.GetArrayFromImage(image).astype(np.float32)
    spacing_zyx = tuple(float(s) for s in image.GetSpacing()[::-1])
    _, mr, mask, _ = simulate_pair(hu, spacing_zyx, "brain", 3)  # type: ignore[arg-type]
    score = dice(body_mask_array(mr, spacing_zyx, dilation_mm=4.0), mask)  # from_ct dilates its mask 4 mm
    assert score >= 0.97, f"Dice {score:.4f}"


def test_geometry_kept_and_dilation_in_mm_with_anisotropic_spacing() -> None:
    rng = np.random.default_rng(0)
    shape = (20, 80, 60)  # (z, y, x)
    mr = rng.rayleigh(8.0, shape).astype(np.float32)  # background noise
    mr[5:15, 30:50, 20:40] = 600.0 * np.linspace(0.6, 1.4, 20)[None, None, :]  # a body under a strong bias gradient
    image = sitk.GetImageFromArray(mr)
    image.SetSpacing((2.0, 0.5, 3.0))  # x, y, z
    image.SetOrigin((-3.0, 7.0, 11.0))
    image.SetDirection((0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0))
    mask_image = body_mask_from_mr(image, dilation_mm=10.0, closing_mm=0.0)
    for getter in ("GetSpacing", "GetOrigin", "GetDirection", "GetSize"):
        assert getattr(mask_image, getter)() == getattr(image, getter)()
    mask = sitk.GetArrayFromImage(mask_image)
    zs, ys, xs = (np.nonzero(mask.any(axis=axes))[0] for axes in ((1, 2), (0, 2), (0, 1)))
    assert (zs[0], zs[-1]) == (5, 14)  # no dilation along z
    assert (ys[0], ys[-1]) == (30 - 20, 49 + 20)  # 10 mm / 0.5 mm
    assert (xs[0], xs[-1]) == (20 - 5, 39 + 5)  # 10 mm / 2 mm


@pytest.mark.parametrize("kind", ["zero", "constant", "nan"])
def test_mr_without_signal_is_a_clear_error(kind: str) -> None:
    mr = np.zeros((8, 16, 16), np.float32) if kind == "zero" else np.full((8, 16, 16), 350.0, np.float32)
    if kind == "nan":
        mr = np.random.default_rng(1).uniform(0, 500, mr.shape).astype(np.float32)
        mr[3, 4, 5] = np.nan
    image = sitk.GetImageFromArray(mr)
    with pytest.raises(ImageError) as info:
        body_mask_from_mr(image, name="case7/mr.mha")
    message = str(info.value)
    assert "case7/mr.mha" in message
    assert ("NaN" in message) if kind == "nan" else ("no signal" in message)


def test_threshold_fraction_is_validated_and_default_in_range() -> None:
    assert 0.0 < DEFAULT_THRESHOLD_FRACTION < 0.5
    with pytest.raises(ValueError, match="threshold_fraction"):
        body_mask_array(np.ones((4, 4, 4)), (1.0, 1.0, 1.0), threshold_fraction=1.5)
