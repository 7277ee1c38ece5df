"""Trust outputs (SPEC §14): a per-voxel uncertainty from test-time augmentation, and an out-of-distribution check.

numpy / scipy only (no torch, no runtime): the predictor is any callable of the window engine.

**Uncertainty.** The same network is run on transformed copies of the MR on the network's grid (z, y, x; LPS):
mirrored (``np.flip`` along an axis) and/or with the window grid shifted (the volume padded at its start, so every
64³ window sees the anatomy at another offset). Each prediction is mapped back, and the voxel-wise standard
deviation over all members (the plain prediction included, population std) is the uncertainty, in HU. The sCT
itself stays the plain prediction: turning the uncertainty on never changes the sCT.

**Test-time augmentation of the sCT** (``synthct predict --tta N``) uses the same members: the sCT becomes the mean
of the plain prediction and N − 1 mirrored ones (:func:`mirror_members`, :func:`tta_predict`); a member both modes
use is predicted once.

**Out-of-distribution check.** :func:`ood_features` describes a normalised MR inside its body mask by figures that
a model's training cases share: the intensity histogram (normalised MR u = MR / scale ∈ [0, 1]), a tissue-contrast
signature (the median intensity in shells of depth below the body surface relative to the body's median: in a T1
head the scalp fat is bright and the CSF at the centre dark, in a T2 the reverse), the bias-field balance (log ratio
of the medians of the two halves of the body along each axis), the largest dark connected region deep inside the
body (a signal void), how much of the body touches the in-plane edge of the image (a truncated field of view), and
the body's extent in mm. :func:`build_record` turns the training cases' figures into the ``trust`` record of
``model.json``: per feature its training values, centre (median) and scale (std, at least a fixed floor in the
feature's own units), the mean histogram, the spacing range, and a threshold calibrated leave-one-out on the
training cases. :func:`score_case` gives a case its per-feature deviations in scales, the score (the largest), and
the flag with its reasons.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from synthct.intensity import HU_MAX, HU_MIN
from synthct.sliding_window import sliding_window_predict

RECORD_VERSION = 1
HU_PER_UNIT = (HU_MAX - HU_MIN) / 2.0
"""HU per unit of the normalised CT (−1…1 ↔ −1024…3000 HU): 2012."""

# ----------------------------------------------------------------------------------------------- uncertainty
Flip = tuple[bool, bool, bool]
Shift = tuple[int, int, int]


@dataclass(frozen=True)
class Member:
    """One test-time transform on the network's grid (z, y, x): mirror the flagged axes, pad ``shift`` voxels at
    the start of each axis (moves the window grid relative to the anatomy)."""

    flip: Flip = (False, False, False)
    shift: Shift = (0, 0, 0)

    @property
    def is_identity(self) -> bool:
        return not any(self.flip) and not any(self.shift)

    def label(self) -> str:
        parts = [f"flip {''.join(a for a, f in zip('zyx', self.flip, strict=True) if f)}" if any(self.flip) else "",
                 f"shift {'×'.join(map(str, self.shift))}" if any(self.shift) else ""]
        return " + ".join(p for p in parts if p) or "plain"


UNCERTAINTY_MODES: dict[str, tuple[Member, ...]] = {
    "mirror": (Member((False, False, True)),),
    "mirror3": (Member((False, False, True)), Member((False, True, False)), Member((True, False, False))),
    "shift": (Member(shift=(16, 16, 16)), Member(shift=(0, 16, 0)), Member(shift=(16, 0, 16))),
    "mirror+shift": (Member((False, False, True)), Member(shift=(16, 16, 16)),
                     Member((False, False, True), (16, 16, 16))),
}
"""Members besides the plain prediction, by ``--uncertainty`` mode. A mode of k members costs k extra passes
of the window engine. ``mirror`` flips left–right (x in LPS: the anatomy's own near-symmetry, so a mirrored head or
pelvis is still a plausible input for a model trained without mirroring); ``mirror3`` flips each axis in turn
(anterior–posterior and head–feet too: for a recipe trained without mirroring these are inputs it never saw, so
the spread measures how much the prediction rests on orientation-dependent context rather than a posterior
spread — on the demo model it is the mode whose map follows the error best, ``benchmarks/bench_trust.py``);
``shift`` moves the window grid by half a stride of a 64³ patch at 50 % overlap (every window position is one the
model saw in training, which samples random patches)."""
DEFAULT_UNCERTAINTY_MODE = "mirror3"
DEFAULT_LEVELS_HU = (25.0, 50.0, 100.0)
"""Fixed levels (HU) whose share of body voxels every summary reports, besides the package's calibrated level."""


