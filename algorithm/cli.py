"""``synthct predict``: the algorithm on local files, with the container's code path (SPEC §9).

    synthct predict --mr MR.mha --mask MASK.mha --model models/brain --out out/
    synthct predict --mr mri/ --mask body/ --model models/ --region pelvis --out out/
    synthct predict --mr DICOM_SERIES_FOLDER --model models/brain --out out/ --dicom-out

``--mr``: an image file, a folder of image files, or DICOM as exported: a series or study folder, a tree of series
folders, a DICOMDIR (or its folder), or a folder of such cases (see :mod:`synthct.dicom.study` for the grouping into
cases, the planning-MR choice and the case ids; ``--series`` picks a series by UID, number or description).
Without ``--mask`` the body mask is computed from the MR (``OUT/body/<case id>.mha``).
Writes ``OUT/<case id>.mha`` (int16 HU, MR geometry), ``OUT/results.json``, ``OUT/qa/`` (unless ``--no-qa``),
``OUT/uncertainty/<case id>.mha`` with ``--uncertainty`` (SPEC §14; every case is also scored by the package's
out-of-distribution check, ``--refuse-ood`` makes a flagged case fail) and,
with ``--dicom-out``, ``OUT/dicom/<case id>/`` (CT Image Storage series; from a sagittal, coronal or oblique MR on a
transverse grid unless ``--ct-grid mr``, see :mod:`synthct.dicom.transverse`). Exit status 1 if any case failed, 2
when nothing could run. ``OUT`` is checked (a writable folder), locked against a concurrent run and cleaned of the
temporaries of a killed one before any inference (:mod:`synthct.outputs`); ``results.json`` and the QA page are
merged per case with an earlier run's into the same ``OUT``. ``--tta N`` makes the sCT the mean of N mirrored
predictions and ``--overlap`` replaces the package's window overlap (both recorded under ``inference`` in
results.json).
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from synthct.body_mask import DEFAULT_THRESHOLD_FRACTION

    parser.add_argument("--mr", type=Path, required=True,
                        help="MR image file, folder of MR images, or DICOM: series/study folder, tree of series "
                             "folders, DICOMDIR (or its folder), or a folder of such cases")
    parser.add_argument("--mask", type=Path, default=None,
                        help="body mask file, or a folder (paired by case id); default: automatic body mask from "
                             "the MR, written to OUT/body/<case id>.mha")
    parser.add_argument("--series", default=None, metavar="UID|NUMBER|TEXT",
                        help="the DICOM series to read when a case holds several 3-D MR series: its "
                             "SeriesInstanceUID, its SeriesNumber, or part of its SeriesDescription (any case); "
                             "default: the only 3-D MR series (localizers, other modalities and non-image objects "
                             "are skipped)")
    parser.add_argument("--dicom-out", action="store_true",
                        help="also write each sCT as a DICOM CT series into OUT/dicom/<case id>/")
    parser.add_argument("--ct-grid", choices=("transverse", "mr"), default="transverse",
                        help="DICOM CT grid when the MR's slices are more than 10° from transverse (sagittal, "
                             "coronal, oblique): transverse (default: axis-aligned, covering the body + 10 mm, "
                             "linear in HU) or mr (the MR's own grid). A transverse MR always keeps its grid")
    parser.add_argument("--ct-slice-mm", type=float, default=None, metavar="MM",
                        help="slice spacing of a transverse DICOM CT grid (default: the MR's finest spacing, at "
                             "least 1 mm)")
    parser.add_argument("--resample", choices=("auto", "never"), default=os.environ.get("SYNTHCT_RESAMPLE") or "auto",
                        help="auto (default): bring the MR to the model's training spacing when an axis differs by "
                             "more than the package's tolerance (the sCT is mapped back onto the MR's grid); never: "
                             "only reorient (axis permutation/flip). Default from SYNTHCT_RESAMPLE")
    parser.add_argument("--no-qa", action="store_true", help="no QA page (OUT/qa/<case id>.png, OUT/qa/index.html)")
    from synthct.trust import DEFAULT_UNCERTAINTY_MODE, UNCERTAINTY_MODES

    passes = len(UNCERTAINTY_MODES[DEFAULT_UNCERTAINTY_MODE]) + 1
    parser.add_argument("--uncertainty", nargs="?", const=DEFAULT_UNCERTAINTY_MODE, default=None,
                        choices=(*UNCERTAINTY_MODES, "off"), metavar="MODE",
                        help="also write OUT/uncertainty/<case id>.mha: the spread (HU) of the sCT over test-time "
                             f"augmentations; MODE {', '.join(UNCERTAINTY_MODES)} (default when given: "
                             f"{DEFAULT_UNCERTAINTY_MODE}, {passes} passes of the network instead of 1); off by "
                             "default")
    from synthct.trust import TTA_MAX

    parser.add_argument("--tta", type=int, default=1, metavar="N",
                        help="mirroring test-time augmentation: the sCT is the mean of N predictions, the MR "
                             f"mirrored along N − 1 axis combinations (1: none, the default; up to {TTA_MAX}: all; "
                             "2: left–right); N times the network's work. Recorded in results.json")
    parser.add_argument("--overlap", type=float, default=None, metavar="F",
                        help="overlap of neighbouring windows, 0 ≤ F < 1 (default: the model package's own, "
                             "model.json 'overlap'); recorded in results.json when given")
    parser.add_argument("--refuse-ood", action="store_true",
                        default=os.environ.get("SYNTHCT_REFUSE_OOD", "").strip().lower() in ("1", "true", "yes"),
                        help="a case the out-of-distribution check flags fails (a per-case error) instead of being "
                             "predicted with a warning (default from SYNTHCT_REFUSE_OOD)")
    parser.add_argument("--mask-threshold", type=float, default=None, metavar="T",
                        help="automatic body mask: threshold at p2.5 + T·(p97.5 − p2.5) of the MR (default "
                             f"{DEFAULT_THRESHOLD_FRACTION:g})")
    models = os.environ.get("SYNTHCT_MODELS")  # set in the algorithm image: its installed packages
    parser.add_argument("--model", type=Path, required=not models, default=Path(models) if models else None,
                        help="model package folder (model.json), or a folder of <region>/ packages"
                        + (f" (default: $SYNTHCT_MODELS = {models})" if models else ""))
    parser.add_argument("--out", type=Path, required=True, help="output folder for <case id>.mha and results.json")
    parser.add_argument("--region", default=None,
                        help="anatomy (Brain, Pelvis, 'Head and Neck', …); default: the only model, else the case id")
    from synthct.algorithm.backends import BACKENDS

    parser.add_argument("--backend", choices=BACKENDS, default=os.environ.get("SYNTHCT_BACKEND") or "auto",
                        help="runtime backend (default: SYNTHCT_BACKEND, else auto: fastest this CPU/GPU supports "
                             "within the package's measured accuracy bound)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--batch-size", type=int, default=4, help="windows per network call (default 4)")
    parser.add_argument("--threads", type=int, default=None, help="ONNX Runtime CPU threads (default: all cores)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from synthct.algorithm.cases import RegionError, canonical_region, collect_cases

    from synthct.body_mask import DEFAULT_THRESHOLD_FRACTION
    from synthct.io import IMAGE_SUFFIXES
    from synthct.trust import TTA_MAX

    if args.batch_size < 1:
        log.error("--batch-size must be at least 1")
        return 2
    if not 1 <= args.tta <= TTA_MAX:
        log.error("--tta must be between 1 (no test-time augmentation) and %d (every mirroring), got %d", TTA_MAX,
                  args.tta)
        return 2
    if args.overlap is not None and not 0.0 <= args.overlap < 1.0:
        log.error("--overlap must be in [0, 1), got %g", args.overlap)
        return 2
    if args.ct_slice_mm is not None and not 0.0 < args.ct_slice_mm < float("inf"):
        log.error("--ct-slice-mm must be a positive number of mm, got %g", args.ct_slice_mm)
        return 2
    if args.ct_slice_mm is not None and (not args.dicom_out or args.ct_grid == "mr"):
        log.warning("--ct-slice-mm %g has no effect without --dicom-out and --ct-grid transverse", args.ct_slice_mm)
    threshold = DEFAULT_THRESHOLD_FRACTION if args.mask_threshold is None else args.mask_threshold
    if not 0.0 < threshold < 1.0:
        log.error("--mask-threshold must be between 0 and 1, got %g", threshold)
        return 2
    try:
        region = canonical_region(args.region) if args.region else None
        cases = collect_cases(args.mr, args.mask, args.series)
    except (RegionError, FileNotFoundError) as exc:
        log.error("%s", exc)
        return 2
    if not cases:
        log.error("no MR images found in %s (accepted: image files %s, DICOM folders or trees at any depth, a "
                  "DICOMDIR, or a folder of either)", args.mr, ", ".join(IMAGE_SUFFIXES))
        return 2
    from synthct.outputs import OutputError, output_session, report_unexpected

    try:  # checked, locked and cleaned of stale temporaries before any inference (synthct.outputs)
        with output_session([args.out, args.out / "body", args.out / "dicom", args.out / "qa",
                             args.out / "uncertainty"], "predict"):
            try:
                return _predict_cases(args, cases, region, threshold)
            except OSError as exc:
                log.error("%s", exc)
                return 2
            except Exception as exc:
                report_unexpected(log, exc, "synthct predict")
                return 2
    except OutputError as exc:
        log.error("--out: %s", exc)
        return 2


def _predict_cases(args: argparse.Namespace, cases: list, region: str | None, threshold: float) -> int:
    """Load the models, run the cases, merge results.json; the exit status (0, 1 if a case failed, 2 if none ran)."""
    from synthct.algorithm.cases import find_model_packages
    from synthct.algorithm.runner import ExtraOutputs, ModelRegistry, run_cases, write_results

    from synthct.model_package import ModelPackageError

    problems: list[str] = []
    try:
        packages = find_model_packages(args.model, problems)
    except ModelPackageError as exc:
        log.error("--model: %s", exc)
        return 2
    if not packages:
        log.error("%s: no model package (model.json) found%s", args.model,
                  f" ({'; '.join(problems)})" if problems else "")
        return 2
    registry = ModelRegistry(packages, args.backend, args.device, args.threads, problems)
    uncertainty = None if args.uncertainty in (None, "off") else args.uncertainty
    extra = ExtraOutputs(body_dir=args.out / "body", dicom_dir=args.out / "dicom" if args.dicom_out else None,
                         qa_dir=None if args.no_qa else args.out / "qa", threshold_fraction=threshold,
                         ct_grid=args.ct_grid, ct_slice_mm=args.ct_slice_mm, region_source="--region",
                         uncertainty=uncertainty, uncertainty_dir=args.out / "uncertainty" if uncertainty else None,
                         refuse_ood=args.refuse_ood, tta=args.tta, overlap=args.overlap)
    entries, failed = run_cases(cases, registry, args.out, region, None, args.batch_size, not args.no_progress,
                                extra, args.resample)
    entries = [{"case_id": case.case_id, **entry} for case, entry in zip(cases, entries, strict=True)]
    write_results(args.out / "results.json", entries)
    log.info("%d of %d case(s) written to %s", len(cases) - failed, len(cases), args.out)
    return 1 if failed else 0
