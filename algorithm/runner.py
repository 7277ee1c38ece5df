"""Run a list of cases with per-case error capture, shared by the container and ``synthct predict``.

Each case yields one grand-challenge ``results.json`` entry (the evalutils / SynthRAD template contract):
``{"outputs": [{"type": "metaio_image", "filename": …}], "inputs": [...], "error_messages": [...]}``. A failing
case records its error and the others still run.
"""

from __future__ import annotations

import gc
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
from synthct.algorithm.backends import Backend, Device, Predictor, make_predictor
from synthct.algorithm.cases import CaseFiles, RegionError, resolve_region
from synthct.algorithm.inference import TrustRequest, check_inputs, predict_case
from synthct.algorithm.qa import qa_case, write_qa_index

from synthct.atomic import write_json_atomic
from synthct.body_mask import DEFAULT_THRESHOLD_FRACTION, body_mask_from_mr
from synthct.geometry import ResampleMode
from synthct.io import read_image, strip_image_suffix, write_image
from synthct.model_package import ModelPackage, load_model_package
from synthct.outputs import is_expected_failure, report_unexpected

log = logging.getLogger(__name__)

_BODY_PART = {"brain": {"BodyPartExamined": "HEAD"}, "hn": {"BodyPartExamined": "HEADNECK"},
              "pelvis": {"BodyPartExamined": "PELVIS"}, "th": {"BodyPartExamined": "CHEST"},
              "ab": {"BodyPartExamined": "ABDOMEN"}}
"""BodyPartExamined of a DICOM sCT made from a non-DICOM MR (DICOM PS3.16 Annex L terms)."""


@dataclass
class ModelRegistry:
    """Installed packages by region, loaded (verified) and turned into predictors on first use, then cached."""

    packages: dict[str, Path]
    backend: Backend = "auto"
    device: Device = "auto"
    threads: int | None = None
    problems: list[str] = field(default_factory=list)
    """Packages found but unusable (e.g. ``model.json`` not JSON): named in the "no model installed" message."""
    _loaded: dict[str, tuple[ModelPackage, Predictor] | Exception] = field(default_factory=dict)

    @property
    def regions(self) -> list[str]:
        return sorted(self.packages)

    def get(self, region: str) -> tuple[ModelPackage, Predictor]:
        if region not in self._loaded:
            try:
                if region not in self.packages:
                    unusable = f"; unusable: {'; '.join(self.problems)}" if self.problems else ""
                    raise RegionError(f"no model installed for region {region!r} (installed: {self.regions}"
                                      f"{unusable})")
                package = load_model_package(self.packages[region], expected_region=region)
                predictor = make_predictor(package, self.backend, self.device, self.threads)
                log.info("region %s: model %s on %s (%s)", region, package.directory, predictor.description,
                         predictor.selection)
                self._loaded[region] = (package, predictor)
            except Exception as exc:  # remembered: every case of this region gets the same message
                self._loaded[region] = exc
        loaded = self._loaded[region]
        if isinstance(loaded, Exception):
            raise loaded
        return loaded


@dataclass(frozen=True)
class ExtraOutputs:
    """What a run writes besides ``<case id>.mha``: automatic masks, DICOM CT series, the QA page (None: not)."""

    body_dir: Path | None = None
    """``<case id>.mha`` automatic body masks (``synthct predict``: ``OUT/body``; the container writes none)."""
    dicom_dir: Path | None = None
    """``<case id>/`` DICOM CT series (``--dicom-out``: ``OUT/dicom``)."""
    qa_dir: Path | None = None
    """``<case id>.png`` and ``index.html`` (``OUT/qa``)."""
    threshold_fraction: float = DEFAULT_THRESHOLD_FRACTION
    """Automatic body mask threshold ``t`` (see :mod:`synthct.body_mask`)."""
    ct_grid: str = "transverse"
    """DICOM CT grid for an MR whose slices are not transverse: ``transverse`` (axis-aligned, resampled) or ``mr``
    (the MR's own); a transverse MR always keeps its grid (:mod:`synthct.dicom.transverse`)."""
    ct_slice_mm: float | None = None
    """Slice spacing (mm) of a transverse DICOM CT grid; None: the MR's finest spacing, at least 1 mm."""
    region_source: str = "region.json"
    """Where a declared region comes from, as messages name it: ``region.json`` (container) or ``--region``."""
    uncertainty: str | None = None
    """Test-time-augmentation mode of the uncertainty map (:data:`synthct.trust.UNCERTAINTY_MODES`); None: off."""
    uncertainty_dir: Path | None = None
    """``<case id>.mha`` uncertainty maps (float32 HU, MR geometry, 0 outside the body); needs ``uncertainty``."""
    refuse_ood: bool = False
    """A case flagged by the out-of-distribution check fails (a per-case error) instead of running."""
    tta: int = 1
    """Mirroring test-time augmentation: the sCT is the mean of this many mirrored predictions (1: none, up to 8;
    :func:`synthct.trust.mirror_members`)."""
    overlap: float | None = None
    """The window engine's overlap; None: the package's (``model.json`` ``overlap``)."""