def member_predict(volume: np.ndarray, mask: np.ndarray, predictor: Callable[[np.ndarray], np.ndarray],
                   member: Member, **engine: Any) -> np.ndarray:
    """The window engine's prediction (normalised, z, y, x) of ``volume`` under ``member``, mapped back."""
    axes = tuple(a for a, f in enumerate(member.flip) if f)
    moved, moved_mask = (np.flip(volume, axes), np.flip(mask, axes)) if axes else (volume, mask)
    if any(member.shift):
        pad = [(s, 0) for s in member.shift]
        moved = np.pad(moved, pad, mode="constant", constant_values=np.float32(engine.get("pad_value", -1.0)))
        moved_mask = np.pad(moved_mask, pad, mode="constant", constant_values=False)
    output = sliding_window_predict(moved, predictor, mask=moved_mask, **engine)
    if any(member.shift):
        output = output[tuple(slice(s, None) for s in member.shift)]
    return np.ascontiguousarray(np.flip(output, axes) if axes else output)


MIRROR_ORDER: tuple[Flip, ...] = ((False, False, False), (False, False, True), (False, True, False),
                                  (True, False, False), (False, True, True), (True, False, True), (True, True, False),
                                  (True, True, True))
"""The mirrorings of ``--tta N``, in the order they are added (z, y, x flags): plain, left–right (x, the anatomy's
own near-symmetry), anterior–posterior, head–feet, then the pairs and all three (nnU-Net's 8 mirrorings)."""
TTA_MAX = len(MIRROR_ORDER)


def mirror_members(count: int) -> tuple[Member, ...]:
    """The first ``count`` (1…8) mirrorings of :data:`MIRROR_ORDER` as members, the plain one first."""
    if not 1 <= int(count) <= TTA_MAX:
        raise ValueError(f"test-time augmentation takes 1 to {TTA_MAX} mirrorings, got {count}")
    return tuple(Member(flip) for flip in MIRROR_ORDER[: int(count)])


def tta_predict(volume: np.ndarray, mask: np.ndarray, plain: np.ndarray,
                predictor: Callable[[np.ndarray], np.ndarray], tta: Sequence[Member] = (),
                spread: Sequence[Member] = (), **engine: Any) -> tuple[np.ndarray, np.ndarray | None]:
    """(mean, spread) from ``plain`` (the normalised identity prediction already made, z, y, x) and the members'.

    mean: float32 normalised, the mean of ``plain`` and the ``tta`` members' predictions (``plain`` itself when
    ``tta`` is empty). spread: the voxel-wise std in HU (float32) of ``plain`` and the ``spread`` members, as
    :func:`tta_spread_hu`; None when ``spread`` is empty. Identity members of ``tta`` are ``plain``; a member in
    both lists is predicted once. Memory: the running sum, the Welford mean and sum of squares, one member's prediction.
    """
    tta = [m for m in tta if not m.is_identity]
    spread = list(spread)
    total = np.array(plain, dtype=np.float32, copy=True) if tta else None
    mean = np.array(plain, dtype=np.float32, copy=True) if spread else None
    m2 = np.zeros_like(mean) if mean is not None else None
    count = 1
    for member in dict.fromkeys([*tta, *spread]):  # each distinct member once, in order
        value = member_predict(volume, mask, predictor, member, **engine)
        if total is not None and member in tta:
            total += value
        if mean is not None and m2 is not None and member in spread:
            count += 1
            delta = value - mean
            mean += delta / np.float32(count)
            m2 += delta * (value - mean)
            del delta
        del value
    average = total / np.float32(len(tta) + 1) if total is not None else np.asarray(plain, dtype=np.float32)
    if m2 is None:
        return average, None
    np.maximum(m2, 0.0, out=m2)
    return average, (np.sqrt(m2 / np.float32(count)) * np.float32(HU_PER_UNIT)).astype(np.float32)


