"""Dose differences between the plan on the CT and its recalculation on the sCT (SynthRAD 2023 definitions).

All doses in Gy on the same (z, y, x) dose grid; results in % of the prescription unless named otherwise.
"""

from __future__ import annotations

import numpy as np


def dose_mae_pct(ct_gy: np.ndarray, sct_gy: np.ndarray, prescription_gy: float, threshold_pct: float = 90.0) -> float:
    """Mean |sCT dose − CT dose| over voxels whose CT dose ≥ ``threshold_pct`` % of Rx, in % of Rx."""
    region = ct_gy >= threshold_pct / 100.0 * prescription_gy
    if not np.any(region):
        raise ValueError(f"dose MAE: no voxel receives {threshold_pct:g} % of the prescription on the CT")
    return float(100.0 * np.mean(np.abs(sct_gy[region] - ct_gy[region])) / prescription_gy)


def dose_at_volume(dose_gy: np.ndarray, mask: np.ndarray, volume_pct: float) -> float:
    """D_v: the minimum dose (Gy) received by the hottest ``volume_pct`` % of the structure (D98, D2)."""
    values = dose_gy[mask]
    if values.size == 0:
        raise ValueError("DVH: empty structure")
    return float(np.percentile(values, 100.0 - volume_pct))


def dvh_metrics(dose_gy: np.ndarray, ptv: np.ndarray, oars: dict[str, np.ndarray]) -> dict[str, float]:
    """``{ptv_d98_gy, <oar>_d2_gy, <oar>_dmean_gy}`` of one dose."""
    values = {"ptv_d98_gy": dose_at_volume(dose_gy, ptv, 98.0)}
    for name, mask in oars.items():
        values[f"{name}_d2_gy"] = dose_at_volume(dose_gy, mask, 2.0)
        values[f"{name}_dmean_gy"] = float(dose_gy[mask].mean())
    return values


def dvh_differences_pct(ct: dict[str, float], sct: dict[str, float], prescription_gy: float) -> dict[str, float]:
    """``{<metric>_diff_pct: 100 · (sCT − CT) / Rx}`` for each DVH metric (key without ``_gy``)."""
    return {f"{key[: -len('_gy')]}_diff_pct": 100.0 * (sct[key] - ct[key]) / prescription_gy for key in ct}


def cumulative_dvh(dose_gy: np.ndarray, mask: np.ndarray, bins_gy: np.ndarray) -> np.ndarray:
    """Volume % of the structure receiving at least each dose of ``bins_gy``."""
    values = np.sort(dose_gy[mask])
    if values.size == 0:
        return np.zeros_like(bins_gy, dtype=float)
    return 100.0 * (values.size - np.searchsorted(values, bins_gy, side="left")) / values.size
