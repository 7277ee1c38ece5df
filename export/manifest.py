"""The ``model.json`` content (BRIEF's model package contract) and the usage metadata embedded in the ONNX file."""

from __future__ import annotations

import datetime
import math
import platform
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from synthct.export.onnx_export import INPUT_NAME, OUTPUT_NAME
from synthct.export.source import ExportSource

from synthct.intensity import BACKGROUND_HU, HU_MAX, HU_MIN
from synthct.model_package import FORMAT, FORMAT_VERSION


def json_safe(value: Any) -> Any:
    """``value`` as strict-JSON data: tuples → lists, numpy/torch scalars → numbers, NaN/inf → None, paths → str."""
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [json_safe(v) for v in value]
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.generic | np.ndarray) and np.size(value) == 1:
        return json_safe(value.item())
    numel = getattr(value, "numel", None)  # a one-element torch tensor
    if callable(numel) and numel() == 1:
        return json_safe(value.item())
    return str(value)


def library_versions() -> dict[str, str | None]:
    """Versions of the libraries the export used (None: not installed)."""
    import importlib.metadata

    import synthct

    versions: dict[str, str | None] = {"synthct": synthct.__version__, "python": platform.python_version()}
    for name in ("torch", "monai", "onnx", "onnxruntime", "onnxruntime-gpu", "onnxscript", "onnxslim", "numpy",
                 "tensorrt"):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def usage(source: ExportSource) -> dict[str, Any]:
    """How to use the network: region, patch, intensity conventions (also stored inside the ONNX file)."""
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "region": source.region,
        "patch_size": list(source.patch_size),
        "overlap": source.overlap,
        "blend": source.blend,
        "sigma_scale": source.sigma_scale,
        "input_name": INPUT_NAME,
        "output_name": OUTPUT_NAME,
        "ct_normalisation": {"hu_min": HU_MIN, "hu_max": HU_MAX},
        "mr_normalisation": {"rule": source.mr_rule, "percentile": source.mr_percentile},
        "background_hu": BACKGROUND_HU,
        **({"geometry": source.geometry} if source.geometry is not None else {}),
    }


USAGE_NOTE = ("input mr: (N, 1, z, y, x) float32, MR / scale * 2 - 1 clipped to [-1, 1], scale = max (rule 'max') or "
              "the percentile (rule 'percentile') of the MR inside the body mask; output sct: same shape, normalised "
              "CT in [-1, 1], HU = (sct + 1) / 2 * (hu_max - hu_min) + hu_min; background_hu outside the body mask; "
              "sliding window with the given patch, overlap and blend")


def build_manifest(source: ExportSource, onnx_entry: dict[str, Any], parity: dict[str, Any],
                   optimisation: dict[str, Any], export_facts: dict[str, Any],
                   tensorrt_entry: dict[str, Any] | None = None) -> dict[str, Any]:
    """The full ``model.json`` (strict-JSON safe)."""
    manifest = usage(source)
    manifest.update({
        "usage": USAGE_NOTE,
        "onnx": onnx_entry,
        "tensorrt": tensorrt_entry,
        "versions": library_versions(),
        "training": {
            "checkpoint": {"file": source.path.name, "sha256": source.sha256},
            "config": source.config,
            "metrics": source.metrics,
            "epoch": source.epoch,
            "step": source.step,
            "versions": source.versions,
        },
        "parity": parity,
        "optimisation": optimisation,
        "export": {**export_facts, "created_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")},
    })
    return json_safe(manifest)
