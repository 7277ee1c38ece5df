"""Dose evaluation of one case: structures → plan on the CT → recalculation on the sCT → metrics (+ picture).

Per case the record gets flat keys ``<modality>_dose_mae_pct`` and ``<modality>_gamma_pass_pct`` (aggregated in
metrics.json like the image metrics; ``null`` when that modality failed) and a ``dose`` object: the structures used,
per modality the DVH values on CT and sCT, their differences in % Rx, timings, optimiser facts and an ``error``.
``dose_error`` names what failed (``null`` when every requested modality was scored). The image metrics of the case
are kept either way.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from synthct.evaluation.dose.config import MODALITIES, DoseConfig
from synthct.evaluation.dose.structures import (
    StructureError,
    Structures,
    check_structures,
    region_of_case,
    user_structures,
    virtual_structures,
)

if TYPE_CHECKING:
    from synthct.evaluation.cases import Job
    from synthct.evaluation.dose.planning import PlanResult
    from synthct.evaluation.scoring import LoadedCase

log = logging.getLogger(__name__)

DoseEvaluator = Callable[..., dict[str, Any]]


def dose_keys(modalities: Sequence[str]) -> list[str]:
    """The aggregated per-case keys of the requested modalities."""
    return [f"{m}_{key}" for m in modalities for key in ("dose_mae_pct", "gamma_pass_pct")]


ALL_DOSE_KEYS = dose_keys(MODALITIES)


def case_structures(
    case_id: str,
    ct_hu: np.ndarray,
    body: np.ndarray,
    spacing_mm: tuple[float, ...],
    config: DoseConfig,
    ct_path: Path | None = None,
    structures_dir: Path | None = None,
) -> Structures:
    """The user's structures (``structures_dir``) or the region's virtual ones, checked against the body."""
    where = f"case {case_id}"
    if structures_dir is not None:
        import SimpleITK as sitk

        from synthct.io import read_header_geometry

        if ct_path is None:
            raise StructureError(f"{where}: user structures need the CT file for their geometry check")
        geometry = read_header_geometry(ct_path)
        reference = sitk.Image([int(n) for n in geometry.size], sitk.sitkUInt8)
        reference.SetSpacing(geometry.spacing_mm)
        reference.SetOrigin(geometry.origin_mm)
        reference.SetDirection(geometry.direction)
        structures = user_structures(structures_dir, case_id, reference)
    else:
        region = config.region
        if region == "auto":
            detected = region_of_case(case_id, [ct_path] if ct_path is not None else [])
            if detected is None:
                raise StructureError(
                    f"{where}: cannot tell the region for the virtual target (id not like 1BA001/1PA001/1HNA001/"
                    "1THA001/1ABA001, no brain/pelvis/HN/TH/AB folder); set --dose-set region=brain|pelvis|hn|th|ab "
                    "or give --structures DIR"
                )
            region = detected
        structures = virtual_structures(ct_hu, body, spacing_mm, region, config)
    check_structures(structures, body, f"{where} ({structures.source} structures)")
    return structures


def _modality_scores(plan: PlanResult, config: DoseConfig) -> dict[str, Any]:
    from synthct.evaluation.dose.dose_metrics import dose_mae_pct, dvh_differences_pct, dvh_metrics
    from synthct.evaluation.dose.gamma import gamma_pass_rate

    rx = config.prescription_gy
    start = time.perf_counter()
    gamma = gamma_pass_rate(plan.ct_gy, plan.sct_gy, plan.grid.spacing_mm, config.gamma_dose_pct,
                            config.gamma_distance_mm, config.gamma_cutoff_pct, config.gamma_interp_fraction)
    gamma_seconds = time.perf_counter() - start
    dvh_ct = dvh_metrics(plan.ct_gy, plan.ptv, plan.oars)
    dvh_sct = dvh_metrics(plan.sct_gy, plan.ptv, plan.oars)
    return {
        "dose_mae_pct": dose_mae_pct(plan.ct_gy, plan.sct_gy, rx, config.mae_threshold_pct),
        "gamma_pass_pct": gamma,
        "dvh_ct": dvh_ct,
        "dvh_sct": dvh_sct,
        "dvh_diff_pct": dvh_differences_pct(dvh_ct, dvh_sct, rx),
        "ct_dose_max_gy": float(plan.ct_gy.max()),
        "dose_grid_shape_zyx": list(plan.grid.shape),
        "optimiser": plan.optimiser,
        "seconds": {**{k: round(v, 2) for k, v in plan.seconds.items()}, "gamma": round(gamma_seconds, 2)},
    }


def evaluate_case_dose(
    case_id: str,
    ct_hu: np.ndarray,
    sct_hu: np.ndarray,
    body: np.ndarray,
    spacing_mm: tuple[float, ...],
    modalities: Sequence[str],
    config: DoseConfig,
    ct_path: Path | None = None,
    structures_dir: Path | None = None,
    pictures_dir: Path | None = None,
) -> dict[str, Any]:
    """Record fields of one case's dose evaluation (see the module docstring). Never raises for a bad case."""
    from synthct.evaluation.dose.planning import PlanningError, plan_and_recalculate

    fields: dict[str, Any] = dict.fromkeys(dose_keys(modalities))
    dose: dict[str, Any] = {"structures": None}
    errors: list[str] = []
    try:
        structures = case_structures(case_id, ct_hu, body, spacing_mm, config, ct_path, structures_dir)
    except StructureError as exc:
        fields.update(dose=dose, dose_error=str(exc))
        return fields
    dose["structures"] = {"source": structures.source, "oars": sorted(structures.oars), **structures.details}
    for modality in modalities:
        try:
            plan = plan_and_recalculate(ct_hu, sct_hu, body, spacing_mm, structures, modality, config)
            scores = _modality_scores(plan, config)
        except (PlanningError, ValueError) as exc:
            message = f"case {case_id} {modality}: {exc}"
            errors.append(message)
            dose[modality] = {"error": message}
            continue
        except MemoryError:
            message = f"case {case_id} {modality}: out of memory"
            errors.append(message)
            dose[modality] = {"error": message}
            continue
        fields[f"{modality}_dose_mae_pct"] = scores["dose_mae_pct"]
        fields[f"{modality}_gamma_pass_pct"] = scores["gamma_pass_pct"]
        if pictures_dir is not None:
            scores["picture"] = _picture(case_id, modality, ct_hu, sct_hu, spacing_mm, plan, config, scores,
                                         pictures_dir)
        dose[modality] = {**scores, "error": None}
        log.info("case %s %s: dose MAE %.2f %% Rx, gamma %.1f %%", case_id, modality, scores["dose_mae_pct"],
                 scores["gamma_pass_pct"])
        del plan
    fields.update(dose=dose, dose_error="; ".join(errors) or None)
    return fields