def tta_spread_hu(volume: np.ndarray, mask: np.ndarray, plain: np.ndarray,
                  predictor: Callable[[np.ndarray], np.ndarray], members: Sequence[Member],
                  **engine: Any) -> np.ndarray:
    """Voxel-wise std (HU, float32, z, y, x) over ``plain`` (the normalised prediction already made) and the
    ``members``' predictions; a running (Welford) sum keeps memory at three volumes."""
    _, spread = tta_predict(volume, mask, plain, predictor, spread=members, **engine)
    assert spread is not None or not members
    return spread if spread is not None else np.zeros(np.shape(plain), dtype=np.float32)


def uncertainty_summary(uncertainty_hu: np.ndarray, body: np.ndarray, levels_hu: Sequence[float],
                        limit_hu: float | None) -> dict[str, Any]:
    """Mean and 95th percentile (HU) of the map inside ``body``, the share of body voxels above each level, and
    whether the mean exceeds the package's calibrated ``limit_hu`` (None: not calibrated)."""
    inside = np.asarray(uncertainty_hu)[np.asarray(body) > 0].astype(np.float32)
    if inside.size == 0:
        return {"mean_hu": None, "p95_hu": None, "above": {}, "limit_hu": limit_hu, "flagged": False}
    mean = float(inside.mean())
    summary = {"mean_hu": round(mean, 2), "p95_hu": round(float(np.percentile(inside, 95)), 2),
               "max_hu": round(float(inside.max()), 2),
               "above": {f"{level:g}": round(float(np.mean(inside > level)), 4) for level in levels_hu},
               "limit_hu": None if limit_hu is None else round(float(limit_hu), 2),
               "flagged": bool(limit_hu is not None and mean > limit_hu)}
    return summary


# ------------------------------------------------------------------------------------------------ OOD features
HIST_BINS = 40
DEPTH_SHELLS_MM = (0.0, 3.0, 8.0, 15.0, 30.0, math.inf)
VOID_LEVEL = 0.05
"""A voxel darker than this share of the normalisation scale counts towards a signal void."""
VOID_DEPTH_MM = 10.0
FEATURE_VOXELS = 4_000_000
"""Volumes above this are subsampled (every 2nd voxel per axis, …) before the features are computed."""


@dataclass(frozen=True)
class Feature:
    floor: float
    """Smallest scale (the feature's own units): training cases alike to within less are not over-trusted."""
    sided: str
    """``two``: too low or too high; ``high``: only too high counts."""
    kind: str
    """The reason a deviation is reported under."""
    unit: str = ""


FEATURES: dict[str, Feature] = {
    "histogram_w1": Feature(0.02, "high", "intensity distribution unlike training", "of the scale"),
    **{f"shell_{i}": Feature(0.06, "two", "tissue contrast unlike training", "× body median")
       for i in range(len(DEPTH_SHELLS_MM) - 1)},
    "bias_z": Feature(0.06, "two", "intensity bias field"),
    "bias_y": Feature(0.06, "two", "intensity bias field"),
    "bias_x": Feature(0.06, "two", "intensity bias field"),
    "void_ml": Feature(2.0, "high", "signal void inside the body", "ml"),
    "border_fraction": Feature(0.03, "high", "field of view cuts the body"),
    "extent_z_mm": Feature(15.0, "two", "body size unlike the training region", "mm"),
    "extent_y_mm": Feature(10.0, "two", "body size unlike the training region", "mm"),
    "extent_x_mm": Feature(10.0, "two", "body size unlike the training region", "mm"),
}
"""Scored features: floor of the scale, sidedness, reason. The floors are the smallest deviation worth a flag at a
threshold of 1 (calibrated in ``benchmarks/bench_trust.py``): e.g. 2 % of the scale in histogram W1, 6 % in a shell's
contrast ratio, 10 mm body width."""


def shell_label(index: int) -> str:
    low, high = DEPTH_SHELLS_MM[index], DEPTH_SHELLS_MM[index + 1]
    return f"{low:g}–{high:g} mm deep" if math.isfinite(high) else f"> {low:g} mm deep"


