"""Intensity conventions (paper eq. 1, SPEC §2): the single place they live.

CT: HU clipped to [-1024, 3000] maps linearly to [-1, 1]. MR: one of :data:`MR_RULES` with statistics inside the
body mask: divided by its maximum and mapped to [-1, 1] (paper), clipped to robust percentiles and mapped to
[-1, 1], or z-scored. Outside the body the synthetic CT is air, -1000 HU.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np

HU_MIN = -1024.0
"""Lowest HU of the model's range (maps to -1)."""
HU_MAX = 3000.0
"""Highest HU of the model's range (maps to +1)."""
BACKGROUND_HU = -1000
"""Value of the synthetic CT outside the body mask (SynthRAD's background)."""

MrRule = Literal["max", "percentile", "zscore"]
"""MR normalisation rules (:func:`normalise_mr`); the model package and the training cache record the one used."""
MR_RULES: tuple[MrRule, ...] = get_args(MrRule)
MrScaling = MrRule
"""Former name of :data:`MrRule`."""


@dataclass(frozen=True)
class MrStatistics:
    """What a rule measured inside the body: ``normalised = (MR - offset) / scale`` before the rule's range mapping."""

    rule: MrRule
    offset: float
    scale: float


def normalise_ct(hu: np.ndarray) -> np.ndarray:
    """HU → normalised CT in [-1, 1]: ``n = (clip(HU) + 1024) / 4024 * 2 - 1``. Returns float32."""
    clipped = np.clip(np.asarray(hu, dtype=np.float32), HU_MIN, HU_MAX)
    return ((clipped - HU_MIN) / (HU_MAX - HU_MIN) * 2.0 - 1.0).astype(np.float32, copy=False)


def denormalise_ct(normalised: np.ndarray) -> np.ndarray:
    """Normalised CT → HU: ``HU = (n + 1) / 2 * 4024 - 1024``. Returns float32 (not clipped)."""
    n = np.asarray(normalised, dtype=np.float32)
    return ((n + 1.0) / 2.0 * (HU_MAX - HU_MIN) + HU_MIN).astype(np.float32, copy=False)


def mr_statistics(mr: np.ndarray, mask: np.ndarray | None, rule: MrRule = "max",
                  percentile: float = 99.5) -> MrStatistics:
    """The rule's offset and scale, from the MR voxels inside ``mask`` (the whole MR when ``mask`` is None).

    max: offset 0, scale the maximum (paper). percentile: offset 0, scale the ``percentile`` percentile (in (0, 100];
    robust to a few bright voxels, the rule of every package written so far with "percentile", kept as it was).
    zscore: offset the mean, scale the standard deviation (nnU-Net's MR rule). Raises ``ValueError`` for an empty
    mask, an unknown rule, or an MR without contrast inside the mask (max: no positive intensity; percentile and
    zscore: constant).
    """
    values = np.asarray(mr)[np.asarray(mask) > 0] if mask is not None else np.asarray(mr).ravel()
    if values.size == 0:
        raise ValueError("the body mask is empty: cannot normalise the MR")
    if rule == "max":
        offset, scale = 0.0, float(np.max(values))
        if not np.isfinite(scale) or scale <= 0:
            raise ValueError(f"MR scale is {scale}: the MR inside the body mask has no positive intensity")
        return MrStatistics(rule, offset, scale)
    if rule == "percentile":
        if not 0.0 < percentile <= 100.0:
            raise ValueError(f"MR percentile must be in (0, 100], got {percentile}")
        offset, scale = 0.0, float(np.percentile(values, percentile))
    elif rule == "zscore":
        offset, scale = float(np.mean(values, dtype=np.float64)), float(np.std(values, dtype=np.float64))
    else:
        raise ValueError(f"unknown MR normalisation rule {rule!r} (expected one of {', '.join(MR_RULES)})")
    if not (np.isfinite(offset) and np.isfinite(scale)) or scale <= 0:
        raise ValueError(f"MR spread is {scale} ({rule}): the MR inside the body mask is constant or not finite")
    return MrStatistics(rule, offset, scale)


def apply_mr_statistics(mr: np.ndarray, statistics: MrStatistics) -> np.ndarray:
    """``mr`` (the whole volume or a crop of it) normalised with ``statistics`` measured on the whole volume.

    max and percentile: ``clip((MR - offset) / scale, 0, 1) * 2 - 1``, in [-1, 1] (MR 0 → -1 for max).
    zscore: ``(MR - offset) / scale``, not clipped. Returns float32.
    """
    shifted = np.asarray(mr, dtype=np.float32) - np.float32(statistics.offset)
    normalised = shifted / np.float32(statistics.scale)
    if statistics.rule == "zscore":
        return normalised.astype(np.float32, copy=False)
    return (np.clip(normalised, 0.0, 1.0) * 2.0 - 1.0).astype(np.float32, copy=False)


def normalised_background(statistics: MrStatistics) -> float:
    """The normalised value of MR 0 (air, background) under ``statistics``: what a normalised MR is padded with.

    max and percentile: exactly -1. zscore: ``-offset / scale`` (in float32, as :func:`apply_mr_statistics`
    computes it), which differs per case (typically about -2 to -4).
    """
    return float(apply_mr_statistics(np.zeros(1, dtype=np.float32), statistics)[0])


def normalise_mr(mr: np.ndarray, mask: np.ndarray | None, rule: MrRule = "max", percentile: float = 99.5) -> np.ndarray:
    """MR → normalised MR with ``rule`` (statistics inside the body ``mask``: :func:`mr_statistics`).

    max (paper): ``n = MR / max * 2 - 1``, clipped to [-1, 1] (voxels outside the mask may exceed the maximum).
    percentile: ``MR / percentile(MR in body) * 2 - 1``, clipped to [-1, 1]. zscore: mean 0 and standard deviation 1
    inside the body. Returns float32.
    """
    return apply_mr_statistics(mr, mr_statistics(mr, mask, rule, percentile))


def finalise_sct(hu: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Predicted HU → output sCT: clipped to the model's HU range, rounded, background HU outside ``mask``, int16."""
    out = np.rint(np.clip(np.asarray(hu, dtype=np.float32), HU_MIN, HU_MAX)).astype(np.int16)
    out[np.asarray(mask) == 0] = BACKGROUND_HU
    return out
