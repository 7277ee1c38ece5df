"""Intensity conventions (paper eq. 1, SPEC §2): the single place they live.

CT: HU clipped to [-1024, 3000] maps linearly to [-1, 1]. MR: divided by its maximum inside the body mask
(or a robust percentile), mapped to [-1, 1]. Outside the body the synthetic CT is air, -1000 HU.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

HU_MIN = -1024.0
"""Lowest HU of the model's range (maps to -1)."""
HU_MAX = 3000.0
"""Highest HU of the model's range (maps to +1)."""
BACKGROUND_HU = -1000
"""Value of the synthetic CT outside the body mask (SynthRAD's background)."""

MrScaling = Literal["max", "percentile"]


def normalise_ct(hu: np.ndarray) -> np.ndarray:
    """HU → normalised CT in [-1, 1]: ``n = (clip(HU) + 1024) / 4024 * 2 - 1``. Returns float32."""
    clipped = np.clip(np.asarray(hu, dtype=np.float32), HU_MIN, HU_MAX)
    return ((clipped - HU_MIN) / (HU_MAX - HU_MIN) * 2.0 - 1.0).astype(np.float32, copy=False)


def denormalise_ct(normalised: np.ndarray) -> np.ndarray:
    """Normalised CT → HU: ``HU = (n + 1) / 2 * 4024 - 1024``. Returns float32 (not clipped)."""
    n = np.asarray(normalised, dtype=np.float32)
    return ((n + 1.0) / 2.0 * (HU_MAX - HU_MIN) + HU_MIN).astype(np.float32, copy=False)


def mr_scale(mr: np.ndarray, mask: np.ndarray | None, rule: MrScaling = "max", percentile: float = 99.5) -> float:
    """The MR intensity that maps to +1: the maximum (paper) or a percentile of the MR inside ``mask``.

    Raises ``ValueError`` for an empty mask or a non-positive scale (an all-zero MR).
    """
    values = np.asarray(mr)[mask > 0] if mask is not None else np.asarray(mr).ravel()
    if values.size == 0:
        raise ValueError("the body mask is empty: cannot normalise the MR")
    if rule == "max":
        scale = float(np.max(values))
    elif rule == "percentile":
        if not 0.0 < percentile <= 100.0:
            raise ValueError(f"MR percentile must be in (0, 100], got {percentile}")
        scale = float(np.percentile(values, percentile))
    else:
        raise ValueError(f"unknown MR scaling rule {rule!r} (expected 'max' or 'percentile')")
    if not np.isfinite(scale) or scale <= 0:
        raise ValueError(f"MR scale is {scale}: the MR inside the body mask has no positive intensity")
    return scale


def normalise_mr(
    mr: np.ndarray, mask: np.ndarray | None, rule: MrScaling = "max", percentile: float = 99.5
) -> np.ndarray:
    """MR → normalised MR in [-1, 1]: ``n = MR / scale * 2 - 1``, scale from :func:`mr_scale`.

    Values are clipped to [-1, 1] (voxels outside the mask, or above the percentile). Returns float32.
    """
    scale = mr_scale(mr, mask, rule, percentile)
    normalised = np.asarray(mr, dtype=np.float32) / np.float32(scale) * 2.0 - 1.0
    return np.clip(normalised, -1.0, 1.0).astype(np.float32, copy=False)


def finalise_sct(hu: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Predicted HU → output sCT: clipped to the model's HU range, rounded, background HU outside ``mask``, int16."""
    out = np.rint(np.clip(np.asarray(hu, dtype=np.float32), HU_MIN, HU_MAX)).astype(np.int16)
    out[np.asarray(mask) == 0] = BACKGROUND_HU
    return out
