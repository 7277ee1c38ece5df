"""Read a training checkpoint and rebuild its generator, with the settings the model package must carry.

The checkpoint is read with ``torch.load(weights_only=True)`` (:func:`synthct.train.checkpoint.load_checkpoint`):
loading
never executes code from the file. Only the config keys the package needs are checked here (region, model and its
architecture, patch size, MR normalisation, overlap/blend), each with a message naming the checkpoint and the key;
weights of one generator architecture under a config naming the other are refused with both names.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
from synthct.export.errors import ExportError

from synthct.geometry import NetworkGeometry
from synthct.intensity import MR_RULES, MrRule
from synthct.model_package import sha256_of
from synthct.regions import REGIONS


@dataclass(frozen=True)
class ExportSource:
    """What the export takes from a checkpoint. ``patch_size`` is (z, y, x) in voxels."""

    path: Path
    sha256: str
    config: dict[str, Any]
    region: str
    model_config: dict[str, Any]
    architecture: str
    """``model.architecture``: swinunetr or resenc_unet (:data:`synthct.train.models.ARCHITECTURES`)."""
    patch_size: tuple[int, int, int]
    mr_rule: MrRule
    mr_percentile: float
    overlap: float
    blend: str
    sigma_scale: float
    epoch: int
    step: int
    metrics: dict[str, Any]
    versions: dict[str, Any]
    generator_state: dict[str, torch.Tensor] = field(repr=False)
    geometry: dict[str, Any] | None = None
    """The training geometry (:class:`synthct.geometry.NetworkGeometry` record), None for older checkpoints."""


def _section(config: Mapping[str, Any], name: str, where: str) -> Mapping[str, Any]:
    value = config.get(name, {})
    if not isinstance(value, Mapping):
        raise ExportError(f"{where}: config[{name!r}] must be a mapping, got {type(value).__name__}")
    return value


def _number(value: Any, key: str, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(float(value)):
        raise ExportError(f"{where}: config {key} must be a finite number, got {value!r}")
    return float(value)


def settings_from_config(config: Any, where: str) -> dict[str, Any]:
    """The package settings from a training config: region, model, patch (z, y, x), MR rule, overlap, blend."""
    if not isinstance(config, Mapping):
        raise ExportError(f"{where}: checkpoint 'config' must be a mapping, got {type(config).__name__}")
    region = config.get("region")
    if region not in REGIONS:
        raise ExportError(f"{where}: config region {region!r} is not one of {REGIONS}")
    model = _section(config, "model", where)
    data = _section(config, "data", where)
    validation = _section(config, "validation", where)
    patch = data.get("patch_size", [64, 64, 64])
    if not (isinstance(patch, list | tuple) and len(patch) == 3
            and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 and v % 32 == 0 for v in patch)):
        raise ExportError(f"{where}: config data.patch_size must be 3 positive multiples of 32, got {patch!r}")
    mr = data.get("mr_normalisation", {})
    if not isinstance(mr, Mapping) or mr.get("rule", "max") not in MR_RULES:
        raise ExportError(f"{where}: config data.mr_normalisation.rule must be one of {', '.join(MR_RULES)}, "
                          f"got {mr!r}")
    percentile = _number(mr.get("percentile", 99.5), "data.mr_normalisation.percentile", where)
    if not 0.0 < percentile <= 100.0:
        raise ExportError(f"{where}: config data.mr_normalisation.percentile must be in (0, 100], got {percentile}")
    from synthct.train.models import ArchitectureError, architecture_of

    try:
        architecture = architecture_of(model)
    except ArchitectureError as exc:
        raise ExportError(f"{where}: {exc}") from exc
    overlap = _number(validation.get("overlap", 0.5), "validation.overlap", where)
    if not 0.0 <= overlap < 1.0:
        raise ExportError(f"{where}: config validation.overlap must be in [0, 1), got {overlap}")
    blend = validation.get("blend", "gaussian")
    if blend not in ("gaussian", "constant"):
        raise ExportError(f"{where}: config validation.blend must be 'gaussian' or 'constant', got {blend!r}")
    sigma_scale = _number(validation.get("sigma_scale", 0.125), "validation.sigma_scale", where)
    if sigma_scale <= 0:
        raise ExportError(f"{where}: config validation.sigma_scale must be > 0, got {sigma_scale}")
    return {
        "region": str(region), "model_config": dict(model), "architecture": architecture,
        "patch_size": tuple(int(v) for v in patch),
        "mr_rule": cast(MrRule, mr.get("rule", "max")),  # checked against MR_RULES above
        "mr_percentile": percentile, "overlap": overlap,
        "blend": str(blend), "sigma_scale": sigma_scale,
    }


def read_checkpoint(path: str | os.PathLike[str]) -> ExportSource:
    """Read and check a checkpoint (BRIEF format). Raises :class:`ExportError` naming the file and problem."""
    from synthct.train.checkpoint import CheckpointError, load_checkpoint

    path = Path(path)
    try:
        checkpoint = load_checkpoint(path, map_location="cpu")
    except CheckpointError as exc:
        raise ExportError(str(exc)) from exc
    where = str(path)
    state = checkpoint.get("generator")
    if not isinstance(state, Mapping) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ExportError(f"{where}: checkpoint 'generator' must be a non-empty state dict of tensors")
    bad = [name for name, tensor in state.items()
           if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())]
    if bad:
        raise ExportError(f"{where}: generator weights hold NaN/inf values ({', '.join(bad[:5])}"
                          f"{' …' if len(bad) > 5 else ''}): the run diverged")
    settings = settings_from_config(checkpoint["config"], where)
    geometry = checkpoint.get("geometry")
    if geometry is not None:
        try:
            geometry = NetworkGeometry.from_dict(geometry, f"{where}: geometry").to_dict()
        except ValueError as exc:
            raise ExportError(str(exc)) from exc
    metrics = checkpoint.get("metrics") or {}
    versions = checkpoint.get("versions") or {}
    return ExportSource(
        path=path.resolve(), sha256=sha256_of(path), config=dict(checkpoint["config"]),
        epoch=int(checkpoint.get("epoch", 0)), step=int(checkpoint.get("step", 0)),
        metrics=dict(metrics) if isinstance(metrics, Mapping) else {},
        versions=dict(versions) if isinstance(versions, Mapping) else {},
        generator_state=dict(state), geometry=geometry, **settings,
    )


def build_generator_for_export(source: ExportSource) -> torch.nn.Module:
    """The checkpoint's generator in eval mode on the CPU, gradient checkpointing off (same weights)."""
    from synthct.train.models import ArchitectureError, build_generator, check_generator_state

    model_config = dict(source.model_config)
    model_config["use_checkpoint"] = False  # a training-time memory trick; it changes no weight
    try:
        check_generator_state(source.generator_state, model_config, str(source.path))
    except ArchitectureError as exc:
        raise ExportError(str(exc)) from exc
    try:
        generator = build_generator(model_config)
    except Exception as exc:  # MONAI raises ValueError/TypeError/AssertionError for bad shapes
        raise ExportError(f"{source.path}: cannot build the {source.architecture} generator from config.model "
                          f"{model_config} ({type(exc).__name__}: {exc})") from exc
    try:
        generator.load_state_dict(source.generator_state, strict=True)
    except RuntimeError as exc:
        hint = " (was the checkpoint written with another MONAI version?)" if source.architecture == "swinunetr" else ""
        raise ExportError(f"{source.path}: {source.architecture} generator weights do not fit config.model "
                          f"{model_config}{hint}: {exc}") from exc
    return generator.eval()
