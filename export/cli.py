"""``synthct export``: a training checkpoint → a self-describing model package folder.

    synthct export --checkpoint runs/NAME/best.pt --out models/brain/ [--opset 18] [--trt] [--max-batch N]
                   [--no-optimise] [--data DIR] [--force]

Writes ``model.onnx`` and ``model.json`` (plus an optimised ONNX when it measured faster or smaller, and
``model.plan`` with ``--trt``). Exit status 0 on success, 1 when the export or a parity check fails (no package is
left behind), 2 for bad arguments. torch, onnx and onnxruntime are imported only in :func:`run`.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

log = logging.getLogger("synthct.export")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``export`` subcommand's options."""
    parser.add_argument("--checkpoint", required=True, type=Path, help="training checkpoint (e.g. runs/NAME/best.pt)")
    parser.add_argument("--out", required=True, type=Path, help="package folder to write (e.g. models/brain/)")
    parser.add_argument("--opset", type=int, default=18, help="ONNX opset (≥ 17; the dynamo exporter writes ≥ 18)")
    parser.add_argument("--exporter", choices=("dynamo", "legacy"), default="dynamo",
                        help="torch.onnx exporter: dynamo (default) or legacy TorchScript tracing (allows opset 17)")
    parser.add_argument("--external-data", choices=("auto", "yes", "no"), default="auto",
                        help="keep the weights in model.onnx.data (auto: only above 1 GiB)")
    parser.add_argument("--onnx-instance-norm", dest="axis_wise_instance_norm", action="store_false",
                        help="export instance norms as ONNX InstanceNormalization (less accurate in ONNX Runtime "
                             "CPU: ~1 HU max error at 64³) instead of per-axis means")
    parser.add_argument("--no-optimise", dest="optimise", action="store_false",
                        help="skip the offline graph optimisation candidates")
    parser.add_argument("--trt", action="store_true", help="also build a TensorRT 10.x engine (needs an NVIDIA GPU)")
    parser.add_argument("--max-batch", type=int, default=4, help="largest batch of the TensorRT profile (default 4)")
    parser.add_argument("--trt-precision", choices=("fp16", "fp32"), default="fp16")
    parser.add_argument("--trt-tolerance-hu", type=float, default=5.0,
                        help="largest mean |TensorRT − ONNX Runtime| in HU (body / random patches), default 5")
    parser.add_argument("--trt-workspace-gib", type=float, default=4.0, help="TensorRT builder workspace (GiB)")
    parser.add_argument("--data", type=Path, default=None,
                        help="dataset folder for the real-data parity patches (default: the checkpoint's data.root, "
                             "else a generated phantom)")
    parser.add_argument("--parity-tolerance-hu", type=float, default=0.5,
                        help="largest |ONNX Runtime − PyTorch| allowed, HU (default 0.5)")
    parser.add_argument("--parity-patches", type=int, default=2,
                        help="random and data patches each in the parity check (default 2 + 2)")
    parser.add_argument("--threads", type=int, default=None, help="ONNX Runtime CPU threads (default: all cores)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the parity patches")
    parser.add_argument("--no-fp16", dest="fp16", action="store_false",
                        help="do not write the GPU's fp16 graph (model_fp16.onnx)")
    parser.add_argument("--no-backend-accuracy", dest="backend_accuracy", action="store_false",
                        help="do not measure OpenVINO / fp16 backends against the fp32 sCT (they are then never "
                             "chosen automatically)")
    parser.add_argument("--accuracy-cases", type=int, default=2,
                        help="validation cases (with CT) for the backend accuracy check (default 2)")
    parser.add_argument("--no-trust", dest="trust", action="store_false",
                        help="no training record (out-of-distribution check, uncertainty calibration) in model.json; "
                             "default: made from the checkpoint's training data and split when they are here")
    parser.add_argument("--force", action="store_true", help="replace an existing package at --out")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Export; print a one-line summary. Returns the exit status."""
    from synthct.export.errors import ExportError
    from synthct.export.package import ExportOptions, export_package

    if args.max_batch < 1 or args.parity_patches < 1 or args.parity_tolerance_hu <= 0 or args.accuracy_cases < 1:
        log.error("--max-batch, --parity-patches and --accuracy-cases must be ≥ 1 and --parity-tolerance-hu > 0")
        return 2
    options = ExportOptions(
        opset=args.opset, exporter=args.exporter,
        external_data={"auto": None, "yes": True, "no": False}[args.external_data],
        axis_wise_instance_norm=args.axis_wise_instance_norm, optimise=args.optimise, tensorrt=args.trt,
        max_batch=args.max_batch, trt_precision=args.trt_precision,
        trt_tolerance_hu=args.trt_tolerance_hu, trt_workspace_gib=args.trt_workspace_gib, data_dir=args.data,
        parity_tolerance_hu=args.parity_tolerance_hu, parity_random=args.parity_patches,
        parity_data=args.parity_patches, seed=args.seed, threads=args.threads, force=args.force,
        progress=args.progress, fp16=args.fp16, backend_accuracy=args.backend_accuracy,
        accuracy_cases=args.accuracy_cases, trust=args.trust,
    )
    try:
        manifest = export_package(args.checkpoint, args.out, options)
    except ExportError as exc:
        log.error("%s", exc)
        return 1
    parity = manifest["parity"]["onnxruntime"]
    summary = {
        "package": str(args.out), "region": manifest["region"], "onnx": manifest["onnx"]["file"],
        "optimisation": manifest["optimisation"]["chosen"],
        "parity_max_abs_hu": parity["max_abs_hu"], "parity_data_source": parity["data_source"],
        "tensorrt": manifest["tensorrt"]["file"] if manifest.get("tensorrt") else None,
    }
    if manifest.get("tensorrt"):
        trt_parity = manifest["parity"]["tensorrt"]
        summary["tensorrt_mean_abs_hu_in_mask"] = trt_parity["data"].get("mean_abs_hu_in_mask")
    accuracy = (manifest.get("backend_accuracy") or {}).get("results", {})
    summary["backend_accuracy"] = {name: {"passed": r.get("passed"), **r.get("worst", {})}
                                   for name, r in accuracy.items()}
    print(json.dumps(summary))
    return 0
