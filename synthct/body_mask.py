"""Automatic body mask from an MR, after SynthRAD 2025's preprocessing recipe.

1. threshold at ``p2.5 + t · (p97.5 − p2.5)`` of the MR's intensities (``t`` = ``threshold_fraction``);
2. opening with an in-plane disc (removes noise speckle and thin bridges, e.g. to a coil or the table);
3. largest 6-connected component;
4. closing with a small ball (mm), on a padded volume so that a body touching the field of view is not eroded;
5. hole filling in 3-D, then in every axial slice (sinuses, bowel gas, the dark cortical bone of the skull);
6. in-plane dilation by ``dilation_mm`` (Euclidean, in mm: anisotropic spacing is handled).

Relative thresholds make the recipe independent of the MR's scale; the percentiles are taken over the whole field of
view, so a smooth bias field that dims part of the body only moves its edge by a fraction of a voxel. Arrays are
(z, y, x); spacings in SimpleITK's (x, y, z) order where an image is involved and (z, y, x) for arrays.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from synthct.io import ImageError, array_to_image
from synthct.phantom.mask import fill_holes_per_slice, largest_component

DEFAULT_THRESHOLD_FRACTION = 0.08
"""``t``; chosen from ``benchmarks/bench_body_mask.py`` (brain and pelvis phantoms, MR simulated from a real CT)."""
DEFAULT_DILATION_MM = 10.0
"""SynthRAD's margin around the body (in-plane)."""
DEFAULT_OPENING_MM = 2.0
DEFAULT_CLOSING_MM = 4.0
_LOW_PERCENTILE, _HIGH_PERCENTILE = 2.5, 97.5
_MAX_SAMPLES = 4_000_000


