"""synthct.intensity: the paper's eq. 1 for CT and MR, and the output sCT convention (SPEC §2)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from synthct.intensity import (
    BACKGROUND_HU,
    HU_MAX,
    HU_MIN,
    MR_RULES,
    apply_mr_statistics,
    denormalise_ct,
    finalise_sct,
    mr_statistics,
    normalise_ct,
    normalise_mr,
    normalised_background,
)


def test_ct_range_end_points_and_clipping() -> None:
    hu = np.array([-3000.0, -1024.0, 988.0, 3000.0, 5000.0])
    normalised = normalise_ct(hu)
    assert normalised.dtype == np.float32
    np.testing.assert_allclose(normalised, [-1.0, -1.0, 0.0, 1.0, 1.0], atol=1e-7)
    np.testing.assert_allclose(denormalise_ct(np.array([-1.0, 0.0, 1.0])), [HU_MIN, 988.0, HU_MAX])
    assert denormalise_ct(np.array([1.5])).item() == pytest.approx(4006.0)  # not clipped


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(-1024.0, 3000.0), min_size=1, max_size=20))
def test_ct_round_trip(values: list[float]) -> None:
    hu = np.asarray(values, dtype=np.float32)
    np.testing.assert_allclose(denormalise_ct(normalise_ct(hu)), hu, atol=1e-3)
    assert np.all(np.abs(normalise_ct(hu)) <= 1.0)


def test_mr_statistics_per_rule() -> None:
    mr = np.arange(1, 201, dtype=np.float32).reshape(2, 10, 10)
    mask = np.zeros_like(mr, dtype=np.uint8)
    mask[0] = 1  # values 1..100 inside, 101..200 outside
    assert mr_statistics(mr, mask).scale == 100.0 and mr_statistics(mr, mask).offset == 0.0
    assert mr_statistics(mr, None).scale == 200.0
    percentile = mr_statistics(mr, mask, "percentile", 90.0)  # the body's 90th percentile maps to +1
    assert (percentile.offset, percentile.scale) == pytest.approx((0.0, np.percentile(np.arange(1, 101), 90.0)))
    zscore = mr_statistics(mr, mask, "zscore")
    assert (zscore.offset, zscore.scale) == pytest.approx((50.5, np.std(np.arange(1, 101))))  # body voxels only
    with pytest.raises(ValueError, match="empty"):
        mr_statistics(mr, np.zeros_like(mask))
    with pytest.raises(ValueError, match="percentile"):
        mr_statistics(mr, mask, "percentile", 0.0)
    with pytest.raises(ValueError, match="unknown MR normalisation rule 'mean'"):
        mr_statistics(mr, mask, "mean")  # type: ignore[arg-type]


@pytest.mark.parametrize(("rule", "message"), [("max", "no positive intensity"), ("percentile", "constant"),
                                               ("zscore", "constant")])
def test_constant_mr_is_an_error(rule: str, message: str) -> None:
    mask = np.ones((2, 3, 4), dtype=np.uint8)
    with pytest.raises(ValueError, match=message):
        normalise_mr(np.zeros((2, 3, 4), dtype=np.float32), mask, rule)  # type: ignore[arg-type]
    if rule == "zscore":  # a constant positive MR: max and percentile map it to +1, zscore has no spread to scale by
        with pytest.raises(ValueError, match=message):
            normalise_mr(np.full((2, 3, 4), 7.0, dtype=np.float32), mask, rule)  # type: ignore[arg-type]


def test_percentile_rule_scales_by_the_body_percentile_and_maps_to_unit_range() -> None:
    rng = np.random.default_rng(0)
    mr = rng.uniform(100.0, 200.0, size=(8, 16, 16)).astype(np.float32)
    mask = np.zeros(mr.shape, dtype=np.uint8)
    mask[2:6] = 1
    mr[mask == 0] = 5000.0  # outside the body: no influence on the statistics
    mr[3, 3, 3], mr[4, 4, 4] = 10000.0, -50.0  # outliers inside
    normalised = normalise_mr(mr, mask, "percentile", 99.5)
    high = np.percentile(mr[mask > 0], 99.5)  # the rule of every "percentile" package so far: MR / p99.5
    expected = np.clip(mr / high, 0.0, 1.0) * 2.0 - 1.0
    np.testing.assert_allclose(normalised, expected, atol=1e-5)
    assert normalised[3, 3, 3] == 1.0 and normalised[4, 4, 4] == -1.0 and normalised.dtype == np.float32
    assert np.all(normalised[mask == 0] == 1.0)


def test_zscore_rule_has_zero_mean_unit_std_inside_the_body() -> None:
    rng = np.random.default_rng(1)
    mr = rng.normal(300.0, 40.0, size=(8, 16, 16)).astype(np.float32)
    mask = np.zeros(mr.shape, dtype=np.uint8)
    mask[:, 4:12, 4:12] = 1
    mr[mask == 0] = 0.0  # background air: left out of the statistics
    normalised = normalise_mr(mr, mask, "zscore")
    inside = normalised[mask > 0]
    assert float(inside.mean()) == pytest.approx(0.0, abs=1e-5)
    assert float(inside.std()) == pytest.approx(1.0, abs=1e-4)
    np.testing.assert_allclose(normalised[mask == 0], -mr[mask > 0].mean() / mr[mask > 0].std(), rtol=1e-4)


@pytest.mark.parametrize("rule", MR_RULES)
def test_statistics_of_the_whole_volume_normalise_a_crop_alike(rule: str) -> None:
    rng = np.random.default_rng(2)
    mr = rng.uniform(0.0, 900.0, size=(10, 12, 14)).astype(np.float32)
    mask = (rng.uniform(size=mr.shape) > 0.3).astype(np.uint8)
    whole = normalise_mr(mr, mask, rule)  # type: ignore[arg-type]
    crop = (slice(2, 7), slice(1, 9), slice(3, 12))
    statistics = mr_statistics(mr, mask, rule)  # type: ignore[arg-type]
    np.testing.assert_array_equal(apply_mr_statistics(mr[crop], statistics), whole[crop])


@pytest.mark.parametrize("rule", MR_RULES)
def test_normalised_background_is_the_normalised_mr_zero(rule: str) -> None:
    rng = np.random.default_rng(3)
    mr = rng.normal(300.0, 40.0, size=(6, 8, 8)).astype(np.float32)
    mask = np.zeros(mr.shape, dtype=np.uint8)
    mask[:, 2:6, 2:6] = 1
    mr[mask == 0] = 0.0  # air around the body
    statistics = mr_statistics(mr, mask, rule)  # type: ignore[arg-type]
    background = normalised_background(statistics)
    assert np.all(apply_mr_statistics(mr, statistics)[mask == 0] == np.float32(background))
    if rule == "zscore":  # -mean/std of the body: per case, far below -1
        assert background == pytest.approx(-statistics.offset / statistics.scale, rel=1e-6) and background < -3.0
    else:
        assert background == -1.0  # exactly: max and percentile keep padding with -1


def test_normalise_mr_maps_mask_maximum_to_one_and_clips() -> None:
    mr = np.array([[[0.0, 50.0, 100.0, 400.0]]], dtype=np.float32)
    mask = np.array([[[1, 1, 1, 0]]], dtype=np.uint8)
    normalised = normalise_mr(mr, mask)
    assert normalised.dtype == np.float32
    np.testing.assert_allclose(normalised, [[[-1.0, 0.0, 1.0, 1.0]]])  # 400 outside the mask clips to 1


def test_finalise_sct() -> None:
    hu = np.array([[[-2000.0, -0.6, 0.5, 1.6, 2999.7, 4000.0]]], dtype=np.float32)
    mask = np.array([[[1, 1, 1, 1, 1, 0]]], dtype=np.uint8)
    sct = finalise_sct(hu, mask)
    assert sct.dtype == np.int16
    np.testing.assert_array_equal(sct, [[[-1024, -1, 0, 2, 3000, BACKGROUND_HU]]])
