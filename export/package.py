"""Checkpoint → model package folder, all or nothing; ``model.json`` records the generator (``generator``: its
architecture and the settings that shape it) beside the training config.

Everything is written into a temporary folder beside ``out``; the folder is verified with
:func:`synthct.model_package.load_model_package` and renamed into place only when the ONNX export, the parity
check (and the optional optimisation and TensorRT steps) succeeded. On any failure the temporary folder is
removed and an existing package at ``out`` is left untouched.
"""

from __future__ import annotations

import copy
import logging
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from synthct.export.accurate_norm import swap_instance_norms
from synthct.export.errors import ExportError
from synthct.export.onnx_export import DEFAULT_OPSET, Exporter, OnnxFiles, export_onnx
from synthct.export.parity import (
    DEFAULT_TOLERANCE_HU,
    ParityInputs,
    compare,
    make_inputs,
    ort_predictor,
    ort_session,
    require_parity,
    torch_predictor,
)
from synthct.export.source import ExportSource, build_generator_for_export, read_checkpoint
from tqdm import tqdm

from synthct.atomic import temp_prefix
from synthct.model_package import (
    MANIFEST_NAME,
    file_entry,
    load_model_package,
    sha256_of,
    write_manifest,
)
from synthct.regions import REGIONS

log = logging.getLogger("synthct.export")

MODEL_NAME = "model.onnx"


@dataclass
class ExportOptions:
    """What ``synthct export`` does besides the ONNX export and its parity check."""

    opset: int = DEFAULT_OPSET
    exporter: Exporter = "dynamo"
    external_data: bool | None = None
    """None: only for weights over 1 GiB."""
    axis_wise_instance_norm: bool = True
    """Export instance norms with per-axis means (:mod:`synthct.export.accurate_norm`): ONNX Runtime ≈ 100× closer."""
    optimise: bool = True
    tensorrt: bool = False
    max_batch: int = 4
    trt_precision: str = "fp16"
    trt_tolerance_hu: float = 5.0
    trt_workspace_gib: float = 4.0
    data_dir: Path | None = None
    """Dataset for the real-data parity patches (default: the checkpoint's data.root if it exists, else a phantom)."""
    parity_tolerance_hu: float = DEFAULT_TOLERANCE_HU
    parity_random: int = 2
    parity_data: int = 2
    seed: int = 0
    threads: int | None = None
    measure_repeats: int = 3
    fp16: bool = True
    """Also write the GPU's fp16 graph (``model_fp16.onnx``, normalisations kept fp32)."""
    backend_accuracy: bool = True
    """Measure every other runtime backend against the fp32 sCT on validation cases (recorded in model.json)."""
    accuracy_cases: int = 2
    trust: bool = True
    """Record the training cases' distribution and calibrate the uncertainty (``trust``,
    :mod:`synthct.export.trust_record`) when the training data is here."""
    force: bool = False
    progress: bool = True


def check_destination(out: Path, force: bool, region: str | None = None) -> None:
    """Refuse a destination that is a file, a non-empty folder (unless ``force``), or named for another region."""
    if region is not None and out.name.lower() in REGIONS and out.name.lower() != region:
        raise ExportError(f"{out}: the folder is named for region {out.name!r} but the checkpoint is a {region!r} "
                          "model; export it to a folder of its own region")
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise ExportError(f"{out}: folder exists and is not empty (use --force to replace the package)")


def move_into_place(staging: Path, out: Path, force: bool) -> None:
    """Rename ``staging`` to ``out``; an existing non-empty ``out`` (with ``force``) is swapped out, then deleted."""
    check_destination(out, force)
    backup = None
    if out.is_dir():
        if any(out.iterdir()):
            backup = out.with_name(f".{out.name}.replaced-{os.getpid()}")
            os.replace(out, backup)
        else:
            out.rmdir()
    try:
        os.replace(staging, out)
    except OSError:
        if backup is not None:
            os.replace(backup, out)
        raise
    if backup is not None:
        shutil.rmtree(backup, ignore_errors=True)


