"""``synthct evaluate``: score a folder of synthetic CTs against ground-truth CTs (SynthRAD metrics)."""

from __future__ import annotations

import argparse
from pathlib import Path

from synthct.metrics import VARIANTS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--pred",
        type=Path,
        required=True,
        help="folder of synthetic CTs: <ID>.<ext> (or names holding the id, or <ID>/sct.<ext>)",
    )
    parser.add_argument(
        "--gt",
        type=Path,
        required=True,
        help="ground truth: ct/<ID>.<ext> + mask/<ID>.<ext>, or case folders <ID>/{ct,mask}.<ext> "
        "(also under Task1/<region>/)",
    )
    parser.add_argument("--out", type=Path, default=Path("metrics.json"),
                        help="metrics.json to write (its folder is checked before any scoring: exit 2 if unusable)")
    parser.add_argument(
        "--mr",
        type=Path,
        default=None,
        help="folder of MR images by case id, shown in the pictures (default: mr.<ext> in the case folders, if any)",
    )
    parser.add_argument(
        "--pictures", type=Path, default=None, help="folder for per-case PNGs (axial/coronal/sagittal) and report.md"
    )
    parser.add_argument(
        "--variant",
        choices=VARIANTS,
        default="synthrad2023",
        help="synthrad2023: MAE/PSNR/SSIM, range -1024..3000 HU; synthrad2025: MAE/PSNR/MS-SSIM, range -1024..3071 HU",
    )
    parser.add_argument(
        "--only-predicted",
        action="store_true",
        help="score only ground-truth cases that have a prediction (e.g. a validation split); "
        "by default a case without prediction is an error",
    )
    parser.add_argument(
        "--ignore-geometry",
        action="store_true",
        help="score predictions whose spacing/origin/direction differ from the CT (size must match)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    dose = parser.add_argument_group("dose evaluation (optional extra 'dose')")
    dose.add_argument(
        "--dose",
        choices=("photon", "proton", "both"),
        default=None,
        help="also plan on the CT and recalculate on the sCT (pyRadPlan pencil beam): dose MAE, DVH, gamma 2%%/2 mm",
    )
    dose.add_argument(
        "--structures",
        type=Path,
        default=None,
        metavar="DIR",
        help="user structures DIR/<ID>/ptv.<ext> + DIR/<ID>/oar_<name>.<ext>, or one RTSTRUCT DIR/<ID>/*.dcm "
        "(default: a virtual target per region)",
    )
    dose.add_argument(
        "--dose-config", type=Path, default=None, metavar="YAML", help="dose settings file (a flat mapping)"
    )
    dose.add_argument(
        "--dose-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one dose setting, e.g. --dose-set dose_grid_mm=4 (repeatable)",
    )


def run(args: argparse.Namespace) -> int:
    import logging

    from synthct.evaluation.local import DoseRequest, run_local

    dose = None
    if args.dose is not None or args.structures is not None or args.dose_config is not None or args.dose_set:
        from synthct.evaluation.dose import DoseExtraMissing, require_dose_extra
        from synthct.evaluation.dose.config import DoseConfigError, load_dose_config, modalities

        if args.dose is None:
            logging.getLogger("synthct.evaluate").error("--structures/--dose-config/--dose-set need --dose")
            return 2
        try:
            require_dose_extra()
            config = load_dose_config(args.dose_config, args.dose_set)
        except (DoseExtraMissing, DoseConfigError) as exc:
            logging.getLogger("synthct.evaluate").error("%s", exc)
            return 2
        if args.structures is not None and not args.structures.is_dir():
            logging.getLogger("synthct.evaluate").error("%s: structures folder not found", args.structures)
            return 2
        dose = DoseRequest(modalities(args.dose), config, args.structures)
    from synthct.outputs import OutputError, check_output_file, output_session, report_unexpected

    log = logging.getLogger("synthct.evaluate")
    try:  # the metrics file's folder and the pictures folder: checked, locked, cleaned before any scoring
        check_output_file(args.out, "--out")
        folders = [args.out.parent, *([args.pictures] if args.pictures is not None else [])]
        with output_session(folders, "evaluate", create=folders):
            try:
                return run_local(
                    args.pred,
                    args.gt,
                    args.out,
                    mr_dir=args.mr,
                    pictures_dir=args.pictures,
                    variant=args.variant,
                    only_predicted=args.only_predicted,
                    strict_geometry=not args.ignore_geometry,
                    progress=not args.no_progress,
                    dose=dose,
                )
            except OSError as exc:
                log.error("%s", exc)
                return 2
            except Exception as exc:
                report_unexpected(log, exc, "synthct evaluate")
                return 2
    except OutputError as exc:
        log.error("%s", exc)
        return 2
