"""The sliding-window engine: grid coverage, MONAI agreement (grid, weights, blending), mask skipping, errors.

torch and monai are imported here only, as the reference the numpy engine must reproduce.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from synthct.sliding_window import (
    axis_starts,
    gaussian_importance,
    pad_to_shape,
    padding,
    plan_windows,
    sliding_window_predict,
    stride,
    window_starts,
)

torch = pytest.importorskip("torch")
monai_inferers = pytest.importorskip("monai.inferers")
monai_data_utils = pytest.importorskip("monai.data.utils")

overlaps = st.sampled_from([0.0, 0.1, 0.25, 0.3, 0.5, 0.6, 0.75, 0.9])


def analytic_predictor(batch: np.ndarray) -> np.ndarray:
    """Nonlinear in the intensities and dependent on the position inside the patch (so blending matters)."""
    pz, _, px = batch.shape[2:]
    z = np.linspace(0.0, 1.0, pz, dtype=np.float32)[:, None, None]
    x = np.linspace(-1.0, 1.0, px, dtype=np.float32)[None, None, :]
    out = np.tanh(1.3 * batch + 0.2) * (1.0 + 0.5 * z) + 0.1 * np.roll(batch, 3, axis=-1) + 0.05 * x * x
    return out.astype(np.float32)


def monai_reference(volume: np.ndarray, predictor, patch, overlap=0.5, batch_size=4, mode="gaussian") -> np.ndarray:
    def torch_predictor(tensor):
        return torch.from_numpy(np.ascontiguousarray(predictor(tensor.numpy())))

    with torch.no_grad():
        out = monai_inferers.sliding_window_inference(
            torch.from_numpy(volume)[None, None], list(patch), batch_size, torch_predictor, overlap=overlap,
            mode=mode, sigma_scale=0.125, padding_mode="constant", cval=-1.0,
        )
    return out.numpy()[0, 0]


def blob_mask(shape: tuple[int, int, int], centre_fraction=(0.5, 0.4, 0.6), radius_fraction=0.3) -> np.ndarray:
    grids = np.meshgrid(*[np.arange(n) / max(n - 1, 1) for n in shape], indexing="ij")
    distance = sum((g - c) ** 2 for g, c in zip(grids, centre_fraction, strict=True))
    return (distance < radius_fraction**2).astype(np.uint8)


# ---------------------------------------------------------------- grid


@settings(max_examples=300, deadline=None)
@given(size=st.integers(1, 300), patch=st.integers(1, 96), overlap=overlaps)
def test_axis_starts_cover_every_voxel(size: int, patch: int, overlap: float) -> None:
    before, after = padding((size, 1, 1), (patch, 1, 1))[0]
    padded = size + before + after
    assert padded == max(size, patch) and 0 <= before <= after <= before + 1
    starts = axis_starts(padded, patch, overlap)
    assert starts[0] == 0 and starts[-1] == padded - patch
    assert all(b > a for a, b in itertools.pairwise(starts))
    steps = np.diff(starts)
    assert np.all(steps[:-1] == stride(patch, overlap)) and np.all(steps <= patch)
    covered = np.zeros(padded, dtype=bool)
    for start in starts:
        covered[start : start + patch] = True
    assert covered.all()


@settings(max_examples=60, deadline=None)
@given(
    shape=st.tuples(st.integers(1, 300), st.integers(1, 300), st.integers(1, 300)),
    patch=st.tuples(st.integers(32, 96), st.integers(32, 96), st.integers(32, 96)),
    overlap=st.sampled_from([0.0, 0.25, 0.5, 0.6, 0.75]),
)
def test_window_grid_equals_monai(shape, patch, overlap) -> None:
    """Same windows, same order as MONAI's ``dense_patch_slices`` on the padded image; anisotropic shapes."""
    padded = tuple(max(s, p) for s, p in zip(shape, patch, strict=True))
    intervals = monai_inferers.utils._get_scan_interval(padded, patch, 3, (overlap,) * 3)
    expected = monai_data_utils.dense_patch_slices(padded, patch, intervals, return_slice=False)
    ours = window_starts(shape, patch, overlap)
    assert ours == [tuple(int(lo) for lo, _ in window) for window in expected]
    plan = plan_windows(shape, patch, overlap)
    assert plan.padded_shape == padded and plan.computed == ours and plan.skipped == []


