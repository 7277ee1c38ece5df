"""SynthRAD image-similarity metrics of a synthetic CT against its CT, inside the body mask (SPEC §6).

Arrays are (z, y, x) in HU; ``mask > 0`` marks the body. Two variants:

``synthrad2023`` (default) — the SynthRAD 2023 evaluation:

- MAE  = Σ|ct − sct|·m / Σm, no clipping.
- PSNR = 10·log10(4024² / MSE), MSE over the voxels in m of both images clipped to [−1024, 3000].
- SSIM: both clipped to [−1024, 3000], set to −1024 outside m, shifted by +1024; the 3-D SSIM map of
  ``skimage.metrics.structural_similarity`` defaults (7×7×7 uniform window, K1 0.01, K2 0.03, sample covariance
  N/(N−1)) with data range 4024; 3 voxels cropped from every face of the map and of m; mean of the map over the
  cropped m.

``synthrad2025`` — the SynthRAD 2025 evaluation (``SynthRAD2025/evaluation``, ``image_metrics.py``): range
[−1024, 3071] (data range 4095), MAE and PSNR as above with that range, and masked MS-SSIM instead of SSIM
(see :func:`ms_ssim` for the exact definition, which follows what that code computes).

PSNR cap: identical images have MSE 0 and PSNR +∞. To keep metrics.json strict JSON and aggregates finite, PSNR is
capped at :data:`PSNR_CAP_DB` = 100 dB (an RMS error of 0.04 HU, far below the 1 HU steps of stored CTs).

Speed and memory: only 7-voxel windows lying wholly inside the volume are ever used (the cropped map), so box
means are computed in "valid" mode, slab by slab along z, and only over the bounding box of the cropped mask in each
slab. Box means run in float32 on HU values (centred near soft tissue, so variances lose little to cancellation;
scipy accumulates each 1-D pass in double); the SSIM formula is evaluated in float64 on the masked voxels only.
No float64 copy of a whole volume is made.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy.ndimage import uniform_filter1d

Variant = Literal["synthrad2023", "synthrad2025"]
VARIANTS: tuple[Variant, ...] = ("synthrad2023", "synthrad2025")

HU_LOW = -1024.0
"""Lower HU bound of both variants' dynamic range; also the value outside the mask for (MS-)SSIM."""
HU_HIGH_2023 = 3000.0
HU_HIGH_2025 = 3071.0
PSNR_CAP_DB = 100.0
"""PSNR reported for (near-)identical images instead of +inf."""

WIN = 7
"""SSIM window edge (voxels); the map is cropped by WIN // 2 = 3 on every face."""
HALF = WIN // 2
K1 = 0.01
K2 = 0.03
COV_NORM = WIN**3 / (WIN**3 - 1.0)
"""Sample-covariance factor N / (N − 1), as skimage's default ``use_sample_covariance=True``."""

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
"""Per-level exponents of MS-SSIM (Wang et al. 2003, eq. 7), finest level first."""
MS_SSIM_MIN_SIZE = 97
"""SynthRAD 2025 pads every axis (edge mode, centred) to at least this many voxels before MS-SSIM."""

METRIC_KEYS: dict[str, tuple[str, ...]] = {
    "synthrad2023": ("mae", "psnr", "ssim"),
    "synthrad2025": ("mae", "psnr", "ms_ssim"),
}
"""Metric names per variant, in report order."""

HIGHER_IS_BETTER = {"mae": False, "psnr": True, "ssim": True, "ms_ssim": True}

_SLAB_VOXELS = 6_000_000
"""Output voxels per slab (bounds the temporaries to a few hundred MB)."""


@dataclass(frozen=True)
class _Range:
    low: float
    high: float

    @property
    def data_range(self) -> float:
        return self.high - self.low


_RANGES = {"synthrad2023": _Range(HU_LOW, HU_HIGH_2023), "synthrad2025": _Range(HU_LOW, HU_HIGH_2025)}


def _range(variant: str) -> _Range:
    if variant not in _RANGES:
        raise ValueError(f"unknown metrics variant {variant!r} (expected one of {', '.join(VARIANTS)})")
    return _RANGES[variant]


# ----------------------------------------------------------------------------------------------------------------
# input checks


