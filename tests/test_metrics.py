"""synthct.metrics against independent references: skimage (SSIM, PSNR), numpy (MAE), and a literal float64
transcription of the SynthRAD 2025 masked MS-SSIM definition."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.ndimage import uniform_filter
from scipy.signal import fftconvolve
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from skimage.util import crop

from synthct import metrics

# ------------------------------------------------------------------------------------------------ references


def ref_mae(ct: np.ndarray, sct: np.ndarray, mask: np.ndarray) -> float:
    inside = mask > 0
    return float(np.abs(ct.astype(np.float64)[inside] - sct.astype(np.float64)[inside]).mean())


def ref_psnr(ct: np.ndarray, sct: np.ndarray, mask: np.ndarray, high: float = 3000.0) -> float:
    inside = mask > 0
    gt = np.clip(ct.astype(np.float64), -1024.0, high)[inside]
    pred = np.clip(sct.astype(np.float64), -1024.0, high)[inside]
    return float(peak_signal_noise_ratio(gt, pred, data_range=high + 1024.0))


def ref_ssim(ct: np.ndarray, sct: np.ndarray, mask: np.ndarray) -> float:
    inside = mask > 0
    gt = np.where(inside, np.clip(ct.astype(np.float64), -1024.0, 3000.0), -1024.0) + 1024.0
    pred = np.where(inside, np.clip(sct.astype(np.float64), -1024.0, 3000.0), -1024.0) + 1024.0
    _, ssim_map = structural_similarity(gt, pred, data_range=4024.0, full=True)
    return float(crop(ssim_map, 3)[crop(inside, 3)].mean(dtype=np.float64))


def ref_ms_ssim(ct: np.ndarray, sct: np.ndarray, mask: np.ndarray) -> float:
    """SynthRAD 2025's masked MS-SSIM as their evaluation code computes it, written out in float64."""
    weights = [0.0448, 0.2856, 0.3001, 0.2363, 0.1333]
    inside = (mask > 0).astype(np.float64)
    gt = np.where(inside > 0, np.clip(ct.astype(np.float64), -1024.0, 3071.0), -1024.0) + 1024.0
    pred = np.where(inside > 0, np.clip(sct.astype(np.float64), -1024.0, 3071.0), -1024.0) + 1024.0
    pads = [(max(0, (97 - n) // 2), max(0, 97 - n - (97 - n) // 2)) for n in gt.shape]
    gt, pred, inside = (np.pad(a, pads, mode="edge") for a in (gt, pred, inside))
    c1, c2 = (0.01 * 4095.0) ** 2, (0.03 * 4095.0) ** 2
    c3 = c2 / 2
    norm = 343.0 / 342.0
    product = 1.0
    for weight in weights:
        ux, uy = uniform_filter(gt, 7), uniform_filter(pred, 7)
        vx = norm * (uniform_filter(gt * gt, 7) - ux * ux)
        vy = norm * (uniform_filter(pred * pred, 7) - uy * uy)
        vxy = norm * (uniform_filter(gt * pred, 7) - ux * uy)
        sx, sy = np.sqrt(np.clip(vx, 0, None)), np.sqrt(np.clip(vy, 0, None))
        lum = np.clip((2 * ux * uy + c1) / (ux * ux + uy * uy + c1), 0, None)
        con = np.clip((2 * sx * sy + c2) / (vx + vy + c2), 0, None)
        stru = np.clip((vxy + c3) / (sx * sy + c3), 0, None)
        level_map = lum**weight * con**weight * stru**weight
        product *= min(max(crop(level_map, 3)[crop(inside, 3).astype(bool)].mean(), 0.0), 1.0)
        kernel = np.ones((2, 2, 2)) / 8
        gt, pred = (fftconvolve(a, kernel, mode="same")[::2, ::2, ::2] for a in (gt, pred))
        inside = inside[::2, ::2, ::2]
    return product


# ------------------------------------------------------------------------------------------------ volumes


VOLUMES = ["body", "odd-shape", "thin", "mask-touches-border", "full-mask-int16-out-of-range", "sparse-mask-float64"]


def _volume(name: str, body_case) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Test volumes: odd shapes, a mask cut by the volume border, out-of-range int16, float64 with bone and air."""
    rng = np.random.default_rng(5)
    if name == "body":
        return body_case((24, 28, 32), seed=1)
    if name == "odd-shape":
        return body_case((9, 23, 41), seed=2)
    if name == "thin":
        return body_case((7, 19, 13), seed=3, error_hu=150.0)
    if name == "mask-touches-border":
        ct, sct, _ = body_case((20, 26, 22), seed=4)
        _, y, x = np.indices(ct.shape)
        return ct, sct, ((((y - 13) / 14.0) ** 2 + ((x - 11) / 12.0) ** 2) < 1).astype(np.uint8)
    if name == "full-mask-int16-out-of-range":
        ct = rng.integers(-1500, 4000, size=(16, 18, 17)).astype(np.int16)
        sct = (ct + rng.integers(-300, 300, size=ct.shape)).astype(np.int16)
        return ct, sct, np.ones(ct.shape, np.uint8)
    assert name == "sparse-mask-float64"
    ct, sct, _ = body_case((18, 30, 26), seed=6, error_hu=400.0)
    ct[ct > 500] = 2900.0
    sparse = (rng.random(ct.shape) < 0.3).astype(np.uint8)
    return ct.astype(np.float64), sct.astype(np.float64), sparse


@pytest.mark.parametrize("name", VOLUMES)
def test_synthrad2023_metrics_match_skimage_reference(name: str, make_body_case) -> None:
    ct, sct, mask = _volume(name, make_body_case)
    values = metrics.compute_metrics(ct, sct, mask, "synthrad2023")
    assert set(values) == {"mae", "psnr", "ssim"}
    assert abs(values["mae"] - ref_mae(ct, sct, mask)) <= 1e-3
    assert abs(values["psnr"] - ref_psnr(ct, sct, mask)) <= 1e-3
    assert abs(values["ssim"] - ref_ssim(ct, sct, mask)) <= 1e-4
    assert metrics.mae(ct, sct, mask) == pytest.approx(values["mae"], abs=1e-9)
    assert metrics.psnr(ct, sct, mask) == pytest.approx(values["psnr"], abs=1e-9)
    assert metrics.ssim(ct, sct, mask) == pytest.approx(values["ssim"], abs=1e-12)


@pytest.mark.parametrize("name", ["body", "sparse-mask-float64"])
def test_ssim_agrees_with_skimage_far_below_the_tolerance(name: str, make_body_case) -> None:
    """float32 box means lose ~1e-9 here; a formula slip (e.g. population covariance, ~1e-5) would show."""
    ct, sct, mask = _volume(name, make_body_case)
    assert abs(metrics.ssim(ct, sct, mask) - ref_ssim(ct, sct, mask)) <= 1e-7


@pytest.mark.parametrize("name", ["body", "odd-shape", "mask-touches-border", "full-mask-int16-out-of-range"])
def test_synthrad2025_metrics_match_reference(name: str, make_body_case) -> None:
    ct, sct, mask = _volume(name, make_body_case)
    values = metrics.compute_metrics(ct, sct, mask, "synthrad2025")
    assert set(values) == {"mae", "psnr", "ms_ssim"}
    assert abs(values["mae"] - ref_mae(ct, sct, mask)) <= 1e-3
    assert abs(values["psnr"] - ref_psnr(ct, sct, mask, high=3071.0)) <= 1e-3
    assert abs(values["ms_ssim"] - ref_ms_ssim(ct, sct, mask)) <= 1e-4


def test_ms_ssim_matches_reference_on_a_volume_larger_than_the_padding(make_body_case) -> None:
    ct, sct, mask = make_body_case((12, 104, 99), seed=7, error_hu=120.0)
    assert abs(metrics.ms_ssim(ct, sct, mask) - ref_ms_ssim(ct, sct, mask)) <= 1e-4


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    shape=st.tuples(st.integers(7, 16), st.integers(7, 16), st.integers(7, 16)),
    seed=st.integers(0, 2**16),
    fraction=st.floats(0.2, 1.0),
)
def test_ssim_matches_skimage_on_random_shapes_and_masks(
    shape: tuple[int, int, int], seed: int, fraction: float
) -> None:
    rng = np.random.default_rng(seed)
    ct = rng.uniform(-1200, 3200, size=shape).astype(np.float32)
    sct = (ct + rng.normal(0, 300, size=shape)).astype(np.float32)
    mask = (rng.random(shape) < fraction).astype(np.uint8)
    mask[shape[0] // 2, shape[1] // 2, shape[2] // 2] = 1  # at least one voxel inside the cropped region
    assert abs(metrics.ssim(ct, sct, mask) - ref_ssim(ct, sct, mask)) <= 1e-4


# ------------------------------------------------------------------------------------------------ hand checks


def test_identical_images_score_perfectly(make_body_case) -> None:
    ct, _, mask = make_body_case((16, 20, 18), seed=8)
    for variant, structural in (("synthrad2023", "ssim"), ("synthrad2025", "ms_ssim")):
        values = metrics.compute_metrics(ct, ct.copy(), mask, variant)  # type: ignore[arg-type]
        assert values["mae"] == 0.0
        assert values["psnr"] == metrics.PSNR_CAP_DB
        assert values[structural] == pytest.approx(1.0, abs=1e-9)


def test_constant_offset_of_100_hu(make_body_case) -> None:
    ct, _, mask = make_body_case((16, 20, 18), seed=9)
    ct = np.clip(ct, -900.0, 2800.0)  # offset stays inside the clip range
    values = metrics.compute_metrics(ct, ct + 100.0, mask)
    assert values["mae"] == pytest.approx(100.0, abs=1e-4)
    assert values["psnr"] == pytest.approx(10 * math.log10(4024.0**2 / 100.0**2), abs=1e-4)
    assert 0.0 < values["ssim"] < 1.0


def test_mae_is_not_clipped_but_psnr_is() -> None:
    ct = np.full((8, 8, 8), 3050.0, np.float32)
    sct = np.full((8, 8, 8), 3200.0, np.float32)
    mask = np.ones(ct.shape, np.uint8)
    assert metrics.mae(ct, sct, mask) == pytest.approx(150.0)
    assert metrics.psnr(ct, sct, mask) == metrics.PSNR_CAP_DB  # both clip to 3000 HU
    # 2025 range: 3050 vs 3071 (clipped) HU
    assert metrics.psnr(ct, sct, mask, "synthrad2025") == pytest.approx(10 * math.log10(4095.0**2 / 21.0**2))


def test_voxels_outside_the_mask_do_not_matter(make_body_case) -> None:
    ct, sct, mask = make_body_case((16, 20, 18), seed=10)
    other = sct.copy()
    other[mask == 0] = 2500.0
    for variant in metrics.VARIANTS:
        assert metrics.compute_metrics(ct, sct, mask, variant) == metrics.compute_metrics(ct, other, mask, variant)


def test_worse_prediction_scores_worse(make_body_case) -> None:
    ct, good, mask = make_body_case((20, 24, 22), seed=11, error_hu=30.0)
    _, bad, _ = make_body_case((20, 24, 22), seed=11, error_hu=300.0)
    for variant, structural in (("synthrad2023", "ssim"), ("synthrad2025", "ms_ssim")):
        good_values = metrics.compute_metrics(ct, good, mask, variant)  # type: ignore[arg-type]
        bad_values = metrics.compute_metrics(ct, bad, mask, variant)  # type: ignore[arg-type]
        assert good_values["mae"] < bad_values["mae"]
        assert good_values["psnr"] > bad_values["psnr"]
        assert good_values[structural] > bad_values[structural]


def test_ms_ssim_small_mask_falls_back_to_pooled_mask(make_body_case) -> None:
    """A few mask voxels away from the centre: SynthRAD's code gives NaN; we average over the pooled mask."""
    ct, sct, _ = make_body_case((20, 20, 20), seed=12)
    mask = np.zeros(ct.shape, np.uint8)
    mask[5:8, 5:8, 5:8] = 1
    value = metrics.ms_ssim(ct, sct, mask)
    assert 0.0 <= value <= 1.0
    with np.errstate(invalid="ignore"), pytest.warns(RuntimeWarning):
        assert math.isnan(ref_ms_ssim(ct, sct, mask))


def test_ms_ssim_mask_at_the_border_of_a_large_volume_is_an_error(make_body_case) -> None:
    ct, sct, _ = make_body_case((8, 120, 120), seed=13)
    mask = np.zeros(ct.shape, np.uint8)
    mask[:, 3:6, 3:6] = 1  # inside level 0's cropped region, outside every coarse level's
    with pytest.raises(ValueError, match="MS-SSIM undefined"):
        metrics.ms_ssim(ct, sct, mask)


# ------------------------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    "function", [metrics.mae, metrics.psnr, metrics.ssim, metrics.ms_ssim, metrics.compute_metrics]
)
def test_bad_inputs_raise_value_error(function, make_body_case) -> None:
    ct, sct, mask = make_body_case((10, 12, 11), seed=14)
    with pytest.raises(ValueError, match=r"sCT shape"):
        function(ct, sct[:-1], mask)
    with pytest.raises(ValueError, match=r"mask shape"):
        function(ct, sct, mask[:, :-1])
    nan = sct.copy()
    nan[3, 4, 5] = np.nan
    with pytest.raises(ValueError, match=r"sCT: 1 voxel\(s\) are NaN or infinite"):
        function(ct, nan, mask)
    inf = ct.copy()
    inf[0, 0, 0] = np.inf
    with pytest.raises(ValueError, match=r"CT: 1 voxel"):
        function(inf, sct, mask)
    with pytest.raises(ValueError, match="mask is empty"):
        function(ct, sct, np.zeros_like(mask))
    with pytest.raises(ValueError, match="3-D"):
        function(ct[0], sct[0], mask[0])


def test_ssim_needs_seven_voxels_and_a_mask_inside_the_crop(make_body_case) -> None:
    ct, sct, mask = make_body_case((6, 12, 12), seed=15)
    with pytest.raises(ValueError, match="at least 7 voxels"):
        metrics.ssim(ct, sct, mask)
    ct, sct, _ = make_body_case((10, 12, 12), seed=15)
    border = np.zeros(ct.shape, np.uint8)
    border[0] = 1
    with pytest.raises(ValueError, match="SSIM undefined"):
        metrics.compute_metrics(ct, sct, border)


def test_unknown_variant(make_body_case) -> None:
    ct, sct, mask = make_body_case((8, 8, 8), seed=16)
    with pytest.raises(ValueError, match="unknown metrics variant"):
        metrics.compute_metrics(ct, sct, mask, "synthrad2024")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------ aggregate


def test_aggregate_statistics() -> None:
    summary = metrics.aggregate([4.0, None, 1.0, 3.0, 2.0])
    assert summary == {
        "mean": 2.5,
        "std": pytest.approx(np.std([1, 2, 3, 4])),
        "min": 1.0,
        "max": 4.0,
        "25pc": 1.75,
        "50pc": 2.5,
        "75pc": 3.25,
        "count": 4,
    }
    assert all(isinstance(v, float) for k, v in summary.items() if k != "count")


def test_aggregate_empty_and_non_finite() -> None:
    assert metrics.aggregate([None]) == {
        "mean": None,
        "std": None,
        "min": None,
        "max": None,
        "25pc": None,
        "50pc": None,
        "75pc": None,
        "count": 0,
    }
    with pytest.raises(ValueError, match="finite"):
        metrics.aggregate([1.0, float("nan")])