@pytest.mark.parametrize("shape", [(300, 7, 151), (65, 64, 63), (1, 1, 1), (161, 255, 97)])
def test_window_grid_covers_volume_3d(shape) -> None:
    patch = (64, 64, 64)
    plan = plan_windows(shape, patch, 0.5)
    covered = np.zeros(plan.padded_shape, dtype=bool)
    for z, y, x in plan.computed:
        covered[z : z + 64, y : y + 64, x : x + 64] = True
    assert covered.all()


def test_stride_is_32_for_the_papers_grid() -> None:
    assert stride(64, 0.5) == 32
    assert axis_starts(256, 64, 0.5) == [0, 32, 64, 96, 128, 160, 192]
    assert axis_starts(160, 64, 0.5) == [0, 32, 64, 96]
    assert axis_starts(170, 64, 0.5) == [0, 32, 64, 96, 106]
    assert padding((40, 64, 100), (64, 64, 64)) == ((12, 12), (0, 0), (0, 0))
    assert padding((41, 64, 100), (64, 64, 64)) == ((11, 12), (0, 0), (0, 0))


@pytest.mark.parametrize(("patch", "sigma_scale"), [((64, 64, 64), 0.125), ((16, 24, 9), 0.125), ((33, 32, 31), 0.25)])
def test_gaussian_importance_equals_monai(patch, sigma_scale) -> None:
    expected = monai_data_utils.compute_importance_map(patch, mode="gaussian", sigma_scale=sigma_scale).numpy()
    ours = gaussian_importance(patch, sigma_scale)
    assert ours.dtype == np.float32 and ours.shape == patch
    np.testing.assert_allclose(ours, expected, rtol=1e-6, atol=1e-7)
    assert ours.min() >= 1e-3 - 1e-9


# ---------------------------------------------------------------- blending vs MONAI


@pytest.mark.parametrize(
    ("shape", "patch", "overlap", "batch_size", "mode"),
    [
        ((70, 80, 66), (64, 64, 64), 0.5, 4, "gaussian"),  # the paper's grid, border shift on every axis
        ((30, 100, 71), (64, 64, 64), 0.5, 3, "gaussian"),  # anisotropic, z padded, odd x
        ((10, 21, 5), (16, 24, 8), 0.5, 2, "gaussian"),  # smaller than the patch on every axis, odd padding
        ((37, 29, 41), (15, 17, 9), 0.5, 5, "gaussian"),  # odd shapes and odd patch sizes
        ((45, 33, 50), (16, 16, 16), 0.25, 4, "gaussian"),
        ((45, 33, 50), (16, 16, 16), 0.5, 4, "constant"),
    ],
)
def test_blending_reproduces_monai(shape, patch, overlap, batch_size, mode) -> None:
    rng = np.random.default_rng(sum(shape))
    volume = rng.uniform(-1.0, 1.0, shape).astype(np.float32)
    expected = monai_reference(volume, analytic_predictor, patch, overlap, batch_size, mode)
    ours = sliding_window_predict(volume, analytic_predictor, patch, overlap, batch_size=batch_size, mode=mode)
    assert ours.shape == shape and ours.dtype == np.float32
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-5)

    mask = blob_mask(shape)
    masked = sliding_window_predict(volume, analytic_predictor, patch, overlap, mask, batch_size, mode)
    inside = mask > 0
    np.testing.assert_allclose(masked[inside], expected[inside], rtol=0, atol=1e-5)