def _subsample(normalised: np.ndarray, mask: np.ndarray,
               spacing_zyx_mm: Sequence[float]) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    step = 1
    while normalised.size / step**3 > FEATURE_VOXELS:
        step += 1
    dz, dy, dx = (float(s) for s in spacing_zyx_mm)
    if step == 1:
        return normalised, mask, (dz, dy, dx)
    window = (slice(None, None, step),) * 3
    return normalised[window], mask[window], (dz * step, dy * step, dx * step)


def ood_features(normalised: np.ndarray, mask: np.ndarray, spacing_zyx_mm: Sequence[float]) -> dict[str, Any]:
    """Figures of one normalised MR (z, y, x, values −1…1, LPS orientation) inside ``mask`` at ``spacing_zyx_mm``.

    Returns the scalar features of :data:`FEATURES` (except ``histogram_w1``, which needs the record) and
    ``histogram`` (:data:`HIST_BINS` shares of the body's voxels over u = (n + 1) / 2 ∈ [0, 1]). A shell without
    voxels gives NaN (not scored).
    """
    volume, body, spacing = _subsample(np.asarray(normalised), np.asarray(mask) > 0, spacing_zyx_mm)
    if not body.any():
        raise ValueError("empty body mask: no features")
    u = (volume.astype(np.float32) + 1.0) / 2.0
    inside = u[body]
    histogram, _ = np.histogram(np.clip(inside, 0.0, 1.0), HIST_BINS, (0.0, 1.0))
    median = float(np.median(inside)) or 1e-6
    features: dict[str, Any] = {"histogram": (histogram / inside.size).round(6).tolist(),
                                "quantiles": [round(float(q), 4) for q in np.percentile(inside, (5, 25, 50, 75, 95))]}
    depth = ndimage.distance_transform_edt(np.pad(body, 1), sampling=spacing)[1:-1, 1:-1, 1:-1]
    for index in range(len(DEPTH_SHELLS_MM) - 1):
        shell = body & (depth > DEPTH_SHELLS_MM[index]) & (depth <= DEPTH_SHELLS_MM[index + 1])
        features[f"shell_{index}"] = float(np.median(u[shell]) / median) if shell.sum() >= 20 else math.nan
    coordinates = np.nonzero(body)
    for axis, name in enumerate("zyx"):
        centre = float(np.mean(coordinates[axis]))
        low = inside[coordinates[axis] < centre]
        high = inside[coordinates[axis] >= centre]
        ratio = (np.median(low) + 1e-3) / (np.median(high) + 1e-3) if low.size and high.size else 1.0
        features[f"bias_{name}"] = float(np.log(ratio))
    dark = body & (depth > VOID_DEPTH_MM) & (u < VOID_LEVEL)
    void = 0.0
    if dark.any():
        labels, _ = ndimage.label(dark)
        void = float(np.bincount(labels.ravel())[1:].max()) * float(np.prod(spacing)) / 1000.0
    features["void_ml"] = void
    edge = np.zeros_like(body)
    edge[:, [0, -1], :] = True
    edge[:, :, [0, -1]] = True
    slices = body.any(axis=(1, 2))
    touching = (body & edge).any(axis=(1, 2))
    features["border_fraction"] = float(touching.sum() / max(int(slices.sum()), 1))
    for axis, name in enumerate("zyx"):
        extent = np.nonzero(body.any(axis=tuple(a for a in range(3) if a != axis)))[0]
        features[f"extent_{name}_mm"] = float((extent[-1] - extent[0] + 1) * spacing[axis])
    return features


