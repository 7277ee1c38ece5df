"""Score jobs (prediction ↔ ground truth) and assemble metrics.json.

metrics.json = ``{"variant", "psnr_cap_db", "results": [one record per case], "aggregates": {metric: {mean, std,
min, max, 25pc, 50pc, 75pc, count}}, "cases": {"scored", "failed"}}``. A record holds ``case_id``, ``prediction``,
``ground_truth`` (CT file), the metrics (``null`` when the case failed), ``error`` (``null`` or a message naming the
file and the problem) and, in container mode, the grand-challenge job ``pk``. Aggregates cover scored cases only.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
from synthct.evaluation.cases import Job
from tqdm import tqdm

from synthct.atomic import write_json_atomic
from synthct.io import ImageError, geometry_differences, read_image
from synthct.metrics import METRIC_KEYS, PSNR_CAP_DB, Variant, aggregate, compute_metrics

log = logging.getLogger(__name__)

PictureMaker = Callable[[Job, dict[str, Any], "LoadedCase"], None]
DoseEvaluator = Callable[[Job, "LoadedCase"], dict[str, Any]]
"""Optional dose evaluation (:mod:`synthct.evaluation.dose`): record fields of one scored case; never raises for a bad
case."""


class LoadedCase:
    """Arrays of one case, (z, y, x): CT and sCT in HU (float32), mask (uint8), voxel spacing (z, y, x) in mm."""

    def __init__(self, ct_hu: np.ndarray, sct_hu: np.ndarray, mask: np.ndarray, spacing_mm: tuple[float, ...]):
        self.ct_hu = ct_hu
        self.sct_hu = sct_hu
        self.mask = mask
        self.spacing_mm = spacing_mm


def _array(image: sitk.Image, dtype: type) -> np.ndarray:
    return sitk.GetArrayFromImage(image).astype(dtype, copy=False)


def load_job(job: Job, strict_geometry: bool = True) -> LoadedCase:
    """Read and cross-check a job's CT, mask and prediction. Raises ``ImageError`` naming the file at fault.

    The prediction must have the CT's size; with ``strict_geometry`` also its spacing, origin and direction.
    """
    assert job.ground_truth is not None and job.prediction is not None
    gt = job.ground_truth
    assert gt.ct is not None and gt.mask is not None
    ct_image = read_image(gt.ct)
    mask_image = read_image(gt.mask)
    mask_problems = geometry_differences(ct_image, mask_image)
    if mask_problems:
        raise ImageError(f"{gt.mask}: ground-truth mask geometry differs from {gt.ct}: " + "; ".join(mask_problems))
    sct_image = read_image(job.prediction)
    problems = geometry_differences(ct_image, sct_image)
    size_problem = ct_image.GetSize() != sct_image.GetSize()
    if problems and (strict_geometry or size_problem):
        raise ImageError(f"{job.prediction}: geometry differs from the CT {gt.ct}: " + "; ".join(problems))
    if problems:
        log.warning("%s: geometry differs from %s (ignored): %s", job.prediction, gt.ct, "; ".join(problems))
    spacing_zyx = tuple(float(s) for s in reversed(ct_image.GetSpacing()))
    return LoadedCase(
        _array(ct_image, np.float32), _array(sct_image, np.float32), _array(mask_image, np.uint8), spacing_zyx
    )


def _name_files(message: str, job: Job) -> str:
    """Replace the role prefix of a metrics error (``'sCT: …'``) by the file it concerns."""
    assert job.ground_truth is not None
    roles = {"sCT": job.prediction, "CT": job.ground_truth.ct, "mask": job.ground_truth.mask}
    for role, path in roles.items():
        if message.startswith(f"{role}:"):
            return f"{path}:{message[len(role) + 1 :]}"
    return f"case {job.case_id} ({job.prediction}): {message}"


def score_job(
    job: Job,
    variant: Variant = "synthrad2023",
    strict_geometry: bool = True,
    make_picture: PictureMaker | None = None,
    dose_evaluator: DoseEvaluator | None = None,
    dose_keys: Sequence[str] = (),
) -> dict[str, Any]:
    """Score one job; never raises for a bad case: the record's ``error`` says what went wrong and where.

    With ``dose_evaluator`` the record also gets ``dose_keys`` (``null`` unless dose-scored), ``dose`` and
    ``dose_error``; a dose failure leaves the image metrics in place.
    """
    record: dict[str, Any] = {"case_id": job.case_id}
    if job.pk is not None:
        record["pk"] = job.pk
    record["prediction"] = str(job.prediction) if job.prediction else None
    record["ground_truth"] = str(job.ground_truth.ct) if job.ground_truth and job.ground_truth.ct else None
    record.update(dict.fromkeys(METRIC_KEYS[variant]))
    record["error"] = job.problem
    if dose_evaluator is not None:
        record.update(dict.fromkeys(dose_keys))
        record["dose_error"] = None
    if job.problem:
        if dose_evaluator is not None:
            record["dose_error"] = "not dose-evaluated: the case failed"
        return record
    try:
        case = load_job(job, strict_geometry)
        try:
            values = compute_metrics(case.ct_hu, case.sct_hu, case.mask, variant)
        except ValueError as exc:
            raise ImageError(_name_files(str(exc), job)) from exc
    except ImageError as exc:
        record["error"] = str(exc)
    except Exception as exc:  # one broken case must not stop the others
        log.debug("case %s failed", job.case_id, exc_info=True)
        record["error"] = f"case {job.case_id} ({job.prediction}): {type(exc).__name__}: {exc}"
    if record["error"]:
        if dose_evaluator is not None:
            record["dose_error"] = "not dose-evaluated: the case failed"
        return record
    record.update(values)
    if make_picture is not None:
        try:
            make_picture(job, record, case)
        except Exception as exc:  # a picture is a convenience: keep the scores
            log.warning("case %s: picture failed: %s", job.case_id, exc)
            record["picture_error"] = f"{type(exc).__name__}: {exc}"
    if dose_evaluator is not None:
        try:
            record.update(dose_evaluator(job, case))
        except Exception as exc:  # the image metrics stay
            log.debug("case %s: dose evaluation failed", job.case_id, exc_info=True)
            record["dose_error"] = f"case {job.case_id}: dose evaluation failed: {type(exc).__name__}: {exc}"
    return record


def evaluate_jobs(
    jobs: Sequence[Job],
    variant: Variant = "synthrad2023",
    strict_geometry: bool = True,
    make_picture: PictureMaker | None = None,
    progress: bool = True,
    dose_evaluator: DoseEvaluator | None = None,
    dose_keys: Sequence[str] = (),
    dose_settings: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Score every job (progress bar) and return the metrics.json payload (+ dose keys and settings if asked)."""
    results = []
    bar = tqdm(jobs, desc="evaluate", unit="case", disable=not progress)
    for job in bar:
        bar.set_postfix_str(job.case_id)
        record = score_job(job, variant, strict_geometry, make_picture, dose_evaluator, dose_keys)
        if record["error"]:
            log.error("%s", record["error"])
        elif record.get("dose_error"):
            log.error("%s", record["dose_error"])
        results.append(record)
    return build_payload(results, variant, dose_keys, dose_settings)


