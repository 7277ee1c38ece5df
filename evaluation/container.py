"""The grand-challenge evaluation container: ``python -m synthct.evaluation``.

Platform conventions (grand-challenge evaluation method; SynthRAD 2023/2025 evaluation containers):

- ``/input/predictions.json`` lists the algorithm jobs of a submission: ``[{"pk": ..., "inputs": [{"image":
  {"name": "1BA001.mha"}, "interface": {"slug": "mri-image", "relative_path": "images/mri"}}, ...], "outputs":
  [{"image": {"name": ...}, "interface": {"slug": "synthetic-ct-image", "relative_path": "images/synthetic-ct"}}]}]``.
- Each job's output files lie under ``/input/<pk>/output/<relative_path>/``.
- The case id comes from the job's *input* image name (the MR, else the body mask): its file stem, or the known id
  among its ``_``/``-`` separated tokens (``mri_1BA001.mha`` → ``1BA001``).
- Ground truth: ``/opt/ml/input/data/ground_truth/`` (grand-challenge's convention: the phase's ground-truth
  tarball, extracted) when that folder holds anything, else the folder baked into the image,
  ``/opt/app/ground-truth/``; either ``{ct,mask}/<ID>.<ext>`` or SynthRAD case folders. Which one was used is
  logged and recorded in metrics.json (``ground_truth``).
- Scores go to ``/output/metrics.json`` (see :mod:`synthct.evaluation.scoring`); exit status 1 if any case failed, 2
when
  nothing could be scored (e.g. ``/output`` not a writable folder: checked before any scoring).

Environment overrides: ``SYNTHCT_INPUT``, ``SYNTHCT_OUTPUT``, ``SYNTHCT_GROUND_TRUTH_INPUT`` (the mounted ground
truth; empty: off), ``SYNTHCT_GROUND_TRUTH`` (the baked one), and
``SYNTHCT_METRICS_VARIANT`` (``synthrad2023`` default, or ``synthrad2025``).

Dose evaluation (image built with ``--build-arg WITH_DOSE=1``): ``SYNTHCT_DOSE=photon|proton|both`` adds the
``photon_*``/``proton_*`` dose metrics to metrics.json; ``SYNTHCT_DOSE_SET="key=value;key=value"`` overrides dose
settings; structures come from ``/opt/app/structures/<ID>/`` when that folder exists in the image (override:
``SYNTHCT_STRUCTURES``), else virtual targets.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from synthct.evaluation.cases import EvaluationError, GroundTruthCase, Job, find_ground_truth, resolve_case_id
from synthct.evaluation.scoring import build_payload, evaluate_jobs, failed_count, write_metrics

from synthct.io import IMAGE_SUFFIXES
from synthct.metrics import VARIANTS, Variant
from synthct.outputs import OutputError, output_session, report_unexpected

if TYPE_CHECKING:
    from synthct.evaluation.local import DoseRequest

log = logging.getLogger(__name__)

DEFAULT_INPUT = Path("/input")
DEFAULT_OUTPUT = Path("/output")
DEFAULT_GROUND_TRUTH = Path("/opt/app/ground-truth")
MOUNTED_GROUND_TRUTH = "/opt/ml/input/data/ground_truth"
DEFAULT_STRUCTURES = Path("/opt/app/structures")
SCT_SLUGS = ("synthetic-ct-image", "synthetic-ct", "sct-image", "sct")
SCT_RELATIVE_PATH = "images/synthetic-ct"
MR_SLUGS = ("mri-image", "mr-image", "mri", "mr")
MASK_SLUGS = ("body", "body-mask", "mask", "body-mask-image")
_SAFE_PK = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def _interface(value: dict[str, Any]) -> dict[str, Any]:
    interface = value.get("interface") if isinstance(value, dict) else None
    return interface if isinstance(interface, dict) else {}


def _image_name(value: dict[str, Any]) -> str | None:
    image = value.get("image") if isinstance(value, dict) else None
    name = image.get("name") if isinstance(image, dict) else None
    return name if isinstance(name, str) and name else None


def _safe_relative(path: str) -> PurePosixPath | None:
    relative = PurePosixPath(path)
    if relative.is_absolute() or ".." in relative.parts:
        return None
    return relative


def read_job_list(path: Path) -> list[dict[str, Any]]:
    """The job list of predictions.json. Raises :class:`EvaluationError` if missing, unreadable or malformed."""
    try:
        jobs = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise EvaluationError(f"{path}: file not found") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EvaluationError(f"{path}: cannot be read as JSON ({exc})") from exc
    if not isinstance(jobs, list) or not all(isinstance(job, dict) for job in jobs):
        raise EvaluationError(f"{path}: expected a JSON list of job objects")
    return jobs


def case_name(job: dict[str, Any]) -> str | None:
    """The input image name identifying a job's case: the MR's, else the body mask's, else any input image's."""
    inputs = [v for v in job.get("inputs") or [] if _image_name(v)]
    for slugs, folder in ((MR_SLUGS, "images/mri"), (MASK_SLUGS, "images/body")):
        for value in inputs:
            interface = _interface(value)
            if interface.get("slug") in slugs or str(interface.get("relative_path", "")).startswith(folder):
                return _image_name(value)
    return _image_name(inputs[0]) if inputs else None


def prediction_path(job: dict[str, Any], input_dir: Path) -> tuple[Path | None, str | None]:
    """``(sCT file, None)`` or ``(None, problem)`` for one job: the image under ``<pk>/output/<relative_path>/``."""
    pk = str(job.get("pk", ""))
    if not _SAFE_PK.fullmatch(pk):
        return None, f"job {pk!r}: missing or unsafe pk"
    outputs = [v for v in job.get("outputs") or [] if isinstance(v, dict)]
    chosen = [v for v in outputs if _interface(v).get("slug") in SCT_SLUGS]
    chosen = chosen or [v for v in outputs if str(_interface(v).get("relative_path", "")).startswith(SCT_RELATIVE_PATH)]
    relative = _safe_relative(str(_interface(chosen[0]).get("relative_path") or SCT_RELATIVE_PATH)) if chosen else None
    if chosen and relative is None:
        return None, f"job {pk}: unsafe output relative_path {_interface(chosen[0]).get('relative_path')!r}"
    folder = input_dir / pk / "output" / str(relative or SCT_RELATIVE_PATH)
    if folder.is_file():
        return folder, None
    name = _image_name(chosen[0]) if chosen else None
    if name and _safe_relative(name) is not None and (folder / name).is_file():
        return folder / name, None
    images = (
        sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")
               and p.name.lower().endswith(IMAGE_SUFFIXES))
        if (folder.is_dir())
        else []
    )
    if len(images) == 1:
        return images[0], None
    if not images:
        return None, f"{folder}: no synthetic-CT image for job {pk}"
    return None, f"{folder}: several images for job {pk}: {', '.join(p.name for p in images)}"


def build_jobs(job_list: list[dict[str, Any]], input_dir: Path, ground_truth: dict[str, GroundTruthCase]) -> list[Job]:
    """One :class:`Job` per grand-challenge job, then one error job per ground-truth case no job covered."""
    jobs: list[Job] = []
    seen: dict[str, str] = {}
    for index, entry in enumerate(job_list):
        pk = str(entry.get("pk", f"#{index}"))
        name = case_name(entry)
        if name is None:
            jobs.append(
                Job(f"job-{pk}", None, None, pk=pk, problem=f"job {pk}: no input image name to take the case id from")
            )
            continue
        case_id = resolve_case_id(name, ground_truth)
        sct, problem = prediction_path(entry, input_dir)
        case = ground_truth.get(case_id)
        if case is None:
            problem = f"job {pk}: no ground-truth case {case_id} (from input image {name})"
        elif case_id in seen:
            problem = f"job {pk}: case {case_id} was already scored from job {seen[case_id]}"
        elif problem is None:
            problem = case.problem
        seen.setdefault(case_id, pk)
        jobs.append(Job(case_id, sct, case, pk=pk, problem=problem))
    for case_id, case in sorted(ground_truth.items()):
        if case_id not in seen:
            jobs.append(Job(case_id, None, case, problem=f"no prediction for ground-truth case {case_id}"))
    return jobs


def _env_path(name: str, default: Path) -> Path:
    value = os.environ.get(name)
    return Path(value) if value else default


def locate_ground_truth(env: Mapping[str, str]) -> tuple[Path, str]:
    """(folder, source): the mounted ground truth when its folder holds anything (``mounted``), else the image's."""
    mounted = env.get("SYNTHCT_GROUND_TRUTH_INPUT", MOUNTED_GROUND_TRUTH).strip()
    if mounted and Path(mounted).is_dir() and any(not p.name.startswith(".") for p in Path(mounted).iterdir()):
        return Path(mounted), "mounted"
    return Path(env.get("SYNTHCT_GROUND_TRUTH") or DEFAULT_GROUND_TRUTH), "image"


