"""Per runtime backend, the measured deviation of its sCT from the fp32 reference's, recorded in ``model.json``.

A reduced-precision or other backend (OpenVINO f32 / bf16, the GPU's fp16 graph) runs the algorithm's whole case
path (normalise → 64³ sliding window with the package's overlap and blending → HU → int16, -1000 outside the mask)
on validation cases with CT, as does the reference ONNX Runtime fp32 CPU backend. It passes when, on every case,

- the sCT's MAE against the CT changes by at most ``mae_change_hu`` (1 HU), and
- the mean |Δ| against the reference sCT inside the body mask is at most ``mean_abs_hu_in_mask`` (3 HU).

``synthct.algorithm.backends`` uses a backend by default only with a passing record. A backend that cannot run on the
export
machine (no OpenVINO, no native bf16, no GPU) is recorded with ``passed: null`` and the reason: not measured.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from synthct.export.errors import ExportError

if TYPE_CHECKING:  # imported where used at run time
    import SimpleITK as sitk
    from synthct.algorithm.backends import Backend, Predictor

    from synthct.model_package import ModelPackage

log = logging.getLogger("synthct.export")

BOUND = {"mae_change_hu": 1.0, "mean_abs_hu_in_mask": 3.0}
CANDIDATES: tuple[Backend, ...] = ("openvino", "openvino-bf16", "onnxruntime-fp16")


@dataclass
class AccuracyCase:
    """One validation case: MR and mask images, CT (z, y, x) float32 HU."""

    name: str
    mr: sitk.Image
    mask: sitk.Image
    ct_hu: np.ndarray


def validation_ids(config: dict[str, Any]) -> list[str]:
    """The validation case ids of the training run's split file (``data.split``; key ``val``), [] if unreadable."""
    split = str((config.get("data") or {}).get("split") or "")
    if not split or not Path(split).is_file():
        return []
    try:
        content = json.loads(Path(split).read_text(encoding="utf-8"))
        return [str(i) for i in content.get("val", content.get("validation", []))]
    except (OSError, ValueError, AttributeError):
        return []


def accuracy_cases(region: str, count: int, data_dir: Path | None = None, config: dict[str, Any] | None = None,
                   seed: int = 1000) -> list[AccuracyCase]:
    """``count`` cases with CT: from ``data_dir`` (the split's validation cases first), else phantoms
    (:func:`synthct.phantom.generate_case`, size ``small``, seeds ``seed``, ``seed + 1``, … — not training seeds)."""
    import SimpleITK as sitk

    if data_dir is not None:
        from synthct.dataset import DatasetError, find_cases
        from synthct.io import read_image

        try:
            cases = find_cases(data_dir, region=region, require_ct=True)
        except (DatasetError, ValueError, OSError) as exc:
            raise ExportError(f"{data_dir}: cannot read accuracy cases for region {region!r}: {exc}") from exc
        preferred = validation_ids(config or {})
        cases.sort(key=lambda case: (case.case_id not in preferred, case.case_id))
        picked = []
        for case in cases[:count]:
            assert case.ct is not None
            ct_hu = sitk.GetArrayFromImage(read_image(case.ct)).astype(np.float32)
            picked.append(AccuracyCase(f"{case.case_id}{' (validation)' if case.case_id in preferred else ''}",
                                       read_image(case.mr), read_image(case.mask), ct_hu))
        return picked
    from synthct.phantom import REGIONS as PHANTOM_REGIONS
    from synthct.phantom import generate_case

    phantom_region = region if region in PHANTOM_REGIONS else "brain"
    picked = []
    for index in range(count):
        mr, ct, mask = generate_case(phantom_region, seed + index, "small")
        picked.append(AccuracyCase(f"phantom {phantom_region} seed {seed + index}", mr, mask,
                                   sitk.GetArrayFromImage(ct).astype(np.float32)))
    return picked


