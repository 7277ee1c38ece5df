"""Gamma pass rate of an evaluated dose against a reference dose (pymedphys' gamma, numba-accelerated).

SynthRAD 2023: 2 %/2 mm, global (dose criterion in % of the reference maximum), 10 % low-dose cutoff (reference
voxels below 10 % of the reference maximum are not scored). A voxel passes when its gamma is ≤ 1.
"""

from __future__ import annotations

import logging

import numpy as np


def gamma_pass_rate(
    reference_gy: np.ndarray,
    evaluated_gy: np.ndarray,
    spacing_mm: tuple[float, ...],
    dose_pct: float = 2.0,
    distance_mm: float = 2.0,
    cutoff_pct: float = 10.0,
    interp_fraction: int = 5,
) -> float:
    """Global gamma pass rate (%) of ``evaluated_gy`` against ``reference_gy`` (same (z, y, x) grid, spacing mm).

    Raises ``ValueError`` for mismatched shapes, non-finite doses or a reference without dose.
    """
    from pymedphys import gamma

    if reference_gy.shape != evaluated_gy.shape:
        raise ValueError(f"gamma: dose grids differ in shape: {reference_gy.shape} vs {evaluated_gy.shape}")
    if not (np.all(np.isfinite(reference_gy)) and np.all(np.isfinite(evaluated_gy))):
        raise ValueError("gamma: dose holds NaN or infinite values")
    maximum = float(reference_gy.max(initial=0.0))
    if maximum <= 0.0:
        raise ValueError("gamma: the reference dose is zero everywhere")
    axes = tuple(np.arange(n, dtype=float) * s for n, s in zip(reference_gy.shape, spacing_mm, strict=True))
    previous = logging.root.manager.disable
    logging.disable(logging.INFO)  # pymedphys logs its settings on the root logger (and fails to format them)
    try:
        values = gamma(
            axes, reference_gy.astype(np.float64), axes, evaluated_gy.astype(np.float64),
            dose_percent_threshold=dose_pct, distance_mm_threshold=distance_mm, lower_percent_dose_cutoff=cutoff_pct,
            interp_fraction=interp_fraction, max_gamma=1.1, local_gamma=False, global_normalisation=maximum,
            skip_once_passed=True, quiet=True,
        )
    finally:
        logging.disable(previous)
    scored = np.isfinite(values)
    if not np.any(scored):
        raise ValueError("gamma: no voxel above the low-dose cutoff")
    return float(100.0 * np.count_nonzero(values[scored] <= 1.0) / np.count_nonzero(scored))