def dose_request_from_env() -> DoseRequest | None:
    """The ``DoseRequest`` of ``SYNTHCT_DOSE`` (None when unset or empty). Raises ``ValueError`` with the reason."""
    choice = os.environ.get("SYNTHCT_DOSE", "").strip().lower()
    if not choice or choice in ("none", "off", "0"):
        return None
    from synthct.evaluation.dose import require_dose_extra
    from synthct.evaluation.dose.config import load_dose_config, modalities
    from synthct.evaluation.local import DoseRequest

    require_dose_extra()
    assignments = [a.strip() for a in os.environ.get("SYNTHCT_DOSE_SET", "").split(";") if a.strip()]
    config = load_dose_config(None, assignments)
    structures = _env_path("SYNTHCT_STRUCTURES", DEFAULT_STRUCTURES)
    if "SYNTHCT_STRUCTURES" in os.environ and not structures.is_dir():
        raise ValueError(f"SYNTHCT_STRUCTURES={structures}: folder not found")
    has_cases = structures.is_dir() and any(p.is_dir() for p in structures.iterdir())
    return DoseRequest(modalities(choice), config, structures if has_cases else None)


def main() -> int:
    """Evaluate /input against the ground truth; write /output/metrics.json; 0 if every case scored, else 1."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    input_dir = _env_path("SYNTHCT_INPUT", DEFAULT_INPUT)
    output_dir = _env_path("SYNTHCT_OUTPUT", DEFAULT_OUTPUT)
    ground_truth_dir, ground_truth_source = locate_ground_truth(os.environ)
    log.info("ground truth: %s (%s)", ground_truth_dir,
             "mounted by the platform" if ground_truth_source == "mounted" else "baked into the image")
    variant_name = os.environ.get("SYNTHCT_METRICS_VARIANT", "synthrad2023")
    metrics_path = output_dir / "metrics.json"
    if variant_name not in VARIANTS:
        log.error("SYNTHCT_METRICS_VARIANT=%r: expected one of %s", variant_name, ", ".join(VARIANTS))
        return 2
    variant = VARIANTS[VARIANTS.index(variant_name)]
    try:
        dose = dose_request_from_env()
    except (ValueError, RuntimeError) as exc:
        log.error("SYNTHCT_DOSE: %s", exc)
        return 2
    try:  # checked (a writable folder), locked and cleaned of stale temporaries before any scoring
        with output_session([output_dir], "evaluation job"):
            try:
                return _evaluate(input_dir, ground_truth_dir, metrics_path, variant, dose,
                                 {"source": ground_truth_source, "folder": str(ground_truth_dir)})
            except Exception as exc:  # a bug: one line, the traceback in /output/synthct-errors.log
                report_unexpected(log, exc, "evaluation job")
                return 2
    except OutputError as exc:
        log.error("%s", exc)
        return 2


def _evaluate(input_dir: Path, ground_truth_dir: Path, metrics_path: Path, variant: Variant, dose: DoseRequest | None,
              ground_truth_record: dict[str, str]) -> int:
    try:
        job_list = read_job_list(input_dir / "predictions.json")
        ground_truth = find_ground_truth(ground_truth_dir)
    except EvaluationError as exc:
        log.error("%s", exc)
        payload = build_payload([], variant)
        payload["error"] = str(exc)
        payload["ground_truth"] = ground_truth_record
        write_metrics(metrics_path, payload)
        return 1
    jobs = build_jobs(job_list, input_dir, ground_truth)
    log.info("%d job(s) in predictions.json, %d ground-truth case(s)", len(job_list), len(ground_truth))
    dose_arguments = dose.evaluator_arguments(None) if dose is not None else {}
    payload = evaluate_jobs(jobs, variant, **dose_arguments)
    payload["ground_truth"] = ground_truth_record
    write_metrics(metrics_path, payload)
    failed = failed_count(payload)
    log.info("wrote %s: %d case(s) scored, %d failed", metrics_path, len(jobs) - failed, failed)
    return 1 if failed else 0