def test_blending_reproduces_monai_with_a_conv_net() -> None:
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv3d(1, 4, 3, padding=1), torch.nn.Tanh(), torch.nn.Conv3d(4, 1, 3, padding=1), torch.nn.Tanh()
    ).eval()

    def net_predictor(batch: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return net(torch.from_numpy(np.ascontiguousarray(batch))).numpy()

    shape, patch = (40, 75, 52), (32, 32, 32)
    rng = np.random.default_rng(7)
    volume = rng.uniform(-1.0, 1.0, shape).astype(np.float32)
    mask = blob_mask(shape, radius_fraction=0.4)
    expected = monai_reference(volume, net_predictor, patch, 0.5, 2)
    ours = sliding_window_predict(volume, net_predictor, patch, 0.5, mask, batch_size=2)
    inside = mask > 0
    np.testing.assert_allclose(ours[inside], expected[inside], rtol=0, atol=1e-5)


# ---------------------------------------------------------------- mask skipping


class CountingPredictor:
    def __init__(self) -> None:
        self.calls: list[int] = []

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        self.calls.append(batch.shape[0])
        return analytic_predictor(batch)


def test_skipped_windows_leave_mask_voxels_unchanged() -> None:
    shape, patch = (60, 90, 75), (32, 32, 32)
    rng = np.random.default_rng(3)
    volume = rng.uniform(-1.0, 1.0, shape).astype(np.float32)
    mask = blob_mask(shape, centre_fraction=(0.3, 0.25, 0.7), radius_fraction=0.2)
    full = sliding_window_predict(volume, analytic_predictor, patch, 0.5, None, batch_size=3)

    counting = CountingPredictor()
    masked = sliding_window_predict(volume, counting, patch, 0.5, mask, batch_size=3, fill_value=-7.0)
    plan = plan_windows(shape, patch, 0.5, mask)
    assert plan.skipped and plan.computed
    assert sum(counting.calls) == len(plan.computed) and max(counting.calls) <= 3
    assert len(counting.calls) == -(-len(plan.computed) // 3)

    inside = mask > 0
    np.testing.assert_array_equal(masked[inside], full[inside])
    covered = np.zeros(shape, dtype=bool)
    for z, y, x in plan.computed:
        covered[z : z + 32, y : y + 32, x : x + 32] = True
    assert np.all(masked[~covered] == -7.0)
    assert np.all(masked[covered] != -7.0)
    # each skipped window really holds no mask voxel, each computed one holds at least one
    for z, y, x in plan.skipped:
        assert not mask[z : z + 32, y : y + 32, x : x + 32].any()
    for z, y, x in plan.computed:
        assert mask[z : z + 32, y : y + 32, x : x + 32].any()


def test_empty_mask_computes_nothing() -> None:
    counting = CountingPredictor()
    out = sliding_window_predict(np.zeros((20, 20, 20), np.float32), counting, (16, 16, 16), 0.5,
                                 np.zeros((20, 20, 20), np.uint8), fill_value=-1.0)
    assert counting.calls == [] and np.all(out == -1.0)


def test_progress_bar_runs(capsys) -> None:
    out = sliding_window_predict(np.zeros((20, 20, 20), np.float32), analytic_predictor, (16, 16, 16), progress=True)
    assert out.shape == (20, 20, 20)


# ---------------------------------------------------------------- errors


def test_bad_inputs_are_refused() -> None:
    volume = np.zeros((20, 20, 20), np.float32)
    with pytest.raises(ValueError, match="3-D"):
        sliding_window_predict(np.zeros((20, 20), np.float32), analytic_predictor, (16, 16, 16))
    with pytest.raises(ValueError, match="mask shape"):
        sliding_window_predict(volume, analytic_predictor, (16, 16, 16), mask=np.ones((20, 20, 19)))
    with pytest.raises(ValueError, match="overlap"):
        sliding_window_predict(volume, analytic_predictor, (16, 16, 16), overlap=1.0)
    with pytest.raises(ValueError, match="patch_size"):
        sliding_window_predict(volume, analytic_predictor, (16, 0, 16))
    with pytest.raises(ValueError, match="predictor returned shape"):
        sliding_window_predict(volume, lambda b: b[:, :, :8], (16, 16, 16))
    with pytest.raises(ValueError, match="non-finite"):
        sliding_window_predict(volume, lambda b: b * np.nan, (16, 16, 16))
    with pytest.raises(ValueError, match="blend mode"):
        sliding_window_predict(volume, analytic_predictor, (16, 16, 16), mode="linear")  # type: ignore[arg-type]


def test_pad_to_shape_pads_evenly_with_the_value_and_keeps_long_axes() -> None:
    array = np.arange(3 * 70 * 5, dtype=np.float32).reshape(3, 70, 5)
    padded = pad_to_shape(array, (8, 64, 8), -1.0)
    assert padded.shape == (8, 70, 8) and padded.dtype == np.float32
    assert padded.shape == tuple(s + b + a for s, (b, a) in zip(array.shape, padding(array.shape, (8, 64, 8)),
                                                                  strict=True))
    np.testing.assert_array_equal(padded[2:5, :, 1:6], array)  # (8 - 3) // 2 = 2 before, 3 after; (8 - 5) // 2 = 1
    assert np.all(padded[:2] == -1.0) and np.all(padded[5:] == -1.0) and np.all(padded[:, :, 6:] == -1.0)
    assert pad_to_shape(array, (3, 64, 5), 0.0) is array  # nothing short: the array itself
    mask = pad_to_shape(np.ones((2, 2, 2), dtype=np.uint8), (4, 4, 4), 0)
    assert mask.dtype == np.uint8 and int(mask.sum()) == 8 and mask[1:3, 1:3, 1:3].all()