def histogram_w1(histogram: Sequence[float], reference: Sequence[float]) -> float:
    """Wasserstein-1 (earth mover's) distance between two histograms on [0, 1] (shares of the normalisation scale)."""
    a, b = np.asarray(histogram, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    a, b = a / (a.sum() or 1.0), b / (b.sum() or 1.0)
    return float(np.abs(np.cumsum(a) - np.cumsum(b)).sum() / len(a))


# ---------------------------------------------------------------------------------------------- the record
MIN_THRESHOLD = 3.0
"""The flag threshold (in feature scales) is never below this, whatever the leave-one-out scores."""
THRESHOLD_MARGIN = 1.5
"""The threshold is this × the largest leave-one-out score of the training cases (at least :data:`MIN_THRESHOLD`)."""
SPACING_MARGIN = 0.25
"""A spacing more than 25 % outside the training cases' range (per axis) is flagged."""


def _feature_stats(values: Sequence[float], feature: Feature) -> dict[str, Any]:
    finite = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    if finite.size == 0:
        return {"values": [None if v is None or not math.isfinite(v) else round(v, 6) for v in values],
                "centre": None, "scale": feature.floor}
    spread = float(finite.std(ddof=1)) if finite.size > 1 else 0.0
    return {"values": [None if v is None or not math.isfinite(v) else round(float(v), 6) for v in values],
            "centre": round(float(np.median(finite)), 6), "scale": round(max(spread, feature.floor), 6),
            "min": round(float(finite.min()), 6), "max": round(float(finite.max()), 6)}


def _record_from(cases: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Feature statistics of ``cases`` (each :func:`ood_features` output), histogram W1 against their own mean."""
    mean_hist = np.mean([c["histogram"] for c in cases], axis=0)
    stats: dict[str, Any] = {}
    for name, feature in FEATURES.items():
        if name == "histogram_w1":
            values = [histogram_w1(c["histogram"], mean_hist) for c in cases]
        else:
            values = [c.get(name, math.nan) for c in cases]
        stats[name] = _feature_stats(values, feature)
    return {"histogram_mean": mean_hist.round(6).tolist(), "features": stats}


def build_record(cases: Sequence[dict[str, Any]], spacings_zyx_mm: Sequence[Sequence[float]], region: str,
                 source: str) -> dict[str, Any]:
    """The ``trust`` record of ``model.json`` from the training cases' :func:`ood_features` and spacings (mm,
    z, y, x in the training orientation). The threshold is calibrated leave-one-out: each training case is scored
    against the record of the others; threshold = max(:data:`MIN_THRESHOLD`, :data:`THRESHOLD_MARGIN` × the
    largest such score)."""
    if len(cases) < 2:
        raise ValueError(f"the training record needs at least 2 cases, got {len(cases)}")
    record = {"version": RECORD_VERSION, "region": region, "cases": len(cases), "source": source,
              **_record_from(cases)}
    spacing = np.asarray(spacings_zyx_mm, dtype=np.float64)
    record["spacing_zyx_mm"] = {"min": spacing.min(axis=0).round(4).tolist(),
                                "max": spacing.max(axis=0).round(4).tolist()}
    loo = []
    for index, case in enumerate(cases):
        others = _record_from([c for i, c in enumerate(cases) if i != index])
        loo.append(_deviations(case, others)[0])
    threshold = max(MIN_THRESHOLD, THRESHOLD_MARGIN * max(loo))
    record["threshold"] = {"score": round(threshold, 3), "leave_one_out": [round(s, 3) for s in loo],
                           "rule": f"max({MIN_THRESHOLD:g}, {THRESHOLD_MARGIN:g} × the largest leave-one-out score "
                                   "of the training cases)"}
    return record


def _deviations(case: dict[str, Any], record: dict[str, Any]) -> tuple[float, dict[str, float]]:
    """(score, per-feature deviation in scales) of ``case`` against ``record``."""
    deviations: dict[str, float] = {}
    for name, feature in FEATURES.items():
        stats = record["features"].get(name)
        if stats is None or stats.get("centre") is None:
            continue
        value = histogram_w1(case["histogram"], record["histogram_mean"]) if name == "histogram_w1" \
            else case.get(name, math.nan)
        if value is None or not math.isfinite(value):
            continue
        z = (value - stats["centre"]) / stats["scale"]
        deviations[name] = max(z, 0.0) if feature.sided == "high" else abs(z)
    return (max(deviations.values()) if deviations else 0.0), deviations


def validate_record(record: Any, where: str = "trust") -> None:
    """Raise ``ValueError`` unless ``record`` is a usable ``trust`` record of this version."""
    if not isinstance(record, dict):
        raise ValueError(f"{where} must be an object")
    if record.get("version") != RECORD_VERSION:
        raise ValueError(f"{where}.version must be {RECORD_VERSION}, got {record.get('version')!r}")
    mean = record.get("histogram_mean")
    if not (isinstance(mean, list) and len(mean) == HIST_BINS and all(isinstance(v, int | float) for v in mean)):
        raise ValueError(f"{where}.histogram_mean must be {HIST_BINS} numbers")
    features = record.get("features")
    if not isinstance(features, dict) or not all(isinstance(s, dict) and isinstance(s.get("scale"), int | float)
                                                 and s["scale"] > 0 for s in features.values()):
        raise ValueError(f"{where}.features must map names to objects with a positive scale")
    threshold = record.get("threshold")
    if not (isinstance(threshold, dict) and isinstance(threshold.get("score"), int | float)
            and threshold["score"] > 0):
        raise ValueError(f"{where}.threshold.score must be a positive number")
    spacing = record.get("spacing_zyx_mm")
    if not (isinstance(spacing, dict) and all(isinstance(spacing.get(k), list) and len(spacing[k]) == 3
                                              for k in ("min", "max"))):
        raise ValueError(f"{where}.spacing_zyx_mm must hold 3-value 'min' and 'max'")
    unc = record.get("uncertainty")
    if unc is not None and not (isinstance(unc, dict) and isinstance(unc.get("mode"), str)
                                and unc["mode"] in UNCERTAINTY_MODES
                                and isinstance(unc.get("case_limit_hu"), int | float)):
        raise ValueError(f"{where}.uncertainty must name a mode of {sorted(UNCERTAINTY_MODES)} and a case_limit_hu")


def _describe(name: str, value: float, stats: dict[str, Any]) -> str:
    feature = FEATURES[name]
    low, high = stats.get("min"), stats.get("max")
    label = {"histogram_w1": "histogram distance", "void_ml": "dark region deep in the body",
             "border_fraction": "share of body slices touching the image edge"}.get(name, name)
    if name.startswith("shell_"):
        label = f"median intensity {shell_label(int(name.split('_')[1]))}"
    elif name.startswith("bias_"):
        label = f"log intensity ratio of the two halves along {name[-1]}"
    elif name.startswith("extent_"):
        label = f"body extent along {name[7]}"
    span = f" (training {low:.3g}–{high:.3g})" if low is not None else ""
    return f"{feature.kind}: {label} {value:.3g}{(' ' + feature.unit) if feature.unit else ''}{span}"


def score_case(features: dict[str, Any], record: dict[str, Any],
               source_spacing_zyx_mm: Sequence[float] | None = None, region: str | None = None) -> dict[str, Any]:
    """The OOD result of one case: ``score`` (largest deviation, in feature scales), ``threshold``, ``flagged``,
    ``reasons`` (one line per feature above the threshold, worst first, and a spacing outside the training range),
    ``deviations`` per feature. ``source_spacing_zyx_mm``: the MR's own spacing in the training orientation;
    ``region``: the region the case was declared as (a mismatch with the record's region is a reason)."""
    score, deviations = _deviations(features, record)
    threshold = float(record["threshold"]["score"])
    reasons = []
    for name in sorted(deviations, key=lambda k: deviations[k], reverse=True):
        if deviations[name] > threshold:
            value = histogram_w1(features["histogram"], record["histogram_mean"]) if name == "histogram_w1" \
                else features[name]
            reasons.append(f"{_describe(name, value, record['features'][name])}; {deviations[name]:.1f} scales")
    if source_spacing_zyx_mm is not None:
        low = np.asarray(record["spacing_zyx_mm"]["min"]) * (1 - SPACING_MARGIN)
        high = np.asarray(record["spacing_zyx_mm"]["max"]) * (1 + SPACING_MARGIN)
        spacing = np.asarray(source_spacing_zyx_mm, dtype=np.float64)
        if np.any(spacing < low) or np.any(spacing > high):
            reasons.append("spacing outside training: " + " × ".join(f"{v:g}" for v in spacing) + " mm (z, y, x; "
                           "training " + " × ".join(f"{a:g}–{b:g}" for a, b in zip(record["spacing_zyx_mm"]["min"],
                                                                                   record["spacing_zyx_mm"]["max"],
                                                                                   strict=True)) + " mm)")
    if region is not None and region != record.get("region"):
        reasons.append(f"region mismatch: the case is declared {region!r}, the model was trained on "
                       f"{record.get('region')!r}")
    return {"checked": True, "score": round(score, 3), "threshold": round(threshold, 3), "flagged": bool(reasons),
            "reasons": reasons, "deviations": {k: round(v, 3) for k, v in deviations.items()}}