@dataclass
class LoadedMR:
    """An MR ready for prediction; ``identity`` and ``notes`` come from a DICOM series (empty for image files)."""

    image: sitk.Image
    identity: dict[str, str] | None
    notes: list[str]
    slice_thickness_mm: float | None = None
    """DICOM SliceThickness (mm) when known: a stack with gaps wider than its slices is not resampled."""


def load_mr(case: CaseFiles) -> LoadedMR:
    """Read the case's MR: an image file, or the planning MR of a DICOM case (``case.series_uid``: ``--series``)."""
    if not case.dicom:
        return LoadedMR(read_image(case.mr), None, [])
    from synthct.dicom import read_dicom_series

    volume = read_dicom_series(case.study or case.mr, case.series_uid, modality="MR")
    return LoadedMR(volume.image, dict(volume.identity), list(volume.notes), volume.slice_thickness_mm)


def model_label(package: ModelPackage) -> tuple[str, str]:
    """(name, sha256) identifying a package's network in derived DICOM: manifest ``name`` (else ``synthct-<region>``)
    and the ONNX file's sha256 from the verified manifest."""
    manifest = package.manifest
    name = str(manifest.get("name") or f"synthct-{package.region}")
    return name, str(manifest["onnx"]["sha256"])


def run_cases(
    cases: list[CaseFiles],
    registry: ModelRegistry,
    output_dir: Path,
    declared_region: str | None = None,
    extra_inputs: list[dict[str, str]] | None = None,
    batch_size: int = 4,
    progress: bool = True,
    extra: ExtraOutputs | None = None,
    resample: ResampleMode = "auto",
) -> tuple[list[dict[str, Any]], int]:
    """Predict every case into ``output_dir/<case id>.mha``; returns (results.json entries, number failed).

    A case without a mask gets the automatic body mask (``case.auto_mask``); warnings (mask fallback, ignored DICOM
    objects) go to the entry's ``warnings`` list and the log, errors to ``error_messages``.
    """
    extra = extra or ExtraOutputs()
    entries: list[dict[str, Any]] = []
    qa_rows: list[dict[str, Any]] = []
    failed = 0
    for index, case in enumerate(cases, start=1):
        kind = "dicom_series" if case.dicom else "metaio_image"
        inputs = [{"type": kind, "filename": str(case.mr)}]
        if case.mask is not None:
            inputs.append({"type": "metaio_image", "filename": str(case.mask)})
        entry: dict[str, Any] = {"outputs": [], "inputs": inputs + list(extra_inputs or []), "error_messages": []}
        warnings: list[str] = []
        started = time.perf_counter()
        trust = TrustRequest(uncertainty=extra.uncertainty, refuse_ood=extra.refuse_ood, region=declared_region)
        try:
            if case.warning:
                warnings.append(case.warning)
                log.warning("[%d/%d] %s: %s", index, len(cases), case.case_id, case.warning)
            if case.problem is not None or (case.mask is None and not case.auto_mask):
                raise ValueError(case.problem or f"{case.mr}: no body mask")
            region = resolve_region(case.case_id, declared_region, registry.regions, extra.region_source)
            package, predictor = registry.get(region)
            entry["backend"] = {"description": predictor.description, "selection": predictor.selection}
            mr = load_mr(case)
            for note in mr.notes:
                warnings.append(note)
                log.warning("[%d/%d] %s: %s", index, len(cases), case.case_id, note)
            mask_path: Path | None = None
            if case.mask is not None:
                mask_image = read_image(case.mask)
            else:
                mask_image = body_mask_from_mr(mr.image, extra.threshold_fraction, name=str(case.mr))
                if extra.body_dir is not None:
                    mask_path = write_image(mask_image, extra.body_dir / f"{case.case_id}.mha")
                log.info("[%d/%d] %s: automatic body mask (t = %g, %d voxels)%s", index, len(cases), case.case_id,
                         extra.threshold_fraction, int(np.count_nonzero(sitk.GetArrayViewFromImage(mask_image))),
                         f" written to {mask_path}" if mask_path else "")
            check_inputs(mr.image, mask_image, str(case.mr), str(case.mask or "automatic body mask"))
            inference_started = time.perf_counter()
            try:
                sct, geometry = predict_case(mr.image, mask_image, package, predictor, batch_size, progress, resample,
                                             mr.slice_thickness_mm, str(case.mr), trust, extra.tta, extra.overlap)
            finally:
                if trust.ood_result is not None:  # results.json only when checked: the log says why not
                    if trust.ood_result.get("checked"):
                        entry["out_of_distribution"] = trust.ood_result
                    _log_ood(trust.ood_result, warnings, f"[{index}/{len(cases)}] {case.case_id}")
            if extra.tta > 1 or extra.overlap is not None:  # recorded when chosen: the default entry is unchanged
                entry["inference"] = inference_record(package, extra, time.perf_counter() - inference_started)
            entry["geometry"] = geometry
            if not geometry["checked"]:
                warnings.append(geometry["summary"])
                log.warning("[%d/%d] %s: %s", index, len(cases), case.case_id, geometry["summary"])
            else:
                log.info("[%d/%d] %s: %s", index, len(cases), case.case_id, geometry["summary"])
            target = write_image(sct, output_dir / f"{case.case_id}.mha")
            entry["outputs"].append({"type": "metaio_image", "filename": str(target)})
            if mask_path is not None:
                entry["outputs"].append({"type": "metaio_image", "filename": str(mask_path)})
            if extra.dicom_dir is not None:
                from synthct.dicom import write_ct_series
                from synthct.dicom.transverse import dicom_ct_grid

                name, sha256 = model_label(package)
                identity = mr.identity if mr.identity is not None else _BODY_PART.get(region)
                ct_grid = dicom_ct_grid(sct, mask_image, extra.ct_grid, extra.ct_slice_mm)
                files = write_ct_series(ct_grid.image, extra.dicom_dir / case.case_id, identity=identity,
                                        model_name=name, model_sha256=sha256)
                entry["dicom_ct_grid"] = ct_grid.record
                entry["outputs"].append({"type": "dicom_series", "filename": str(extra.dicom_dir / case.case_id)})
                grid = ct_grid.record
                log.info("[%d/%d] %s: DICOM CT series, %d files in %s: %s grid (%s), %s voxels at %s mm; %s", index,
                         len(cases), case.case_id, len(files), extra.dicom_dir / case.case_id, grid["grid"],
                         grid["plane"], "×".join(map(str, grid["size"])),
                         "×".join(f"{s:g}" for s in grid["spacing_mm"]), grid["reason"])
                del ct_grid
            if trust.uncertainty_image is not None:
                entry["uncertainty"] = _uncertainty_entry(trust, package, mask_image, extra, case.case_id, warnings,
                                                          f"[{index}/{len(cases)}] {case.case_id}")
                if "filename" in entry["uncertainty"]:
                    entry["outputs"].append({"type": "metaio_image", "filename": entry["uncertainty"]["filename"]})
            if extra.qa_dir is not None:
                qa_rows.append(_qa_row(case, region, mr.image, sct, mask_image, extra.qa_dir, warnings, geometry,
                                       trust, entry.get("uncertainty")))
            del mr, mask_image, sct, trust
            log.info("[%d/%d] %s: %s (%.1f s)", index, len(cases), case.case_id, target, time.perf_counter() - started)
        except Exception as exc:  # one bad case never stops the others
            failed += 1
            message = str(exc) if str(exc) else type(exc).__name__
            entry["error_messages"].append(message)
            if is_expected_failure(exc):
                log.error("[%d/%d] %s failed: %s", index, len(cases), case.case_id, message)
                log.debug("traceback", exc_info=True)
            else:  # a bug: one line here, the traceback in the output's error log
                report_unexpected(log, exc, f"[{index}/{len(cases)}] {case.case_id} failed")
            if extra.qa_dir is not None:
                qa_rows.append({"case_id": case.case_id, "error": message})
        if warnings:
            entry["warnings"] = warnings
        entries.append(entry)
        gc.collect()
    if extra.qa_dir is not None:
        try:
            index_path = write_qa_index(qa_rows, extra.qa_dir)
            log.info("QA page: %s", index_path)
        except Exception as exc:  # the sCTs are written; a broken QA page must not hide them
            log.error("QA page not written: %s", exc)
    return entries, failed


