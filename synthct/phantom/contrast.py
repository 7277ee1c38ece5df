"""How far MR intensity alone tells two tissues apart — the measure of how hard a phantom's MR → CT problem is.

On a real T1/T2 MR, cortical bone and air both sit at the noise floor: a voxel's intensity cannot say which it is,
only the anatomy around it can, while their CT values differ by more than 2000 HU. A phantom whose bone is a little
brighter than its air lets a model cheat with intensity; :func:`mr_overlap` measures that.

Both tissues are compared away from their boundaries (voxels of the tissue whose whole neighbourhood is that
tissue): a boundary voxel's MR holds its neighbours' signal through the scanner's point spread, on real images as
on the phantoms, and says nothing about the tissue's own signal.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage, stats

_CUBE = np.ones((3, 3, 3), dtype=bool)
_IN_PLANE = np.zeros((3, 3, 3), dtype=bool)
_IN_PLANE[1] = True


@dataclass(frozen=True)
class MrOverlap:
    """``in_range``: share of the first tissue's core voxels whose MR lies within the second tissue's MR range
    (its core's 1st to 99th percentile); ``inseparable``: how badly the best single MR threshold sorts voxels into
    the two tissues, as 1 - the Kolmogorov-Smirnov distance of their MR distributions (1 = no threshold does better
    than chance, 0 = one threshold separates them perfectly; its balanced accuracy is 1 - inseparable / 2);
    ``n_first`` / ``n_second``: core voxels compared; ``second_range``: that MR range (low, high)."""

    in_range: float
    inseparable: float
    n_first: int
    n_second: int
    second_range: tuple[float, float]


def core(labels: np.ndarray, label: int, in_plane: bool = False) -> np.ndarray:
    """Voxels of ``label`` whose 26 neighbours are all ``label`` (or, ``in_plane``, whose 8 neighbours in the axial
    slice are: for thick slices, whose blur along z is small). ``labels`` (z, y, x); returns a bool mask."""
    return np.asarray(ndimage.binary_erosion(labels == label, structure=_IN_PLANE if in_plane else _CUBE))


def mr_overlap(mr: np.ndarray, labels: np.ndarray, first: int, second: int, in_plane: bool = False
               ) -> MrOverlap:
    """How much the MR of tissue ``first`` overlaps that of tissue ``second`` (see :class:`MrOverlap`).

    ``mr`` and ``labels`` are (z, y, x) arrays of one case. Raises ``ValueError`` when either tissue has fewer than
    10 core voxels (nothing to compare)."""
    if mr.shape != labels.shape:
        raise ValueError(f"MR shape {mr.shape} differs from the label map's {labels.shape}")
    a = mr[core(labels, first, in_plane)].astype(np.float64)
    b = mr[core(labels, second, in_plane)].astype(np.float64)
    if a.size < 10 or b.size < 10:
        raise ValueError(f"too few core voxels to compare: {a.size} of label {first}, {b.size} of label {second}")
    low, high = np.percentile(b, [1.0, 99.0])
    in_range = float(np.mean((a >= low) & (a <= high)))
    distance = float(stats.ks_2samp(a, b).statistic)
    return MrOverlap(in_range, 1.0 - distance, int(a.size), int(b.size), (float(low), float(high)))