def _picture(case_id: str, modality: str, ct_hu: np.ndarray, sct_hu: np.ndarray, spacing_mm: tuple[float, ...],
             plan: Any, config: DoseConfig, scores: dict[str, Any], pictures_dir: Path) -> str | None:
    from synthct.evaluation.dose.pictures import dose_figure, save_dose_picture

    name = f"{case_id}_{modality}_dose.png"
    try:
        figure = dose_figure(case_id, modality, ct_hu, sct_hu, spacing_mm, plan, config.prescription_gy, scores)
        save_dose_picture(Path(pictures_dir) / name, figure)
    except Exception as exc:  # a picture is a convenience: keep the scores
        log.warning("case %s %s: dose picture failed: %s", case_id, modality, exc)
        return None
    return name


def make_dose_evaluator(
    modalities: Sequence[str],
    config: DoseConfig,
    structures_dir: Path | None = None,
    pictures_dir: Path | None = None,
) -> DoseEvaluator:
    """A callback ``(job, case) -> record fields`` for :func:`synthct.evaluation.scoring.evaluate_jobs`."""

    def evaluate(job: Job, case: LoadedCase) -> dict[str, Any]:
        ct_path = job.ground_truth.ct if job.ground_truth is not None else None
        return evaluate_case_dose(job.case_id, case.ct_hu, case.sct_hu, case.mask, case.spacing_mm, modalities,
                                  config, ct_path, structures_dir, pictures_dir)

    return evaluate


def dose_settings(modalities: Sequence[str], config: DoseConfig, structures_dir: Path | None) -> dict[str, Any]:
    """The ``dose`` block of metrics.json: every setting and the method's constants."""
    from synthct.evaluation.dose.planning import (
        BODY_LIMIT_FRACTION,
        BODY_PRIORITY,
        OAR_LIMIT_FRACTION,
        OAR_PRIORITY,
        PTV_PRIORITY,
    )

    return {
        "modalities": list(modalities),
        "settings": config.to_dict(),
        "structures": str(structures_dir) if structures_dir is not None else "virtual",
        "engine": {"photon": "pyRadPlan SVDPB (generic 6 MV)", "proton": "pyRadPlan HongPB (generic protons)",
                   "pyradplan": _version("pyRadPlan"), "pymedphys": _version("pymedphys")},
        "objectives": {"ptv": f"squared deviation from Rx, priority {PTV_PRIORITY:g}",
                       "oar": f"squared overdose above {OAR_LIMIT_FRACTION:g} Rx, priority {OAR_PRIORITY:g}",
                       "body": f"squared overdose above {BODY_LIMIT_FRACTION:g} Rx, priority {BODY_PRIORITY:g}"},
        "normalisation": "PTV mean dose on the CT = prescription (one fraction)",
        "dose_mae": f"mean |sCT - CT| dose over CT dose >= {config.mae_threshold_pct:g} % Rx, in % Rx",
        "gamma": f"{config.gamma_dose_pct:g} %/{config.gamma_distance_mm:g} mm global, "
                 f"{config.gamma_cutoff_pct:g} % low-dose cutoff",
    }


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None
