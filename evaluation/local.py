"""Local evaluation: a folder of predictions against a ground-truth folder → metrics.json (+ pictures, report)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import SimpleITK as sitk
from synthct.evaluation.cases import EvaluationError, Job, find_ground_truth, index_images_by_case, pair_jobs
from synthct.evaluation.pictures import case_figure, save_case_picture
from synthct.evaluation.report import write_report
from synthct.evaluation.scoring import LoadedCase, PictureMaker, evaluate_jobs, failed_count, write_metrics

from synthct.io import ImageError, read_image
from synthct.metrics import Variant

if TYPE_CHECKING:  # the dose extra is imported only when asked for
    from synthct.evaluation.dose.config import DoseConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DoseRequest:
    """What ``--dose`` asked for: modalities, validated settings (:class:`synthct.evaluation.dose.config.DoseConfig`),
    the user's structure folder (None: virtual targets)."""

    modalities: tuple[str, ...]
    config: DoseConfig
    structures_dir: Path | None = None

    def evaluator_arguments(self, pictures_dir: Path | None) -> dict[str, Any]:
        """Keyword arguments of :func:`synthct.evaluation.scoring.evaluate_jobs` for this request."""
        from synthct.evaluation.dose.evaluate import dose_keys, dose_settings, make_dose_evaluator

        return {
            "dose_evaluator": make_dose_evaluator(self.modalities, self.config, self.structures_dir, pictures_dir),
            "dose_keys": dose_keys(self.modalities),
            "dose_settings": dose_settings(self.modalities, self.config, self.structures_dir),
        }


def picture_maker(folder: Path, made: dict[str, str]) -> PictureMaker:
    """A callback writing ``folder/<case id>.png`` for each scored case and noting it in ``made``."""

    def make(job: Job, record: dict[str, Any], case: LoadedCase) -> None:
        mr = None
        if job.mr is not None:
            try:
                mr = sitk.GetArrayFromImage(read_image(job.mr)).astype(np.float32, copy=False)
            except ImageError as exc:
                log.warning("case %s: MR not shown: %s", job.case_id, exc)
            if mr is not None and mr.shape != case.ct_hu.shape:
                log.warning("case %s: MR not shown: shape %s != CT shape %s", job.case_id, mr.shape, case.ct_hu.shape)
                mr = None
        figure = case_figure(job.case_id, case.ct_hu, case.sct_hu, case.mask, case.spacing_mm, mr, record)
        name = f"{job.case_id}.png"
        save_case_picture(folder / name, figure)
        made[job.case_id] = name

    return make


def run_local(
    prediction_dir: Path,
    ground_truth_dir: Path,
    out: Path,
    mr_dir: Path | None = None,
    pictures_dir: Path | None = None,
    variant: Variant = "synthrad2023",
    only_predicted: bool = False,
    strict_geometry: bool = True,
    progress: bool = True,
    dose: DoseRequest | None = None,
) -> int:
    """Score every ground-truth case; write ``out`` (metrics.json) and, with ``pictures_dir``, PNGs + report.md.

    Returns 0 when every case was scored, 1 when any failed (metrics.json is written either way), 2 when nothing
    could be evaluated (no ground truth, no prediction folder).
    """
    try:
        if not prediction_dir.is_dir():
            raise EvaluationError(f"{prediction_dir}: prediction folder not found")
        ground_truth = find_ground_truth(ground_truth_dir)
    except EvaluationError as exc:
        log.error("%s", exc)
        return 2
    ids = set(ground_truth)
    predictions = index_images_by_case(prediction_dir, ids, preferred_stem="sct")
    mrs = index_images_by_case(mr_dir, ids, preferred_stem="mr") if mr_dir is not None else None
    if mr_dir is not None and not mr_dir.is_dir():
        log.warning("%s: MR folder not found; pictures without MR", mr_dir)
    jobs = pair_jobs(ground_truth, predictions, prediction_dir, mrs, only_predicted)
    if not jobs:
        log.error("%s: no prediction matches a ground-truth case in %s", prediction_dir, ground_truth_dir)
        return 2
    pictures: dict[str, str] = {}
    maker = picture_maker(pictures_dir, pictures) if pictures_dir is not None else None
    dose_arguments = dose.evaluator_arguments(pictures_dir) if dose is not None else {}
    payload = evaluate_jobs(jobs, variant, strict_geometry, maker, progress, **dose_arguments)
    write_metrics(out, payload)
    log.info("wrote %s", out)
    if pictures_dir is not None:
        report = write_report(pictures_dir / "report.md", payload, pictures)
        log.info("wrote %s and %d picture(s)", report, len(pictures))
    _log_summary(payload)
    return 1 if failed_count(payload) else 0


def _log_summary(payload: dict[str, Any]) -> None:
    for key, agg in payload["aggregates"].items():
        if agg["count"]:
            log.info("%s: %.4g ± %.4g (n=%d)", key, agg["mean"], agg["std"], agg["count"])
    failed = failed_count(payload)
    if failed:
        log.error("%d of %d case(s) failed; see 'error' in the results", failed, len(payload["results"]))