def sct_hu(case: AccuracyCase, package: ModelPackage, predictor: Predictor) -> np.ndarray:
    """The algorithm's int16 sCT of ``case`` as float32 (z, y, x)."""
    import SimpleITK as sitk
    from synthct.algorithm.inference import predict_sct

    return sitk.GetArrayFromImage(predict_sct(case.mr, case.mask, package, predictor, progress=False)).astype(
        np.float32)


def deviation(reference: np.ndarray, candidate: np.ndarray, ct_hu: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """MAE of both against the CT, the MAE change, and mean / max |Δ| inside ``mask``, HU."""
    from synthct.metrics import mae

    inside = mask > 0
    delta = np.abs(candidate[inside].astype(np.float64) - reference[inside].astype(np.float64))
    mae_reference, mae_candidate = mae(ct_hu, reference, mask), mae(ct_hu, candidate, mask)
    return {"mae_reference_hu": mae_reference, "mae_hu": mae_candidate,
            "mae_change_hu": abs(mae_candidate - mae_reference),
            "mean_abs_hu_in_mask": float(delta.mean()), "max_abs_hu_in_mask": float(delta.max())}


def judge(per_case: Sequence[dict[str, float]], bound: dict[str, float] | None = None) -> dict[str, Any]:
    """Worst figures over the cases and whether they hold ``bound`` (:data:`BOUND`)."""
    bound = bound or BOUND
    worst = {key: max(case[key] for case in per_case) for key in ("mae_change_hu", "mean_abs_hu_in_mask",
                                                                    "max_abs_hu_in_mask")}
    failures = [f"{key} {worst[key]:.3f} > {limit}" for key, limit in bound.items() if not worst[key] <= limit]
    return {"passed": not failures, **({"failure": "; ".join(failures)} if failures else {}), "worst": worst}


def measure_backends(package_dir: Path, cases: Sequence[AccuracyCase], backends: Sequence[Backend] = CANDIDATES,
                     threads: int | None = None) -> dict[str, Any]:
    """The manifest's ``backend_accuracy`` section for the package in ``package_dir`` (already verified)."""
    import SimpleITK as sitk
    from synthct.algorithm.backends import BackendUnavailable, OnnxRuntimePredictor, make_predictor
    from synthct.algorithm.cpu import cpu_flags, cpu_vendor

    from synthct.model_package import load_model_package

    package = load_model_package(package_dir)
    reference = OnnxRuntimePredictor(package, device="cpu", threads=threads)
    started = time.perf_counter()
    references = [sct_hu(case, package, reference) for case in cases]
    reference_s = time.perf_counter() - started
    del reference
    results: dict[str, Any] = {}
    for name in backends:
        try:
            predictor = make_predictor(package, name, "cpu" if name.startswith("openvino") else "cuda", threads)
        except (BackendUnavailable, ImportError) as exc:
            results[name] = {"passed": None, "reason": f"not measured here: {exc}"}
            log.info("backend accuracy: %s not measured (%s)", name, exc)
            continue
        started = time.perf_counter()
        per_case: list[dict[str, str | float]] = []
        deviations = []
        for case, expected in zip(cases, references, strict=True):
            mask = sitk.GetArrayFromImage(case.mask)
            deviations.append(deviation(expected, sct_hu(case, package, predictor), case.ct_hu, mask))
            per_case.append({"case": case.name, **deviations[-1]})
        verdict = judge(deviations)
        results[name] = {**verdict, "description": predictor.description, "cases": per_case,
                         "seconds": round(time.perf_counter() - started, 2)}
        log.info("backend accuracy: %s %s (worst mean |Δ| %.3f HU, MAE change %.3f HU)", name,
                 "passed" if verdict["passed"] else "FAILED", verdict["worst"]["mean_abs_hu_in_mask"],
                 verdict["worst"]["mae_change_hu"])
        del predictor
    bf16 = sorted(f for f in cpu_flags() if "bf16" in f)
    return {"bound": dict(BOUND), "reference": "onnxruntime fp32 (CPU), the algorithm's case path",
            "reference_seconds": round(reference_s, 2), "cases": [case.name for case in cases],
            "measured_on": {"cpu_vendor": cpu_vendor(), "bf16_flags": bf16}, "results": results}
