"""Intensity-only baseline: a fitted map from normalised MR intensity to HU, the floor a model must beat.

Fitting works on a joint histogram of (normalised MR, HU) over the body-mask voxels of the training cases:
256 MR bins over [-1, 1] (MR normalised by :func:`synthct.intensity.normalise_mr`) x 2 HU bins over
[-1024, 3072). Candidate maps, all minimising absolute error (the metric is MAE):

- ``median_lut``: the conditional median HU of each MR bin (pooled with its two neighbours), interpolated between
  bin centres: the best any intensity-only map can do on the training data, up to binning;
- ``isotonic``: the best monotone map (L1 isotonic regression by pool-adjacent-violators with block medians),
  increasing or decreasing, whichever fits better;
- ``linear``: a least-absolute-deviation straight line.

``auto`` (default) picks the candidate with the lowest MAE in leave-cases-out cross-validation on the training
split (never on the validation split), refits it on all training cases, and scores the validation cases through
:func:`synthct.intensity.finalise_sct` (-1000 HU outside the mask) with :func:`synthct.metrics.compute_metrics`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from synthct.atomic import write_json_atomic
from synthct.dataset import Case, find_cases, load_case, make_split, read_split, select_cases
from synthct.intensity import MrScaling, finalise_sct, normalise_mr
from synthct.metrics import aggregate, compute_metrics

log = logging.getLogger(__name__)

N_MR_BINS = 256
HU_LOW = -1024.0
HU_BIN = 2.0
N_HU_BINS = 2048
METHODS = ("median_lut", "isotonic", "linear")
MR_CENTRES = (-1.0 + (np.arange(N_MR_BINS) + 0.5) * (2.0 / N_MR_BINS)).astype(np.float64)
HU_CENTRES = HU_LOW + (np.arange(N_HU_BINS) + 0.5) * HU_BIN


@dataclass(frozen=True)
class Mapping:
    """A fitted MR → HU map: HU at each MR bin centre, linearly interpolated (constant beyond the ends)."""

    method: str
    mr_centres: np.ndarray
    hu: np.ndarray
    mr_rule: MrScaling = "max"
    mr_percentile: float = 99.5

    def predict(self, normalised_mr: np.ndarray) -> np.ndarray:
        """HU (float32) for normalised MR values."""
        return np.interp(normalised_mr, self.mr_centres, self.hu).astype(np.float32)

    def predict_case(self, mr: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Synthetic CT (int16 HU, -1000 outside the mask) of one case's raw MR."""
        normalised = normalise_mr(mr, mask, self.mr_rule, self.mr_percentile)
        return finalise_sct(self.predict(normalised), mask)

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "mr_normalisation": {"rule": self.mr_rule, "percentile": self.mr_percentile},
                "normalised_mr": [round(float(v), 6) for v in self.mr_centres],
                "hu": [round(float(v), 3) for v in self.hu]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Mapping:
        norm = data["mr_normalisation"]
        return cls(data["method"], np.asarray(data["normalised_mr"], dtype=np.float64),
                   np.asarray(data["hu"], dtype=np.float64), norm["rule"], float(norm["percentile"]))