def inference_record(package: ModelPackage, extra: ExtraOutputs, seconds: float) -> dict[str, Any]:
    """results.json's ``inference``: the window overlap used and where it came from, the test-time mirrorings
    (count and axes) and the seconds the case's prediction took (geometry, normalisation, every network pass:
    test-time and uncertainty members included)."""
    from synthct.trust import mirror_members

    return {"overlap": package.overlap if extra.overlap is None else extra.overlap,
            "overlap_from": "package" if extra.overlap is None else "option",
            "tta": extra.tta, "tta_members": [m.label() for m in mirror_members(extra.tta)],
            "seconds": round(seconds, 2)}


def results_key(entry: dict[str, Any]) -> str | None:
    """The case a results.json entry belongs to: its ``case_id`` (``synthct predict``), else its MR file's name
    without the image suffix (the container: the sCT is named like the MR)."""
    if isinstance(entry.get("case_id"), str):
        return entry["case_id"]
    inputs = entry.get("inputs")
    if isinstance(inputs, list) and inputs and isinstance(inputs[0], dict) and isinstance(inputs[0].get("filename"),
                                                                                       str):
        return strip_image_suffix(Path(inputs[0]["filename"]).name)
    return None


def write_results(path: Path, entries: list[dict[str, Any]]) -> int:
    """Write results.json atomically, merged per case with the one already there; returns the entries kept.

    A case of this run replaces its earlier entry; earlier cases this run did not redo are kept (their outputs are
    still in the folder). An unreadable earlier file is replaced, with a warning. Entries are sorted by case.
    """
    merged: dict[str | None, list[dict[str, Any]]] = {}
    if path.is_file():
        try:
            previous = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(previous, list) or not all(isinstance(e, dict) for e in previous):
                raise ValueError("not a list of case entries")
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            log.warning("%s: earlier results not readable (%s); replaced by this run's", path, exc)
            previous = []
        for entry in previous:
            merged.setdefault(results_key(entry), []).append(entry)
    done = {results_key(entry) for entry in entries}
    kept = [entry for key, group in merged.items() if key not in done or key is None for entry in group]
    combined = sorted(kept + entries, key=lambda e: results_key(e) or "")
    write_json_atomic(path, combined)
    if kept:
        log.info("%s: %d case(s) of this run, %d kept from earlier runs into the same folder", path, len(entries),
                 len(kept))
    return len(kept)


