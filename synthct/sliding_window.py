"""Patch grid and blended sliding-window inference over a 3-D volume (SPEC §4); numpy only.

Arrays are (z, y, x). The grid, the padding and the Gaussian weights follow MONAI's ``sliding_window_inference``
(``mode="gaussian"``, ``padding_mode="constant"``), so a validation score in ``train/`` equals the container's:

- an axis shorter than the patch is padded with ``pad_value``, ``(patch - size) // 2`` before and the rest after;
- stride ``int(patch * (1 - overlap))`` (at least 1; 32 for a 64 patch at 50 % overlap), the last window shifted
  back to end at the border;
- overlapping predictions are averaged with weights ``exp(-d² / (2σ²))``, σ = ``sigma_scale`` · patch per axis,
  clamped below at ``max(min(weights), 1e-3)``.

Windows holding no body-mask voxel are not computed. Skipping them changes nothing inside the mask: every window
covering a mask voxel holds that voxel, so it is computed.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal

import numpy as np
from tqdm import tqdm

Predictor = Callable[[np.ndarray], np.ndarray]
"""Maps a batch (B, 1, pz, py, px) float32 to an array of the same shape."""
BlendMode = Literal["gaussian", "constant"]

Shape3 = tuple[int, int, int]


def _as_shape3(values: Sequence[int], name: str) -> Shape3:
    if len(values) != 3 or not all(int(v) == v and int(v) > 0 for v in values):
        raise ValueError(f"{name} must be 3 positive integers (z, y, x), got {tuple(values)!r}")
    return (int(values[0]), int(values[1]), int(values[2]))


def _check_overlap(overlap: float) -> None:
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")


def stride(patch: int, overlap: float) -> int:
    """Step between window starts along an axis (voxels): ``int(patch * (1 - overlap))``, at least 1 (MONAI's)."""
    _check_overlap(overlap)
    return max(int(patch * (1.0 - overlap)), 1)


def padding(shape: Sequence[int], patch_size: Sequence[int]) -> tuple[tuple[int, int], ...]:
    """Per axis ``(before, after)`` voxels that bring an axis shorter than the patch up to the patch size: evenly,
    ``(patch - size) // 2`` before and the rest after."""
    shape3, patch3 = _as_shape3(shape, "shape"), _as_shape3(patch_size, "patch_size")
    pads = []
    for size, patch in zip(shape3, patch3, strict=True):
        missing = max(patch - size, 0)
        pads.append((missing // 2, missing - missing // 2))
    return tuple(pads)


def pad_to_shape(array: np.ndarray, min_shape: Sequence[int], value: float) -> np.ndarray:
    """``array`` (z, y, x) padded with ``value`` as :func:`padding` says, so every axis is at least ``min_shape``;
    ``array`` itself when no axis is short. The one padding rule of inference, validation, training and the cache."""
    pads = padding(array.shape, min_shape)
    if not any(before or after for before, after in pads):
        return array
    return np.pad(array, pads, mode="constant", constant_values=np.asarray(value, dtype=array.dtype))


def axis_starts(size: int, patch: int, overlap: float) -> list[int]:
    """Window starts along one axis of ``size`` voxels (``size`` ≥ ``patch``: pad first).

    Starts step by :func:`stride`; the first window reaching the end is shifted back to end exactly at ``size``.
    """
    if size < patch:
        raise ValueError(f"axis of {size} voxels is shorter than the patch ({patch}): pad it first")
    step = patch if size == patch else stride(patch, overlap)
    starts = []
    index = 0
    while True:
        start = index * step
        if start + patch >= size:
            starts.append(size - patch)
            return starts
        starts.append(start)
        index += 1


def window_starts(shape: Sequence[int], patch_size: Sequence[int], overlap: float) -> list[Shape3]:
    """Start corners (z, y, x) of all windows over ``shape``, in the padded frame of :func:`padding`.

    Order: z outermost, x innermost (as MONAI's ``dense_patch_slices``). Together the windows cover every voxel.
    """
    shape3, patch3 = _as_shape3(shape, "shape"), _as_shape3(patch_size, "patch_size")
    _check_overlap(overlap)
    padded = [max(size, patch) for size, patch in zip(shape3, patch3, strict=True)]
    per_axis = [axis_starts(size, patch, overlap) for size, patch in zip(padded, patch3, strict=True)]
    return [(int(z), int(y), int(x)) for z, y, x in itertools.product(*per_axis)]


def gaussian_importance(patch_size: Sequence[int], sigma_scale: float = 0.125) -> np.ndarray:
    """Blending weights (z, y, x) float32, peak ≈ 1: product of 1-D Gaussians, σ = ``sigma_scale`` · patch.

    Same values as MONAI's ``compute_importance_map(mode="gaussian")``: computed in float32, coordinates centred
    on the patch (±(p-1)/2), then clamped below at ``max(min(map), 1e-3)``.
    """
    patch3 = _as_shape3(patch_size, "patch_size")
    if sigma_scale <= 0:
        raise ValueError(f"sigma_scale must be positive, got {sigma_scale}")
    weights: np.ndarray | None = None
    for axis, patch in enumerate(patch3):
        sigma = patch * sigma_scale
        offsets = np.arange(-(patch - 1) / 2.0, (patch - 1) / 2.0 + 1, dtype=np.float32)
        profile = np.exp(offsets**2 / np.float32(-2 * sigma**2)).astype(np.float32)
        if weights is None:
            weights = profile
        else:
            shape = [1] * (axis + 1)
            shape[axis] = patch
            weights = weights[..., None] * profile.reshape(shape)
    assert weights is not None
    floor = max(float(weights.min()), 1e-3)
    return np.maximum(weights, np.float32(floor)).astype(np.float32)


def importance_map(patch_size: Sequence[int], mode: BlendMode = "gaussian", sigma_scale: float = 0.125) -> np.ndarray:
    """Blending weights for ``mode``: :func:`gaussian_importance`, or ones for ``"constant"``. float32 (z, y, x)."""
    if mode == "gaussian":
        return gaussian_importance(patch_size, sigma_scale)
    if mode == "constant":
        return np.ones(_as_shape3(patch_size, "patch_size"), dtype=np.float32)
    raise ValueError(f"unknown blend mode {mode!r} (expected 'gaussian' or 'constant')")


@dataclass(frozen=True)
class WindowPlan:
    """Which windows a volume needs: starts (z, y, x) in the padded frame, computed or skipped."""

    shape: Shape3
    patch_size: Shape3
    pad: tuple[tuple[int, int], ...]
    padded_shape: Shape3
    computed: list[Shape3]
    skipped: list[Shape3]

    @property
    def n_windows(self) -> int:
        return len(self.computed) + len(self.skipped)


def plan_windows(
    shape: Sequence[int], patch_size: Sequence[int] = (64, 64, 64), overlap: float = 0.5, mask: np.ndarray | None = None
) -> WindowPlan:
    """The window grid for ``shape``; with ``mask`` (same shape), windows without a mask voxel are ``skipped``."""
    shape3, patch3 = _as_shape3(shape, "shape"), _as_shape3(patch_size, "patch_size")
    pad = padding(shape3, patch3)
    padded_shape = (shape3[0] + sum(pad[0]), shape3[1] + sum(pad[1]), shape3[2] + sum(pad[2]))
    starts = window_starts(shape3, patch3, overlap)
    if mask is None:
        return WindowPlan(shape3, patch3, pad, padded_shape, starts, [])
    mask = np.asarray(mask)
    if mask.shape != shape3:
        raise ValueError(f"mask shape {mask.shape} differs from the volume shape {shape3}")
    inside = pad_to_shape(mask > 0, patch3, False)
    computed: list[Shape3] = []
    skipped: list[Shape3] = []
    for start in starts:
        window = tuple(slice(s, s + p) for s, p in zip(start, patch3, strict=True))
        (computed if inside[window].any() else skipped).append(start)
    return WindowPlan(shape3, patch3, pad, padded_shape, computed, skipped)


def _extract(padded: np.ndarray, batch: np.ndarray, windows: list[tuple[slice, ...]]) -> np.ndarray:
    """Copy ``windows`` of ``padded`` into the first rows of ``batch``; returns those rows."""
    for row, window in enumerate(windows):
        batch[row, 0] = padded[window]
    return batch[: len(windows)]


def _blend(blended: np.ndarray, weight_sum: np.ndarray, weights: np.ndarray, windows: list[tuple[slice, ...]],
           output: np.ndarray) -> None:
    """Add each output window times ``weights`` into ``blended`` and ``weights`` into ``weight_sum``."""
    for row, window in enumerate(windows):
        blended[window] += output[row, 0].astype(np.float32, copy=False) * weights
        weight_sum[window] += weights


def sliding_window_predict(
    volume: np.ndarray,
    predictor: Predictor,
    patch_size: Sequence[int] = (64, 64, 64),
    overlap: float = 0.5,
    mask: np.ndarray | None = None,
    batch_size: int = 4,
    mode: BlendMode = "gaussian",
    sigma_scale: float = 0.125,
    pad_value: float = -1.0,
    fill_value: float = -1.0,
    progress: bool = False,
) -> np.ndarray:
    """Apply ``predictor`` window by window over ``volume`` (z, y, x) and blend the outputs; returns float32 (z, y, x).

    ``predictor`` gets batches (B ≤ ``batch_size``, 1, pz, py, px) float32 and must return the same shape. Windows
    without a voxel of ``mask`` are skipped; voxels that no computed window covers get ``fill_value``. The next
    batch is extracted, and the previous one blended, on a worker thread while ``predictor`` runs. Memory: the
    (padded) volume, two float32 accumulators of the padded size, two batches of windows and one output.
    """
    volume = np.asarray(volume)
    if volume.ndim != 3:
        raise ValueError(f"volume must be 3-D (z, y, x), got shape {volume.shape}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    plan = plan_windows(volume.shape, patch_size, overlap, mask)
    patch3 = plan.patch_size
    weights = importance_map(patch3, mode, sigma_scale)

    padded = pad_to_shape(np.asarray(volume, dtype=np.float32), plan.patch_size, pad_value)
    blended = np.zeros(plan.padded_shape, dtype=np.float32)
    weight_sum = np.zeros(plan.padded_shape, dtype=np.float32)

    groups = [plan.computed[first : first + batch_size] for first in range(0, len(plan.computed), batch_size)]
    buffers = [np.empty((batch_size, 1, *patch3), dtype=np.float32) for _ in range(2)]

    slices = [[tuple(slice(s, s + p) for s, p in zip(start, patch3, strict=True)) for start in group]
              for group in groups]

    # One worker thread extracts batch k+1 and blends batch k-1 while the predictor runs on batch k (numpy and the
    # runtimes release the GIL). Its jobs run in submission order, so the sums are accumulated in window order —
    # the result is bit-identical to a sequential loop — and a buffer is refilled only after its batch was blended.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="windows") as worker, tqdm(
        total=len(plan.computed), disable=not progress, desc="windows", unit="win", leave=False
    ) as bar:
        next_batch = worker.submit(_extract, padded, buffers[0], slices[0]) if groups else None
        blending: Future[None] | None = None
        for index in range(len(groups)):
            assert next_batch is not None
            batch = next_batch.result()
            if index + 1 < len(groups):
                next_batch = worker.submit(_extract, padded, buffers[(index + 1) % 2], slices[index + 1])
            output = np.asarray(predictor(batch))
            expected = (len(groups[index]), 1, *patch3)
            if output.shape != expected:
                raise ValueError(f"predictor returned shape {output.shape}, expected {expected}")
            if not np.all(np.isfinite(output)):
                raise ValueError("predictor returned non-finite values (NaN or infinity)")
            if blending is not None:
                blending.result()
            blending = worker.submit(_blend, blended, weight_sum, weights, slices[index], output)
            bar.update(len(groups[index]))
        if blending is not None:
            blending.result()
    del padded, buffers

    covered = weight_sum > 0
    np.divide(blended, weight_sum, out=blended, where=covered)
    blended[~covered] = np.float32(fill_value)
    del weight_sum, covered
    crop = tuple(slice(before, before + size) for (before, _), size in zip(plan.pad, plan.shape, strict=True))
    return blended[crop]
