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
    denormalise_ct,
    finalise_sct,
    mr_scale,
    normalise_ct,
    normalise_mr,
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


def test_mr_scale_rules() -> None:
    mr = np.arange(1, 201, dtype=np.float32).reshape(2, 10, 10)
    mask = np.zeros_like(mr, dtype=np.uint8)
    mask[0] = 1  # values 1..100 inside
    assert mr_scale(mr, mask) == 100.0
    assert mr_scale(mr, None) == 200.0
    assert mr_scale(mr, mask, "percentile", 50.0) == pytest.approx(50.5)
    with pytest.raises(ValueError, match="empty"):
        mr_scale(mr, np.zeros_like(mask))
    with pytest.raises(ValueError, match="percentile"):
        mr_scale(mr, mask, "percentile", 0.0)
    with pytest.raises(ValueError, match="unknown MR scaling rule"):
        mr_scale(mr, mask, "mean")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no positive intensity"):
        mr_scale(np.zeros_like(mr), mask)


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