def _onnx_entry(files: OnnxFiles, model: Path, external_data: Path | None, name: str) -> dict[str, Any]:
    return {**file_entry(model), "opset": files.opset,
            "external_data": file_entry(external_data) if external_data else None,
            "exporter": files.exporter, "variant": name}


def _default_data_dir(source: ExportSource, options: ExportOptions) -> Path | None:
    if options.data_dir is not None:
        return Path(options.data_dir)
    root = str((source.config.get("data") or {}).get("root") or "")
    if root and Path(root).is_dir():
        return Path(root)
    if root:
        log.info("checkpoint data.root %s is not here: parity uses a phantom", root)
    return None


def _optimise(files: OnnxFiles, inputs: ParityInputs, reference: np.ndarray, plain_parity: dict[str, Any],
              source: ExportSource, options: ExportOptions) -> tuple[Any, dict[str, Any]]:
    """Make, check and measure the optimised candidates; returns (chosen candidate or None, manifest section)."""
    from synthct.export.optimise import choose, make_candidates, measure, remove

    candidates = make_candidates(files.model, files.external_data is not None)
    batch = inputs.all()
    for candidate in candidates:
        output = ort_predictor(ort_session(candidate.model, options.threads))(batch)
        candidate.parity = compare(inputs, reference, output, options.parity_tolerance_hu)
    checked = [c for c in candidates if c.parity and c.parity["passed"]]
    measurements = measure([files.model, *(c.model for c in checked)], source.patch_size, options.measure_repeats,
                           options.threads)
    plain = measurements[0]
    for candidate, measured in zip(checked, measurements[1:], strict=True):
        candidate.measurement = measured
    best = choose(plain, candidates)
    for candidate in candidates:
        if candidate is not best:
            remove(candidate)
    section = {"chosen": best.name if best else "none", "plain": {"file": files.model.name,
               "parity_max_abs_hu": plain_parity["max_abs_hu"], "measurement": asdict(plain)},
               "candidates": [c.summary() for c in candidates],
               "rule": "kept only if parity holds and it is smaller or ≥ 5 % faster per patch (ONNX Runtime CPU, "
                       "online ORT_ENABLE_ALL, batch 1, fastest of interleaved runs)"}
    return best, section


def _tensorrt(trt: Any, staging: Path, onnx_model: Path, inputs: ParityInputs, ort_output: np.ndarray,
              source: ExportSource, options: ExportOptions) -> dict[str, Any]:
    """Build the engine from ``onnx_model``, compare it with ONNX Runtime's ``ort_output``; the manifest entry."""
    from synthct.export.tensorrt_build import (
        PLAN_NAME,
        build_engine,
        engine_parity,
        gpu_description,
        require_engine_parity,
        run_engine,
    )

    plan_path = staging / PLAN_NAME
    facts = build_engine(trt, onnx_model, plan_path, source.patch_size, options.max_batch, options.trt_precision,
                         options.trt_workspace_gib)
    output = run_engine(trt, plan_path.read_bytes(), inputs.all(), options.max_batch)
    parity = engine_parity(inputs, ort_output, output, options.trt_tolerance_hu)
    require_engine_parity(parity, plan_path)
    built_from = {"sha256": sha256_of(onnx_model), "instance_norm": "onnx InstanceNormalization",
                  "note": "exported beside the package's ONNX for TensorRT only (not shipped)"}
    return {**file_entry(plan_path), **facts, **gpu_description(), "built_from": built_from, "parity": parity}


def _make_readable(folder: Path) -> None:
    """Folder 0755, files 0644: temporary files are created 0600, and a container may run as another user."""
    os.chmod(folder, 0o755)
    for path in folder.iterdir():
        if path.is_file():
            os.chmod(path, 0o644)


