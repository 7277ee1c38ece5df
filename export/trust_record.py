"""The package's ``trust`` record (SPEC §14): what the model was trained on, and its uncertainty's calibration.

``synthct export`` adds it when the checkpoint's training data is here; ``synthct trust-record`` adds (or redoes)
it for an existing package without re-exporting (``model.json`` is rewritten through
:func:`synthct.model_package.write_manifest`, which re-verifies every file's hash; the network files are untouched).

    synthct trust-record --model models/brain --data data/brain --split data/brain/split.json

The out-of-distribution features (:func:`synthct.trust.ood_features`) are computed from the training split's
cases, read as the trainer reads them: canonical orientation (axis permutation / flips), the package's MR
normalisation, the case's own spacing. The uncertainty's case limit is calibrated on the validation split's cases
with the package's default runtime: limit = :data:`UNCERTAINTY_LIMIT_FACTOR` × the largest validation case's
mean uncertainty; the voxel level is the median of their 95th percentiles. No torch here.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from synthct.dataset import Case, find_cases, load_case, read_split, select_cases
from synthct.geometry import canonical_reorientation
from synthct.intensity import MrRule, normalise_mr
from synthct.model_package import ModelPackage, load_model_package, write_manifest
from synthct.trust import DEFAULT_UNCERTAINTY_MODE, UNCERTAINTY_MODES, build_record, ood_features

log = logging.getLogger("synthct.export")

UNCERTAINTY_LIMIT_FACTOR = 1.5
MAX_CALIBRATION_CASES = 4


def case_features(case: Case, mr_rule: MrRule, mr_percentile: float) -> tuple[dict[str, Any], tuple[float, ...]]:
    """(:func:`synthct.trust.ood_features`, spacing z, y, x mm) of one training case in the canonical orientation."""
    volumes = load_case(case)
    reorientation = canonical_reorientation(volumes.image)
    mr = np.ascontiguousarray(reorientation.apply(volumes.mr))
    mask = np.ascontiguousarray(reorientation.apply(volumes.mask)) > 0
    x, y, z = reorientation.apply_to_image(volumes.image).GetSpacing()
    spacing = (float(z), float(y), float(x))
    normalised = normalise_mr(mr, mask, mr_rule, mr_percentile)
    return ood_features(normalised, mask, spacing), spacing


def split_cases(data: Path, region: str, split: Path | None) -> tuple[list[Case], list[Case], str]:
    """(training cases, validation cases, a description) of ``data``; without a split every case trains and none
    validates."""
    cases = find_cases(data, region)
    if not cases:
        raise ValueError(f"{data}: no {region} cases found")
    if split is None:
        return cases, [], f"all {len(cases)} {region} cases of {data} (no split given)"
    chosen = read_split(split)
    train = select_cases(cases, chosen["train"], "train")
    val = select_cases(cases, chosen.get("val", []), "val")
    return train, val, f"the {len(train)} training cases of {split} in {data}"


def calibration(mode: str, means: Sequence[float], p95s: Sequence[float],
                spearman: Sequence[float] = ()) -> dict[str, Any]:
    """The ``uncertainty`` calibration from validation cases' mean and 95th-percentile uncertainty (HU, inside the
    body) and, when their CTs were there, the voxel-wise Spearman correlation with |sCT − CT|."""
    if not means:
        raise ValueError("no validation case to calibrate the uncertainty on")
    return {"mode": mode, "cases": len(means), "case_means_hu": [round(float(v), 2) for v in means],
            "case_p95_hu": [round(float(v), 2) for v in p95s],
            "voxel_level_hu": round(float(np.median(p95s)), 2),
            "case_limit_hu": round(UNCERTAINTY_LIMIT_FACTOR * float(max(means)), 2),
            "spearman_voxel": [round(float(v), 3) for v in spearman],
            "rule": f"case limit {UNCERTAINTY_LIMIT_FACTOR:g} × the largest validation case's mean; voxel level "
                    "the median of their 95th percentiles"}


def calibrate_uncertainty(package: ModelPackage, cases: Sequence[Case], mode: str,
                          threads: int | None = None) -> dict[str, Any]:
    """Run ``mode``'s test-time augmentation on ``cases`` with the package's default runtime; the calibration."""
    from scipy.stats import spearmanr
    from synthct.algorithm.backends import make_predictor
    from synthct.algorithm.inference import TrustRequest, predict_case

    from synthct.io import read_image

    predictor = make_predictor(package, "auto", "cpu", threads)
    means, p95s, spearman = [], [], []
    started = time.perf_counter()
    for case in cases[:MAX_CALIBRATION_CASES]:
        mr, mask = read_image(case.mr), read_image(case.mask)
        trust = TrustRequest(uncertainty=mode, ood=False)
        sct, _ = predict_case(mr, mask, package, predictor, progress=False, trust=trust)
        assert trust.uncertainty_image is not None
        body = sitk.GetArrayViewFromImage(mask) > 0
        spread = sitk.GetArrayViewFromImage(trust.uncertainty_image)[body]
        means.append(float(spread.mean()))
        p95s.append(float(np.percentile(spread, 95)))
        if case.ct is not None:
            error = np.abs(sitk.GetArrayViewFromImage(sct)[body].astype(np.float32)
                           - sitk.GetArrayViewFromImage(read_image(case.ct))[body].astype(np.float32))
            spearman.append(float(spearmanr(spread, error).statistic))
    return {**calibration(mode, means, p95s, spearman), "seconds": round(time.perf_counter() - started, 1)}


def make_record(package: ModelPackage, data: Path, split: Path | None,
                uncertainty: str | None = DEFAULT_UNCERTAINTY_MODE, threads: int | None = None) -> dict[str, Any]:
    """The ``trust`` record of ``package`` from the dataset ``data`` (and its ``split``)."""
    train, val, source = split_cases(Path(data), package.region, split)
    features, spacings = [], []
    for case in train:
        found, spacing = case_features(case, package.mr_rule, package.mr_percentile)
        features.append(found)
        spacings.append(spacing)
    record = build_record(features, spacings, package.region, source)
    log.info("trust record: %d training cases, OOD threshold %.2f (leave-one-out scores %s)", len(features),
             record["threshold"]["score"], record["threshold"]["leave_one_out"])
    if uncertainty and val:
        record["uncertainty"] = calibrate_uncertainty(package, val, uncertainty, threads)
        log.info("trust record: uncertainty (%s) calibrated on %d validation case(s): case limit %.1f HU",
                 uncertainty, record["uncertainty"]["cases"], record["uncertainty"]["case_limit_hu"])
    elif uncertainty:
        log.warning("trust record: no validation cases: the uncertainty is not calibrated (no limit, no flag)")
    return record


def add_trust_record(package_dir: Path, data: Path, split: Path | None,
                     uncertainty: str | None = DEFAULT_UNCERTAINTY_MODE, threads: int | None = None) -> dict[str, Any]:
    """Compute the record and rewrite ``package_dir/model.json`` with it (hashes re-verified); returns it."""
    package = load_model_package(package_dir)
    record = make_record(package, data, split, uncertainty, threads)
    manifest = dict(package.manifest)
    manifest["trust"] = record
    write_manifest(package.directory, manifest)
    load_model_package(package.directory)
    return record


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", type=Path, required=True, help="model package folder (model.json)")
    parser.add_argument("--data", type=Path, required=True, help="the dataset the model was trained on")
    parser.add_argument("--split", type=Path, default=None,
                        help="its split.json (training cases: the record; validation cases: the uncertainty "
                             "calibration); default: every case trains, no calibration")
    parser.add_argument("--uncertainty", choices=(*UNCERTAINTY_MODES, "off"), default=DEFAULT_UNCERTAINTY_MODE,
                        help=f"test-time augmentation to calibrate (default {DEFAULT_UNCERTAINTY_MODE})")
    parser.add_argument("--threads", type=int, default=None, help="ONNX Runtime CPU threads")


def run(args: argparse.Namespace) -> int:
    try:
        record = add_trust_record(args.model, args.data, args.split,
                                  None if args.uncertainty == "off" else args.uncertainty, args.threads)
    except (ValueError, OSError) as exc:
        log.error("%s", exc)
        return 2
    log.info("%s: trust record written (%d training cases)", args.model / "model.json", record["cases"])
    return 0