def _log_ood(result: dict[str, Any], warnings: list[str], where: str) -> None:
    """Log the out-of-distribution result; a flag also becomes a warning of the case."""
    if not result.get("checked"):
        log.info("%s: %s", where, result.get("reason"))
    elif result["flagged"]:
        message = (f"out of distribution (score {result['score']:.1f} > {result['threshold']:.1f}): "
                   + "; ".join(result["reasons"]))
        warnings.append(message)
        log.warning("%s: %s", where, message)
    else:
        log.info("%s: in distribution (score %.1f ≤ %.1f)", where, result["score"], result["threshold"])


def _uncertainty_entry(trust: TrustRequest, package: ModelPackage, mask_image: sitk.Image, extra: ExtraOutputs,
                       case_id: str, warnings: list[str], where: str) -> dict[str, Any]:
    """Write the map (when ``extra.uncertainty_dir``), summarise it against the package's calibration."""
    from synthct.trust import DEFAULT_LEVELS_HU, UNCERTAINTY_MODES, uncertainty_summary

    assert trust.uncertainty_image is not None and trust.uncertainty is not None
    calibration: dict[str, Any] = (package.trust or {}).get("uncertainty") or {}
    calibrated = calibration.get("mode") == trust.uncertainty
    spread = sitk.GetArrayViewFromImage(trust.uncertainty_image)
    body = sitk.GetArrayViewFromImage(mask_image) > 0
    summary = uncertainty_summary(spread, body, DEFAULT_LEVELS_HU,
                                  float(calibration["case_limit_hu"]) if calibrated else None)
    entry: dict[str, Any] = {"mode": trust.uncertainty, "passes": len(UNCERTAINTY_MODES[trust.uncertainty]) + 1,
                             **summary}
    if calibrated and calibration.get("voxel_level_hu") is not None and body.any():
        level = float(calibration["voxel_level_hu"])
        entry["voxel_level_hu"] = level  # the validation cases' median 95th percentile: ~5 % of their voxels above
        entry["above_voxel_level"] = round(float(np.mean(spread[body] > level)), 4)
    else:
        entry["calibration"] = (f"the package has no uncertainty calibration for mode {trust.uncertainty!r}"
                                + (f" (calibrated: {calibration['mode']!r})" if calibration else "")
                                + ": no limit, no flag")
    if extra.uncertainty_dir is not None:
        entry["filename"] = str(write_image(trust.uncertainty_image, extra.uncertainty_dir / f"{case_id}.mha"))
    if summary["flagged"]:
        message = (f"uncertainty above the calibrated limit: mean {summary['mean_hu']:g} HU > "
                   f"{summary['limit_hu']:g} HU inside the body")
        warnings.append(message)
        log.warning("%s: %s", where, message)
    else:
        log.info("%s: uncertainty (%s) mean %s HU, 95th percentile %s HU inside the body", where, trust.uncertainty,
                 summary["mean_hu"], summary["p95_hu"])
    return entry