def export_package(checkpoint: str | os.PathLike[str], out: str | os.PathLike[str],
                   options: ExportOptions | None = None) -> dict[str, Any]:
    """Export ``checkpoint`` to the model package folder ``out``; returns the written manifest.

    Raises :class:`ExportError` (nothing written) when the checkpoint, the export, a parity check or TensorRT fails.
    """
    options = options or ExportOptions()
    out = Path(out)
    check_destination(out, options.force)
    trt = None
    if options.tensorrt:
        from synthct.export.tensorrt_build import profile_shapes, require_tensorrt

        profile_shapes((64, 64, 64), options.max_batch)  # a bad --max-batch fails before any work
        trt = require_tensorrt()
    source = read_checkpoint(checkpoint)
    if source.geometry is None:
        log.warning("%s: the checkpoint records no training geometry (written before synthct recorded it): the "
                    "package will run on every MR's grid as stored, without orientation/spacing checks; retrain "
                    "(or resume for a step) to record it", source.path)
    check_destination(out, options.force, source.region)
    out.parent.mkdir(parents=True, exist_ok=True)
    steps = ["export ONNX", "parity", *(["optimise"] if options.optimise else []),
             *(["TensorRT"] if options.tensorrt else []), *(["fp16"] if options.fp16 else []), "manifest",
             *(["backend accuracy"] if options.backend_accuracy else [])]
    staging = Path(tempfile.mkdtemp(prefix=f"{temp_prefix(out.name)}export-", dir=out.parent))
    try:
        with tqdm(total=len(steps), desc="export", unit="step", disable=not options.progress) as bar:
            manifest = _export_into(staging, source, options, trt, bar)
        _make_readable(staging)
        move_into_place(staging, out, options.force)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return manifest


def _export_into(staging: Path, source: ExportSource, options: ExportOptions, trt: Any, bar: tqdm) -> dict[str, Any]:
    from synthct.export.manifest import usage

    def step(name: str) -> None:
        bar.set_postfix_str(name)
        log.info("export: %s", name)

    step("export ONNX")
    generator = build_generator_for_export(source)
    to_export, swapped = generator, 0
    if options.axis_wise_instance_norm:
        to_export = copy.deepcopy(generator)
        swapped = swap_instance_norms(to_export)
    from synthct.train.models import architecture_settings

    generator_record = architecture_settings(source.model_config)
    metadata = {**usage(source), "generator": generator_record, "checkpoint_sha256": source.sha256}
    files = export_onnx(to_export, staging / MODEL_NAME, source.patch_size, options.opset, options.exporter,
                        options.external_data, metadata)
    del to_export
    trt_source = None
    if trt is not None or options.fp16:  # TensorRT and the fp16 graph get native InstanceNormalization: GPU
        # reductions are accurate, and the normalisation layers can be pinned to FP32, which a decomposed
        # (Reduce/elementwise) norm could not
        scratch = staging / ".native-norm-source"
        scratch.mkdir()
        trt_source = export_onnx(generator, scratch / MODEL_NAME, source.patch_size, options.opset, options.exporter,
                                 options.external_data, metadata)
    bar.update()

    step("parity")
    inputs = make_inputs(source.patch_size, source.region, source.mr_rule, source.mr_percentile,
                         options.parity_random, options.parity_data, _default_data_dir(source, options), options.seed)
    batch = inputs.all()
    reference = torch_predictor(generator)(batch)
    del generator
    plain_output = ort_predictor(ort_session(files.model, options.threads))(batch)
    plain_parity = compare(inputs, reference, plain_output, options.parity_tolerance_hu)
    require_parity(plain_parity, str(files.model))
    bar.update()

    model, data, variant, parity = files.model, files.external_data, "plain", plain_parity
    output: np.ndarray | None = plain_output
    optimisation: dict[str, Any] = {"chosen": "none", "reason": "--no-optimise"}
    if options.optimise:
        step("optimise")
        best, optimisation = _optimise(files, inputs, reference, plain_parity, source, options)
        if best is not None:
            model, data, variant, parity = best.model, best.external_data, best.name, best.parity
            output = None  # recomputed below for the TensorRT comparison only
            optimisation["source"] = _onnx_entry(files, files.model, files.external_data, "plain")
        bar.update()

    onnx_entry = _onnx_entry(files, model, data, variant)
    parity_section = {"reference": "pytorch eager fp32 (CPU)", "onnxruntime": parity,
                      **({"onnxruntime_plain": plain_parity} if variant != "plain" else {})}
    tensorrt_entry = None
    if trt is not None:
        step("TensorRT")
        if output is None:
            output = ort_predictor(ort_session(model, options.threads))(batch)
        assert trt_source is not None
        tensorrt_entry = _tensorrt(trt, staging, trt_source.model, inputs, output, source, options)
        parity_section["tensorrt"] = tensorrt_entry.pop("parity")
        bar.update()
    fp16_entry = None
    if options.fp16:
        step("fp16")
        from synthct.export.fp16 import FP16_NAME, convert_to_fp16

        assert trt_source is not None
        facts16 = convert_to_fp16(trt_source.model, staging / FP16_NAME)
        fp16_entry = {**file_entry(staging / FP16_NAME), **facts16, "built_from": "native InstanceNormalization "
                      "export of the same checkpoint", "use": "ONNX Runtime CUDA only (backend onnxruntime-fp16)"}
        bar.update()
    if trt_source is not None:
        shutil.rmtree(trt_source.model.parent)

    step("manifest")
    from synthct.export.manifest import build_manifest, json_safe

    facts = {"exporter": files.exporter, "opset": files.opset, "export_s": round(files.seconds, 2),
             "instance_norm": f"axis-wise means ({swapped} layers)" if swapped else "onnx InstanceNormalization",
             "parity_patches": {"random": len(inputs.random), "data": len(inputs.data)}}
    manifest = build_manifest(source, onnx_entry, parity_section, optimisation, facts, tensorrt_entry)
    manifest["generator"] = json_safe(generator_record)  # the architecture and the settings that shape it
    if fp16_entry is not None:
        manifest["onnx_fp16"] = json_safe(fp16_entry)
    _write_verified(staging, manifest, source.region)
    bar.update()
    if options.backend_accuracy:
        step("backend accuracy")
        from synthct.export.backend_accuracy import accuracy_cases, measure_backends

        cases = accuracy_cases(source.region, options.accuracy_cases, _default_data_dir(source, options),
                               source.config, options.seed + 1000)
        manifest["backend_accuracy"] = json_safe(measure_backends(staging, cases, threads=options.threads))
        _write_verified(staging, manifest, source.region)
        bar.update()
    if options.trust:
        _add_trust(staging, manifest, source, options)
    return manifest