def _ellipsoid(radius_mm: float, spacing_mm: Sequence[float], in_plane: bool) -> np.ndarray:
    """Boolean structuring element of a ball (or an axial disc) of ``radius_mm`` on a (z, y, x) grid."""
    radii = [0 if (in_plane and axis == 0) else max(int(radius_mm // s), 1) for axis, s in enumerate(spacing_mm)]
    grids = np.ogrid[tuple(slice(-r, r + 1) for r in radii)]
    distance = sum((g * s / radius_mm) ** 2 for g, s in zip(grids, spacing_mm, strict=True))
    element = np.asarray(distance <= 1.0 + 1e-9)
    element[tuple(r for r in radii)] = True
    return element


def _step_elements(radius_mm: float, spacing_mm: Sequence[float]) -> list[np.ndarray]:
    """3×3×3 elements whose successive application approximates a ball of ``radius_mm`` (per-axis voxel radius from
    the spacing; alternating 6- and 26-neighbour steps give an octagon-like shape). Much faster than one big ball."""
    radius = [int(radius_mm // s) for s in spacing_mm]
    elements = []
    for step in range(max(radius)):
        active = [step < r for r in radius]
        element = np.zeros((3, 3, 3), dtype=bool)
        if step % 2 == 1:
            element[tuple(slice(0, 3) if a else slice(1, 2) for a in active)] = True
        else:
            element[1, 1, 1] = True
            for axis, a in enumerate(active):
                if a:
                    line: list[int | slice] = [1, 1, 1]
                    line[axis] = slice(0, 3)
                    element[tuple(line)] = True
        elements.append(element)
    return elements


def _close(mask: np.ndarray, spacing_mm: Sequence[float], radius_mm: float) -> np.ndarray:
    """Morphological closing by about ``radius_mm``; the volume is edge-padded first, so a body cut by the field of
    view is not eroded at the cut."""
    elements = _step_elements(radius_mm, spacing_mm)
    if not elements:
        return mask.copy()
    pad = [int(radius_mm // s) + 1 for s in spacing_mm]
    work = np.pad(mask, [(p, p) for p in pad], mode="edge")
    for element in elements:
        work = ndimage.binary_dilation(work, structure=element)
    for element in elements:
        work = ndimage.binary_erosion(work, structure=element, border_value=1)
    return work[tuple(slice(p, p + n) for p, n in zip(pad, mask.shape, strict=True))]


def _dilate_in_plane(mask: np.ndarray, spacing_mm: Sequence[float], radius_mm: float) -> np.ndarray:
    """Euclidean in-plane dilation by ``radius_mm`` on the mask's bounding box plus the margin (slice by slice)."""
    if radius_mm <= 0 or not mask.any():
        return mask.copy()
    margin = [int(np.ceil(radius_mm / s)) + 1 for s in spacing_mm[1:]]
    rows = np.nonzero(mask.any(axis=(0, 2)))[0]
    cols = np.nonzero(mask.any(axis=(0, 1)))[0]
    y0, y1 = max(int(rows[0]) - margin[0], 0), min(int(rows[-1]) + margin[0] + 1, mask.shape[1])
    x0, x1 = max(int(cols[0]) - margin[1], 0), min(int(cols[-1]) + margin[1] + 1, mask.shape[2])
    out = np.zeros_like(mask)
    for z in np.nonzero(mask.any(axis=(1, 2)))[0]:
        piece = mask[z, y0:y1, x0:x1]
        distance = ndimage.distance_transform_edt(~piece, sampling=spacing_mm[1:])
        out[z, y0:y1, x0:x1] = distance <= radius_mm + 1e-6
    return out


def signal_range(mr: np.ndarray, name: str = "MR") -> tuple[float, float]:
    """(p2.5, p97.5) of the MR's intensities; :class:`ImageError` if there is NaN/inf or no signal (constant)."""
    values = np.asarray(mr)
    if values.size == 0:
        raise ImageError(f"{name}: the MR is empty")
    flat = values.reshape(-1)
    if np.issubdtype(flat.dtype, np.floating) and not np.all(np.isfinite(flat)):
        bad = int(np.count_nonzero(~np.isfinite(flat)))
        raise ImageError(f"{name}: {bad} voxels are NaN or infinite; cannot compute a body mask")
    step = max(flat.size // _MAX_SAMPLES, 1)
    low, high = np.percentile(flat[::step].astype(np.float32), [_LOW_PERCENTILE, _HIGH_PERCENTILE])
    if not high > low:
        low_all, high_all = float(flat.min()), float(flat.max())
        if high_all == low_all:
            raise ImageError(f"{name}: the MR has no signal (every voxel is {low_all:g}); cannot compute a body mask")
        raise ImageError(f"{name}: the MR has almost no signal (p2.5 = p97.5 = {float(low):g}, range "
                         f"{low_all:g}…{high_all:g}); cannot compute a body mask")
    return float(low), float(high)


def body_mask_array(
    mr: np.ndarray,
    spacing_mm: Sequence[float],
    threshold_fraction: float = DEFAULT_THRESHOLD_FRACTION,
    dilation_mm: float = DEFAULT_DILATION_MM,
    opening_mm: float = DEFAULT_OPENING_MM,
    closing_mm: float = DEFAULT_CLOSING_MM,
    name: str = "MR",
) -> np.ndarray:
    """Body mask (z, y, x) uint8 of an MR array (z, y, x) with ``spacing_mm`` in (z, y, x) order.

    Raises :class:`ImageError` naming ``name`` for NaN/inf, no signal, or when nothing is left after the opening.
    """
    if np.ndim(mr) != 3:
        raise ImageError(f"{name}: expected a 3-D MR, got {np.ndim(mr)}-D")
    if not 0.0 < threshold_fraction < 1.0:
        raise ValueError(f"threshold_fraction must be in (0, 1), got {threshold_fraction}")
    spacing_mm = tuple(float(s) for s in spacing_mm)
    low, high = signal_range(mr, name)
    binary = np.asarray(mr) > low + threshold_fraction * (high - low)
    if opening_mm > 0:
        binary = ndimage.binary_opening(binary, structure=_ellipsoid(opening_mm, spacing_mm, in_plane=True))
    body = largest_component(binary)
    del binary
    if not body.any():
        raise ImageError(f"{name}: no body found (nothing above the threshold survives the opening)")
    if closing_mm > 0:
        body = _close(body, spacing_mm, closing_mm)
    body = ndimage.binary_fill_holes(body)
    body = fill_holes_per_slice(body)
    return _dilate_in_plane(body, spacing_mm, dilation_mm).astype(np.uint8)


def body_mask_from_mr(
    mr_image: sitk.Image,
    threshold_fraction: float = DEFAULT_THRESHOLD_FRACTION,
    dilation_mm: float = DEFAULT_DILATION_MM,
    name: str = "MR",
    **options: float,
) -> sitk.Image:
    """Body mask (uint8 0/1) with the MR's geometry; see :func:`body_mask_array` for the options and errors."""
    if mr_image.GetDimension() != 3 or mr_image.GetNumberOfComponentsPerPixel() != 1:
        raise ImageError(f"{name}: expected a single-component 3-D MR")
    mr = sitk.GetArrayViewFromImage(mr_image)
    spacing_zyx = tuple(float(s) for s in mr_image.GetSpacing()[::-1])
    mask = body_mask_array(mr, spacing_zyx, threshold_fraction, dilation_mm, name=name, **options)
    return array_to_image(mask, mr_image)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice coefficient of two binary volumes (1.0 when both are empty)."""
    a, b = np.asarray(a) > 0, np.asarray(b) > 0
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(a, b).sum()) / total
