"""Body mask made like SynthRAD's: CT thresholded, largest component, holes filled per axial slice, dilated."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

_IN_SLICE = np.zeros((3, 3, 3), dtype=bool)
_IN_SLICE[1] = ndimage.generate_binary_structure(2, 1)


def largest_component(binary: np.ndarray) -> np.ndarray:
    """The largest 6-connected component of a boolean (z, y, x) volume (all False if it is empty)."""
    labelled, count = ndimage.label(binary)
    if count == 0:
        return np.zeros(binary.shape, dtype=bool)
    sizes = np.bincount(labelled.ravel())
    sizes[0] = 0
    return labelled == int(np.argmax(sizes))


def fill_holes_per_slice(binary: np.ndarray) -> np.ndarray:
    """Fill holes in every axial (z) slice: background not connected, within its slice, to the slice border."""
    labelled, count = ndimage.label(~binary, structure=_IN_SLICE)
    if count == 0:
        return binary.copy()
    border = np.concatenate([labelled[:, 0, :].ravel(), labelled[:, -1, :].ravel(),
                             labelled[:, :, 0].ravel(), labelled[:, :, -1].ravel()])
    outside = np.zeros(count + 1, dtype=bool)
    outside[np.unique(border)] = True
    outside[0] = True
    return binary | ~outside[labelled]


def dilate(binary: np.ndarray, spacing_mm: Sequence[float], radius_mm: float) -> np.ndarray:
    """Dilate by about ``radius_mm`` (per-axis voxel radius from the spacing; alternating 6- and 26-neighbour steps
    approximate a ball). Works on the bounding box only."""
    radius = [round(radius_mm / s) for s in spacing_mm]
    steps = max(radius)
    if steps == 0 or not binary.any():
        return binary.copy()
    nonzero = np.nonzero(binary.any(axis=(1, 2)))[0], np.nonzero(binary.any(axis=(0, 2)))[0], \
        np.nonzero(binary.any(axis=(0, 1)))[0]
    box = tuple(slice(max(int(n[0]) - r - 1, 0), min(int(n[-1]) + r + 2, size))
                for n, r, size in zip(nonzero, radius, binary.shape, strict=True))
    region = binary[box]
    for step in range(steps):
        active = [step < r for r in radius]
        structure = np.zeros((3, 3, 3), dtype=bool)
        index = tuple(slice(0, 3) if a else slice(1, 2) for a in active)
        if step % 2 == 1:
            structure[index] = True
        else:
            structure[1, 1, 1] = True
            for axis, a in enumerate(active):
                if a:
                    line: list[int | slice] = [1, 1, 1]
                    line[axis] = slice(0, 3)
                    structure[tuple(line)] = True
        region = ndimage.binary_dilation(region, structure=structure)
    out = np.zeros_like(binary)
    out[box] = region
    return out


def body_mask_from_ct(hu: np.ndarray, spacing_mm: Sequence[float], threshold_hu: float = -400.0,
                      dilation_mm: float = 4.0) -> np.ndarray:
    """Body mask (z, y, x) uint8 from a CT in HU: ``hu > threshold_hu``, largest component, holes filled per axial
    slice, dilated by ``dilation_mm``."""
    body = largest_component(np.asarray(hu) > threshold_hu)
    body = fill_holes_per_slice(body)
    return dilate(body, spacing_mm, dilation_mm).astype(np.uint8)