def validate_inputs(ct_hu: np.ndarray, sct_hu: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Check the three arrays; return the boolean body mask (``mask > 0``).

    Raises ``ValueError`` with a clear message for non-3-D arrays, shape mismatch, NaN/inf voxels or an empty mask.
    """
    names = {"CT": ct_hu, "sCT": sct_hu, "mask": mask}
    for name, array in names.items():
        if not isinstance(array, np.ndarray):
            raise ValueError(f"{name}: expected a numpy array, got {type(array).__name__}")
        if array.ndim != 3:
            raise ValueError(f"{name}: expected a 3-D (z, y, x) array, got {array.ndim}-D of shape {array.shape}")
        if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
            raise ValueError(f"{name}: expected a numeric array, got dtype {array.dtype}")
    if sct_hu.shape != ct_hu.shape:
        raise ValueError(f"sCT shape (z, y, x) {sct_hu.shape} != CT shape {ct_hu.shape}")
    if mask.shape != ct_hu.shape:
        raise ValueError(f"mask shape (z, y, x) {mask.shape} != CT shape {ct_hu.shape}")
    for name in ("CT", "sCT"):
        bad = _count_non_finite(names[name])
        if bad:
            raise ValueError(f"{name}: {bad} voxel(s) are NaN or infinite")
    body = mask > 0 if mask.dtype != np.bool_ else mask
    if not body.any():
        raise ValueError("mask: the body mask is empty (no voxel > 0)")
    return body


def _count_non_finite(array: np.ndarray) -> int:
    if not np.issubdtype(array.dtype, np.floating):
        return 0
    return int(sum(int(np.count_nonzero(~np.isfinite(array[z0:z1]))) for z0, z1 in _z_chunks(array.shape, 0)))


def _z_chunks(shape: tuple[int, ...], halo: int, voxels: int = _SLAB_VOXELS) -> Iterator[tuple[int, int]]:
    """Consecutive z ranges ``[z0, z1)`` covering ``[halo, nz - halo)`` with about ``voxels`` voxels each."""
    nz = shape[0]
    plane = max(1, int(np.prod(shape[1:])))
    depth = max(1, voxels // plane)
    for z0 in range(halo, nz - halo, depth):
        yield z0, min(z0 + depth, nz - halo)


# ----------------------------------------------------------------------------------------------------------------
# MAE and PSNR


def _masked_error_sums(
    ct_hu: np.ndarray, sct_hu: np.ndarray, body: np.ndarray, clip: _Range | None
) -> tuple[float, float, int]:
    """Σ|ct − sct| (unclipped), Σ(clip(ct) − clip(sct))² and the voxel count, over the mask, in float64."""
    abs_sum = 0.0
    sq_sum = 0.0
    count = 0
    for z0, z1 in _z_chunks(ct_hu.shape, 0):
        inside = body[z0:z1]
        ct = ct_hu[z0:z1][inside].astype(np.float64)
        sct = sct_hu[z0:z1][inside].astype(np.float64)
        abs_sum += float(np.abs(ct - sct).sum())
        if clip is not None:
            diff = np.clip(ct, clip.low, clip.high) - np.clip(sct, clip.low, clip.high)
            sq_sum += float(np.dot(diff, diff))
        count += int(ct.size)
    return abs_sum, sq_sum, count


def mae(ct_hu: np.ndarray, sct_hu: np.ndarray, mask: np.ndarray) -> float:
    """Mean absolute error (HU) over ``mask > 0``, no clipping."""
    body = validate_inputs(ct_hu, sct_hu, mask)
    abs_sum, _, count = _masked_error_sums(ct_hu, sct_hu, body, None)
    return abs_sum / count


def _psnr_from_mse(mse: float, data_range: float) -> float:
    if mse <= 0.0:
        return PSNR_CAP_DB
    return min(10.0 * math.log10(data_range**2 / mse), PSNR_CAP_DB)


def psnr(ct_hu: np.ndarray, sct_hu: np.ndarray, mask: np.ndarray, variant: Variant = "synthrad2023") -> float:
    """PSNR (dB) over ``mask > 0`` of both images clipped to the variant's range; capped at :data:`PSNR_CAP_DB`."""
    clip = _range(variant)
    body = validate_inputs(ct_hu, sct_hu, mask)
    _, sq_sum, count = _masked_error_sums(ct_hu, sct_hu, body, clip)
    return _psnr_from_mse(sq_sum / count, clip.data_range)


# ----------------------------------------------------------------------------------------------------------------
# windowed statistics (valid 7×7×7 windows only)


@dataclass
class _WindowStats:
    """Box-window statistics at the cropped-mask voxels of one slab, float64 1-D arrays.

    Means ``mean_x``/``mean_y`` are of the *centred* images (value − ``low``-shift undone by the caller);
    ``var_*`` and ``cov`` are sample (co)variances.
    """

    mean_x: np.ndarray
    mean_y: np.ndarray
    var_x: np.ndarray | None
    var_y: np.ndarray | None
    var_sum: np.ndarray
    cov: np.ndarray


def _box_mean_valid(values: np.ndarray) -> np.ndarray:
    """Mean over each 7×7×7 window lying wholly inside ``values`` (float32): shape shrinks by 6 on every axis."""
    out = values
    for axis in (0, 1, 2):  # z first: it removes the slab's halo before the two in-plane passes
        out = uniform_filter1d(out, WIN, axis=axis, output=np.float32, mode="nearest")
        index = [slice(None)] * 3
        index[axis] = slice(HALF, out.shape[axis] - HALF)
        out = out[tuple(index)]
    return out


def _window_stats(
    x: np.ndarray, y: np.ndarray, body: np.ndarray, separate_variances: bool, clip: _Range | None = None
) -> Iterator[_WindowStats]:
    """Yield box statistics of images ``x``, ``y`` at every voxel of the cropped ``body``.

    ``x``, ``y`` are prepared images (float32, clipped, masked, centred), or raw HU prepared block by block when
    ``clip`` is given. Works slab by slab along z and, per slab, on the bounding box (± 3 voxels) of the cropped
    mask only.
    """
    _, ny, nx = x.shape
    for z0, z1 in _z_chunks(x.shape, HALF):
        inner = body[z0:z1, HALF : ny - HALF, HALF : nx - HALF]
        rows = np.flatnonzero(inner.any(axis=(0, 2)))
        if rows.size == 0:
            continue
        cols = np.flatnonzero(inner.any(axis=(0, 1)))
        y0, y1 = int(rows[0]) + HALF, int(rows[-1]) + HALF + 1
        x0, x1 = int(cols[0]) + HALF, int(cols[-1]) + HALF + 1
        region = (slice(z0 - HALF, z1 + HALF), slice(y0 - HALF, y1 + HALF), slice(x0 - HALF, x1 + HALF))
        if clip is None:
            xs, ys = x[region], y[region]
        else:
            xs, ys = _prepare_block(x[region], body[region], clip), _prepare_block(y[region], body[region], clip)
        selected = body[z0:z1, y0:y1, x0:x1]

        def at_mask(values: np.ndarray, selected: np.ndarray = selected) -> np.ndarray:
            return _box_mean_valid(values)[selected].astype(np.float64)

        mean_x = at_mask(xs)
        mean_y = at_mask(ys)
        mean_xy = at_mask(xs * ys)
        if separate_variances:
            var_x = COV_NORM * (at_mask(xs * xs) - mean_x * mean_x)
            var_y = COV_NORM * (at_mask(ys * ys) - mean_y * mean_y)
            var_sum = var_x + var_y
        else:
            var_x = var_y = None
            squares = xs * xs
            squares += ys * ys
            var_sum = COV_NORM * (at_mask(squares) - mean_x * mean_x - mean_y * mean_y)
        cov = COV_NORM * (mean_xy - mean_x * mean_y)
        yield _WindowStats(mean_x, mean_y, var_x, var_y, var_sum, cov)


def _prepare_block(hu: np.ndarray, body: np.ndarray, clip: _Range) -> np.ndarray:
    """float32 copy of ``hu`` clipped to the range and set to its low end outside the body (centred: HU)."""
    block = np.clip(hu, clip.low, clip.high, dtype=np.float32, casting="unsafe")
    block[~body] = clip.low
    return block


def _prepare(hu: np.ndarray, body: np.ndarray, clip: _Range) -> np.ndarray:
    """:func:`_prepare_block` of a whole volume, slab by slab."""
    out = np.empty(hu.shape, dtype=np.float32)
    for z0, z1 in _z_chunks(hu.shape, 0):
        out[z0:z1] = _prepare_block(hu[z0:z1], body[z0:z1], clip)
    return out


def _check_ssim_shape(shape: tuple[int, ...], body: np.ndarray) -> None:
    if min(shape) < WIN:
        raise ValueError(f"SSIM needs at least {WIN} voxels along every axis, got shape (z, y, x) {shape}")
    if not body[HALF:-HALF, HALF:-HALF, HALF:-HALF].any():
        raise ValueError(f"SSIM undefined: no mask voxel lies {HALF} or more voxels inside the volume border")


# ----------------------------------------------------------------------------------------------------------------
# SSIM (SynthRAD 2023)


def _masked_ssim(ct_hu: np.ndarray, sct_hu: np.ndarray, body: np.ndarray, clip: _Range) -> float:
    """Masked mean SSIM (SynthRAD 2023) of validated HU volumes."""
    _check_ssim_shape(ct_hu.shape, body)
    shift = -clip.low
    c1 = (K1 * clip.data_range) ** 2
    c2 = (K2 * clip.data_range) ** 2
    total = 0.0
    count = 0
    for stats in _window_stats(ct_hu, sct_hu, body, separate_variances=False, clip=clip):
        ux = stats.mean_x + shift
        uy = stats.mean_y + shift
        numerator = (2.0 * ux * uy + c1) * (2.0 * stats.cov + c2)
        denominator = (ux * ux + uy * uy + c1) * (stats.var_sum + c2)
        total += float((numerator / denominator).sum())
        count += int(ux.size)
    return total / count


def ssim(ct_hu: np.ndarray, sct_hu: np.ndarray, mask: np.ndarray) -> float:
    """SynthRAD 2023 masked SSIM (see the module docstring): in [-1, 1], 1 for identical images."""
    body = validate_inputs(ct_hu, sct_hu, mask)
    clip = _RANGES["synthrad2023"]
    return _masked_ssim(ct_hu, sct_hu, body, clip)


# ----------------------------------------------------------------------------------------------------------------
# MS-SSIM (SynthRAD 2025)


def _pad_to_min_size(array: np.ndarray, size: int) -> np.ndarray:
    pads = [((size - n) // 2, size - n - (size - n) // 2) if n < size else (0, 0) for n in array.shape]
    return np.pad(array, pads, mode="edge") if any(p != (0, 0) for p in pads) else array


def _downsample(image: np.ndarray, boundary: float) -> np.ndarray:
    """Halve each axis: ``out[j] = (image[2j − 1] + image[2j]) / 2`` per axis, ``image[−1] = boundary``.

    This is what ``fftconvolve(image, ones((2, 2, 2)) / 8, mode="same")[::2, ::2, ::2]`` computes (zero padding in
    SynthRAD's shifted, non-negative intensities is ``boundary`` = the low end of the range in HU).
    """
    out = image
    for axis in range(3):
        n = out.shape[axis]
        even = [slice(None)] * 3
        even[axis] = slice(0, n, 2)
        odd = [slice(None)] * 3
        odd[axis] = slice(1, n - 1, 2)
        later = [slice(None)] * 3
        later[axis] = slice(1, None)
        first = [slice(None)] * 3
        first[axis] = slice(0, 1)
        halved = out[tuple(even)].astype(np.float32, copy=True)
        halved[tuple(later)] += out[tuple(odd)]
        halved[tuple(first)] += np.float32(boundary)
        halved *= np.float32(0.5)
        out = halved
    return out


def _ms_ssim_level(x: np.ndarray, y: np.ndarray, body: np.ndarray, weight: float, clip: _Range) -> tuple[float, int]:
    """Sum of the level's map ``(L·C·S)^weight`` over the cropped mask, and the voxel count."""
    shift = -clip.low
    c1 = (K1 * clip.data_range) ** 2
    c2 = (K2 * clip.data_range) ** 2
    c3 = c2 / 2.0
    total = 0.0
    count = 0
    for stats in _window_stats(x, y, body, separate_variances=True):
        assert stats.var_x is not None and stats.var_y is not None
        ux = stats.mean_x + shift
        uy = stats.mean_y + shift
        sx = np.sqrt(np.clip(stats.var_x, 0.0, None))
        sy = np.sqrt(np.clip(stats.var_y, 0.0, None))
        luminance = np.clip((2.0 * ux * uy + c1) / (ux * ux + uy * uy + c1), 0.0, None)
        contrast = np.clip((2.0 * sx * sy + c2) / (stats.var_sum + c2), 0.0, None)
        structure = np.clip((stats.cov + c3) / (sx * sy + c3), 0.0, None)
        total += float(np.power(luminance * contrast * structure, weight).sum())
        count += int(ux.size)
    return total, count


def ms_ssim(ct_hu: np.ndarray, sct_hu: np.ndarray, mask: np.ndarray) -> float:
    """SynthRAD 2025 masked MS-SSIM in [0, 1] (1 for identical images), as their evaluation code computes it.

    1. Both images clipped to [−1024, 3071] HU and set to −1024 outside ``mask > 0``; data range 4095.
    2. Every axis shorter than 97 voxels is padded (edge mode, centred) to 97, the mask too, so that five levels
       always fit.
    3. For level l = 0…4 with weight w_l = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)[l]: the 7×7×7 uniform-window
       maps L = (2μxμy + C1)/(μx² + μy² + C1), C = (2σxσy + C2)/(σx² + σy² + C2), S = (σxy + C3)/(σxσy + C3)
       (intensities shifted by +1024, C3 = C2/2, sample covariance, each term clipped at 0) are combined per voxel as
       (L·C·S)^w_l — the luminance term carries the level weight at *every* level, as in SynthRAD 2025's code (its
       "luminance at the last level only" array is overwritten by the scale weights); the level value is the mean
       of that map over the mask, both cropped by 3 voxels on every face.
    4. Images are halved per axis by averaging voxel pairs (2j − 1, 2j) (index −1 counts as −1024 HU), the mask by
       taking every second voxel (index 2j).
    5. MS-SSIM = Π_l clip(level value, 0, 1).

    Small masks: where the subsampled mask holds no voxel inside a coarse level's cropped region (SynthRAD's code
    then returns NaN), that level is averaged over the mask pooled with "any" over the same voxel pairs instead;
    if even that is empty (a mask hugging the volume border), ``ValueError`` is raised.
    """
    body = validate_inputs(ct_hu, sct_hu, mask)
    clip = _RANGES["synthrad2025"]
    x = _pad_to_min_size(_prepare(ct_hu, body, clip), MS_SSIM_MIN_SIZE)
    y = _pad_to_min_size(_prepare(sct_hu, body, clip), MS_SSIM_MIN_SIZE)
    sampled = _pad_to_min_size(body, MS_SSIM_MIN_SIZE)
    pooled = sampled
    result = 1.0
    for level, weight in enumerate(MS_SSIM_WEIGHTS):
        if level > 0:
            x = _downsample(x, clip.low)
            y = _downsample(y, clip.low)
            pooled = _downsample(pooled.astype(np.float32), 0.0) > 0
            sampled = sampled[::2, ::2, ::2]
        total, count = _ms_ssim_level(x, y, sampled, weight, clip)
        if count == 0:
            total, count = _ms_ssim_level(x, y, pooled, weight, clip)
        if count == 0:
            raise ValueError(
                f"MS-SSIM undefined: at level {level} (shape {x.shape}) no mask voxel lies {HALF} or more voxels "
                "inside the volume border"
            )
        result *= min(max(total / count, 0.0), 1.0)
    return result


# ----------------------------------------------------------------------------------------------------------------
# all metrics of a case, and aggregates


def compute_metrics(
    ct_hu: np.ndarray, sct_hu: np.ndarray, mask: np.ndarray, variant: Variant = "synthrad2023"
) -> dict[str, float]:
    """All metrics of one case: ``{"mae", "psnr", "ssim"}`` (2023) or ``{"mae", "psnr", "ms_ssim"}`` (2025).

    MAE in HU, PSNR in dB (capped at :data:`PSNR_CAP_DB`), (MS-)SSIM unitless. Raises ``ValueError`` on bad input.
    """
    clip = _range(variant)
    body = validate_inputs(ct_hu, sct_hu, mask)
    abs_sum, sq_sum, count = _masked_error_sums(ct_hu, sct_hu, body, clip)
    results = {"mae": abs_sum / count, "psnr": _psnr_from_mse(sq_sum / count, clip.data_range)}
    if variant == "synthrad2023":
        results["ssim"] = _masked_ssim(ct_hu, sct_hu, body, clip)
    else:
        results["ms_ssim"] = ms_ssim(ct_hu, sct_hu, body)
    return results


def aggregate(values: Iterable[float | None]) -> dict[str, float | int | None]:
    """Summary of per-case values: mean, std (population, ddof 0), min, max, quartiles (linear), count.

    ``None`` entries (failed cases) are skipped; with no values every statistic is ``None`` and count 0.
    Raises ``ValueError`` on NaN or infinite values (metrics.json must stay strict JSON).
    """
    kept = np.asarray([v for v in values if v is not None], dtype=np.float64)
    if not np.all(np.isfinite(kept)):
        raise ValueError("aggregate: values must be finite")
    keys = ("mean", "std", "min", "max", "25pc", "50pc", "75pc")
    if kept.size == 0:
        return {**dict.fromkeys(keys), "count": 0}
    q25, q50, q75 = np.percentile(kept, [25, 50, 75])
    return {
        "mean": float(kept.mean()),
        "std": float(kept.std()),
        "min": float(kept.min()),
        "max": float(kept.max()),
        "25pc": float(q25),
        "50pc": float(q50),
        "75pc": float(q75),
        "count": int(kept.size),
    }