def joint_histogram(normalised_mr: np.ndarray, hu: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(N_MR_BINS, N_HU_BINS) int64 counts of (normalised MR, HU) over the voxels where ``mask`` > 0."""
    inside = np.asarray(mask) > 0
    mr_bin = np.clip(((normalised_mr[inside] + 1.0) * (N_MR_BINS / 2.0)).astype(np.int64), 0, N_MR_BINS - 1)
    hu_bin = np.clip(((hu[inside] - HU_LOW) / HU_BIN).astype(np.int64), 0, N_HU_BINS - 1)
    counts = np.bincount(mr_bin * N_HU_BINS + hu_bin, minlength=N_MR_BINS * N_HU_BINS)
    return counts.reshape(N_MR_BINS, N_HU_BINS)


def _weighted_median(histogram: np.ndarray) -> float:
    cumulative = np.cumsum(histogram)
    return float(HU_CENTRES[int(np.searchsorted(cumulative, cumulative[-1] / 2.0))])


def _fill_empty(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    present = counts > 0
    return np.interp(MR_CENTRES, MR_CENTRES[present], values[present])


def _median_lut(table: np.ndarray) -> np.ndarray:
    pooled = table.copy()
    pooled[1:] += table[:-1]
    pooled[:-1] += table[1:]
    counts = pooled.sum(axis=1)
    values = np.array([_weighted_median(row) if n else 0.0 for row, n in zip(pooled, counts, strict=True)])
    return _fill_empty(values, counts)


def _isotonic(table: np.ndarray, increasing: bool) -> np.ndarray:
    """L1 isotonic regression over MR bins: pool adjacent violators, each block at its weighted median."""
    counts = table.sum(axis=1)
    order = [b for b in range(N_MR_BINS) if counts[b] > 0]
    if not increasing:
        order.reverse()
    blocks: list[tuple[np.ndarray, float, list[int]]] = []
    for b in order:
        histogram = table[b].astype(np.int64)
        blocks.append((histogram, _weighted_median(histogram), [b]))
        while len(blocks) >= 2 and blocks[-2][1] > blocks[-1][1]:
            (h2, _, b2), (h1, _, b1) = blocks.pop(), blocks.pop()
            merged = h1 + h2
            blocks.append((merged, _weighted_median(merged), b1 + b2))
    values = np.zeros(N_MR_BINS)
    for _, value, members in blocks:
        values[members] = value
    return _fill_empty(values, counts)


def _linear(table: np.ndarray, iterations: int = 30) -> np.ndarray:
    """Least-absolute-deviation line by iteratively reweighted least squares on the histogram cells."""
    mr_index, hu_index = np.nonzero(table)
    x, y, w = MR_CENTRES[mr_index], HU_CENTRES[hu_index], table[mr_index, hu_index].astype(np.float64)
    design = np.stack([np.ones_like(x), x], axis=1)
    coef: np.ndarray = np.zeros(2)
    for _ in range(iterations):
        residual = np.abs(y - design @ coef)
        weights = w / np.maximum(residual, 1.0)
        coef = np.linalg.solve(design.T @ (design * weights[:, None]), design.T @ (weights * y))
    return coef[0] + coef[1] * MR_CENTRES


def fit_table(table: np.ndarray, method: str) -> np.ndarray:
    """HU at each MR bin centre for ``method`` (see the module docstring) fitted to a joint histogram."""
    if table.sum() == 0:
        raise ValueError("no training voxels: the joint histogram is empty")
    if method == "median_lut":
        return _median_lut(table)
    if method == "isotonic":
        fits = [_isotonic(table, increasing) for increasing in (True, False)]
        return min(fits, key=lambda fit: table_mae(table, fit))
    if method == "linear":
        return _linear(table)
    raise ValueError(f"unknown baseline method {method!r} (expected one of {METHODS} or 'auto')")


def table_mae(table: np.ndarray, hu_per_bin: np.ndarray) -> float:
    """Mean absolute error (HU) of a per-bin prediction over a joint histogram's voxels (bin-centre values)."""
    total = table.sum()
    if total == 0:
        raise ValueError("empty joint histogram")
    errors = np.abs(HU_CENTRES[None, :] - np.asarray(hu_per_bin)[:, None])
    return float((table * errors).sum() / total)


def case_histogram(case: Case, rule: MrScaling = "max", percentile: float = 99.5) -> np.ndarray:
    """Joint histogram of one case (MR normalised with ``rule``)."""
    volumes = load_case(case)
    if volumes.ct is None:
        raise ValueError(f"{case.case_id}: the baseline needs a CT")
    normalised = normalise_mr(volumes.mr, volumes.mask, rule, percentile)
    return joint_histogram(normalised, volumes.ct, volumes.mask)


def fit_baseline(tables: Sequence[np.ndarray], method: str = "auto", rule: MrScaling = "max",
                 percentile: float = 99.5, folds: int = 4) -> tuple[Mapping, dict[str, float]]:
    """Fit on per-case joint histograms. With ``auto``, choose the method by leave-cases-out cross-validated MAE
    (``folds`` groups of training cases). Returns the mapping (refit on all cases) and the CV MAE per method."""
    if not tables:
        raise ValueError("no training cases")
    total = np.sum(tables, axis=0)
    cv: dict[str, float] = {}
    if method == "auto":
        n_folds = min(folds, len(tables))
        if n_folds >= 2:
            groups = [list(range(k, len(tables), n_folds)) for k in range(n_folds)]
            for candidate in METHODS:
                errors = []
                for group in groups:
                    held_out = np.sum([tables[i] for i in group], axis=0)
                    errors.append(table_mae(held_out, fit_table(total - held_out, candidate)) * held_out.sum())
                cv[candidate] = float(np.sum(errors) / total.sum())
            method = min(cv, key=cv.__getitem__)
        else:
            method = "median_lut"
    elif method not in METHODS:
        raise ValueError(f"unknown baseline method {method!r} (expected one of {METHODS} or 'auto')")
    return Mapping(method, MR_CENTRES.copy(), fit_table(total, method), rule, percentile), cv


def run_baseline(
    data_root: str | os.PathLike[str],
    region: str,
    split: dict[str, Any] | str | os.PathLike[str] | None = None,
    seed: int = 0,
    method: str = "auto",
    mr_rule: MrScaling = "max",
    mr_percentile: float = 99.5,
    out_dir: str | os.PathLike[str] | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Fit the baseline on the training split of ``data_root`` (``region``) and score the validation split.

    ``split`` is a split dict, a split JSON path, or None (a seeded 80/20 split from ``seed``). Returns (and, with
    ``out_dir``, writes to ``out_dir/baseline.json``) ``{"region", "method", "cv_mae", "split", "cases": [{"id",
    "mae", "psnr", "ssim"}], "aggregates": {metric: {mean, std, ...}}, "mapping": {...}}``.
    """
    cases = find_cases(data_root, region=region)
    if split is None:
        split = make_split([c.case_id for c in cases], seed=seed)
    elif not isinstance(split, dict):
        split = read_split(split)
    train_cases = select_cases(cases, split["train"], "training split")
    val_cases = select_cases(cases, split["val"], "validation split")
    tables = [case_histogram(case, mr_rule, mr_percentile)
              for case in tqdm(train_cases, desc="baseline: fit", unit="case", disable=not progress)]
    mapping, cv = fit_baseline(tables, method, mr_rule, mr_percentile)
    log.info("baseline method %s (cross-validated MAE per method: %s)", mapping.method, cv)
    results: list[dict[str, str | float]] = []
    scores: list[dict[str, float]] = []
    for case in tqdm(val_cases, desc="baseline: score", unit="case", disable=not progress):
        volumes = load_case(case)
        assert volumes.ct is not None
        sct = mapping.predict_case(volumes.mr, volumes.mask)
        metrics = compute_metrics(volumes.ct, sct.astype(np.float32), volumes.mask)
        scores.append({k: float(v) for k, v in metrics.items()})
        results.append({"id": case.case_id, **scores[-1]})
    metric_names = list(scores[0]) if scores else []
    report = {
        "region": cases[0].region if cases else region,
        "data_root": str(Path(data_root).resolve()),
        "method": mapping.method,
        "cv_mae": cv,
        "split": {"seed": split.get("seed"), "train": list(split["train"]), "val": list(split["val"])},
        "cases": results,
        "aggregates": {name: aggregate(s[name] for s in scores) for name in metric_names},
        "mapping": mapping.to_dict(),
    }
    if out_dir is not None:
        write_json_atomic(Path(out_dir) / "baseline.json", report)
    return report