def build_payload(
    results: list[dict[str, Any]],
    variant: Variant,
    dose_keys: Sequence[str] = (),
    dose_settings: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """``{"variant", "psnr_cap_db", "results", "aggregates", "cases"}`` from per-case records.

    Dose keys are aggregated (with the image metrics' statistics) over the cases that have a value; ``dose`` holds
    the dose settings and ``cases.dose_failed`` counts the scored cases whose dose evaluation failed.
    """
    scored = [r for r in results if not r.get("error")]
    keys = [*METRIC_KEYS[variant], *dose_keys]
    payload: dict[str, Any] = {
        "variant": variant,
        "psnr_cap_db": PSNR_CAP_DB,
        "results": results,
        "aggregates": {key: aggregate(r.get(key) for r in scored) for key in keys},
        "cases": {"scored": len(scored), "failed": len(results) - len(scored)},
    }
    if dose_settings is not None:
        payload["dose"] = dose_settings
        payload["cases"]["dose_failed"] = sum(1 for r in scored if r.get("dose_error"))
    return payload


def write_metrics(path: str | os.PathLike[str], payload: dict[str, Any]) -> Path:
    """Write metrics.json atomically as strict JSON (no NaN/Infinity)."""
    write_json_atomic(path, payload)
    return Path(path)


def failed_count(payload: dict[str, Any]) -> int:
    """Cases that failed, counting a scored case whose requested dose evaluation failed."""
    return sum(1 for r in payload["results"] if r.get("error") or r.get("dose_error"))