def _add_trust(staging: Path, manifest: dict[str, Any], source: ExportSource, options: ExportOptions) -> None:
    """The ``trust`` record from the checkpoint's training data and split (a warning, no record, when absent)."""
    from synthct.export.manifest import json_safe
    from synthct.export.trust_record import make_record

    data = _default_data_dir(source, options)
    split_value = str((source.config.get("data") or {}).get("split") or "")
    split = next((p for p in (Path(split_value) if split_value else None, source.path.parent / "split.json")
                  if p is not None and p.is_file()), None)
    if data is None:
        log.warning("no training data here: the package gets no trust record (the out-of-distribution check is "
                    "skipped); add it later with synthct trust-record")
        return
    try:
        manifest["trust"] = json_safe(make_record(load_model_package(staging), data, split, threads=options.threads))
    except Exception as exc:  # optional: a record that cannot be made never fails the export; the warning says why
        log.warning("trust record not made (%s: %s): the out-of-distribution check will be skipped; add it with "
                    "synthct trust-record", type(exc).__name__, exc)
        manifest.pop("trust", None)
        return
    _write_verified(staging, manifest, source.region)


def _write_verified(staging: Path, manifest: dict[str, Any], region: str) -> None:
    try:
        write_manifest(staging, manifest)
        load_model_package(staging, expected_region=region)
    except ValueError as exc:  # ModelPackageError
        raise ExportError(f"the package manifest does not verify: {exc}") from exc
    if not (staging / MANIFEST_NAME).is_file():  # pragma: no cover - write_manifest raises instead
        raise ExportError(f"{staging}: {MANIFEST_NAME} was not written")