def _qa_row(case: CaseFiles, region: str, mr: sitk.Image, sct: sitk.Image, mask: sitk.Image, qa_dir: Path,
            warnings: list[str], geometry: dict[str, Any], trust: TrustRequest | None = None,
            uncertainty: dict[str, Any] | None = None) -> dict[str, Any]:
    """The case's QA picture and table row (with what was done to the geometry, the uncertainty map and the
    out-of-distribution result); a failure here is a warning."""
    try:
        row = qa_case(case.case_id, region, mr, sct, mask, qa_dir, auto_mask=case.mask is None,
                      uncertainty=trust.uncertainty_image if trust is not None else None)
        row["geometry"] = geometry["summary"]
        if trust is not None and trust.ood_result is not None:
            row["ood"] = trust.ood_result
            if trust.ood_result.get("flagged"):
                row["flags"] = [*row.get("flags", []), *(f"out of distribution: {r}"
                                                         for r in trust.ood_result["reasons"])]
        if uncertainty is not None:
            row["uncertainty"] = {k: uncertainty.get(k) for k in ("mode", "mean_hu", "p95_hu", "limit_hu", "flagged")}
            if uncertainty.get("flagged"):
                row["flags"] = [*row.get("flags", []), f"uncertainty above the calibrated limit (mean "
                                f"{uncertainty['mean_hu']:g} HU > {uncertainty['limit_hu']:g} HU)"]
        if not geometry["checked"]:
            row["flags"] = [*row.get("flags", []), "orientation and spacing not checked (package without geometry)"]
        return row
    except Exception as exc:
        message = f"QA picture not made: {exc}"
        warnings.append(message)
        log.warning("%s: %s", case.case_id, message)
        return {"case_id": case.case_id, "error": message}
