"""The training config: typed, range-checked dataclasses with the paper's values as defaults.

A config is a nested mapping (YAML file) with the sections ``model``, ``data``, ``loss``, ``optim``, ``train``,
``validation``, ``logging`` and the top-level ``region``. Loading rejects unknown keys (naming the key and the
closest valid one), wrong types and out-of-range values, each with the dotted path of the key. ``--set a.b=value``
overrides are parsed with ``yaml.safe_load``. The resolved config (every key, defaults filled in) is what the run
folder's ``config.yaml`` and every checkpoint store.

Paper (Karimzadeh & Ibragimov; SPEC §3): 64³ patches, AdamW at a constant lr of 1e-5, loss
``mean(|W|·|G−P|) + α·(1−SSIM) + λ·L_GAN`` with ``W = (1+G)/2``, 80/20 seeded split, 1000 epochs. The paper's α and λ
could not be found, so α = 1 and λ = 0.01 (pix2pix-style: the adversarial term a small fraction of the
reconstruction terms) are this project's choice.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

REGIONS = ("brain", "pelvis", "hn", "th", "ab")


class ConfigError(ValueError):
    """A config problem; the message names the key (dotted path) and what is wrong."""


def _range(low: float | None = None, high: float | None = None, *, low_open: bool = False,
           multiple_of: int | None = None, length: int | None = None) -> dict[str, Any]:
    """Field metadata: the allowed range (inclusive unless ``low_open``), a required multiple, a list length."""
    return {"low": low, "high": high, "low_open": low_open, "multiple_of": multiple_of, "length": length}


@dataclass
class ModelConfig:
    """Networks (passed to train.models.build_generator / build_discriminator)."""

    feature_size: int = field(default=24, metadata=_range(12, 192, multiple_of=12))
    depths: list[int] = field(default_factory=lambda: [2, 2, 2, 2], metadata=_range(1, 12, length=4))
    num_heads: list[int] = field(default_factory=lambda: [3, 6, 12, 24], metadata=_range(1, 64, length=4))
    use_v2: bool = False
    use_checkpoint: bool = False
    disc_channels: int = field(default=32, metadata=_range(4, 512))
    disc_layers: int = field(default=3, metadata=_range(1, 5))


@dataclass
class MrNormalisationConfig:
    """MR → [-1, 1] rule (synthct.intensity.normalise_mr): the paper's max, or a robust percentile."""

    rule: Literal["max", "percentile"] = "max"
    percentile: float = field(default=99.5, metadata=_range(0.0, 100.0, low_open=True))


@dataclass
class AugmentConfig:
    """Random rotation + affine (scale, translation) applied to MR, CT and mask together (MONAI Affined)."""

    enabled: bool = True
    probability: float = field(default=0.5, metadata=_range(0.0, 1.0))
    rotate_degrees: float = field(default=10.0, metadata=_range(0.0, 180.0))
    """Maximum rotation about each axis, degrees (uniform in ±value)."""
    scale: float = field(default=0.1, metadata=_range(0.0, 0.5))
    """Maximum relative scale change per axis (uniform in 1 ± value)."""
    translate_voxels: float = field(default=4.0, metadata=_range(0.0, 64.0))
    """Maximum translation per axis, voxels."""
    where: Literal["auto", "loader", "device"] = "auto"
    """loader: MONAI Affined per patch in the loader processes; device: one batched grid_sample per batch on the
    training device (train.augment); auto: device on CUDA, loader on CPU. Same geometry either way."""


@dataclass
class DataConfig:
    """Training data: patches, normalisation, split, sampling."""

    root: str = ""
    """Dataset folder (``synthct train --data``)."""
    split: str = ""
    """Split JSON (``--split``); empty: a seeded split is made and written to the run folder."""
    val_fraction: float = field(default=0.2, metadata=_range(0.0, 1.0, low_open=True))
    split_seed: int = field(default=0, metadata=_range(0))
    patch_size: list[int] = field(default_factory=lambda: [64, 64, 64], metadata=_range(64, 512, multiple_of=32,
                                                                                          length=3))
    """Training patch (z, y, x), voxels. SwinUNETR needs multiples of 32, and ≥ 64 to train (instance norm of its
    1/32-resolution bottleneck needs more than one voxel)."""
    mr_normalisation: MrNormalisationConfig = field(default_factory=MrNormalisationConfig)
    foreground_fraction: float = field(default=0.9, metadata=_range(0.0, 1.0))
    """Fraction of patches whose centre lies inside the body mask (the rest: anywhere in the volume)."""
    patches_per_volume: int = field(default=1, metadata=_range(1, 10000))
    """Patches drawn per training volume per epoch (an epoch = n_train × this many patches over all ranks)."""
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    num_workers: int = field(default=0, metadata=_range(0, 64))
    """Loader processes per rank; they live for the whole run (persistent across epochs)."""
    prefetch_factor: int = field(default=4, metadata=_range(1, 64))
    """Batches each loader process prepares ahead (with num_workers > 0)."""
    pin_memory: bool = True
    """Pinned host memory for batches, copied to the GPU without blocking (CUDA only)."""
    cache_dir: str = ""
    """Preprocessed dataset cache (synthct data prepare); empty: <data.root>/.synthct-cache/<region>. Built or
    refreshed by rank 0 when missing or stale; on a shared filesystem for multi-node runs."""
    cache_workers: int = field(default=0, metadata=_range(0, 256))
    """Processes building the cache (0: min(4, CPUs))."""


@dataclass
class LossConfig:
    """``L = mean(|W|·|G−P|) + alpha·(1−SSIM(P, G)) + lambda_gan·L_GAN``."""

    alpha: float = field(default=1.0, metadata=_range(0.0, 1000.0))
    lambda_gan: float = field(default=0.01, metadata=_range(0.0, 1000.0))
    weighting: Literal["paper", "uniform", "floor"] = "paper"
    """paper: W = (1+G)/2 (0 for air); uniform: W = 1; floor: max(W, weight_floor)."""
    weight_floor: float = field(default=0.1, metadata=_range(0.0, 1.0))
    gan_mode: Literal["lsgan", "bce"] = "lsgan"
    ssim_window: int = field(default=7, metadata=_range(3, 15))
    ssim_kernel: Literal["uniform", "gaussian"] = "uniform"
    gan_warmup_steps: int = field(default=0, metadata=_range(0))
    """Steps trained without the adversarial term (and without training the discriminator)."""


@dataclass
class OptimConfig:
    """AdamW for both networks, constant learning rate."""

    lr_generator: float = field(default=1e-5, metadata=_range(0.0, 1.0, low_open=True))
    lr_discriminator: float = field(default=1e-5, metadata=_range(0.0, 1.0, low_open=True))
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999], metadata=_range(0.0, 1.0, length=2))
    weight_decay: float = field(default=0.01, metadata=_range(0.0, 1.0))
    fused: bool = True
    """The fused AdamW kernel on CUDA (one kernel per step instead of several per parameter); ignored on CPU."""
    grad_clip: float = field(default=0.0, metadata=_range(0.0))
    """Max gradient norm of each network (0: no clipping)."""
    schedule: Literal["constant", "cosine"] = "constant"
    """constant (paper) or cosine decay to ``min_lr_fraction`` over the run's progress: the larger of the
    fraction of steps done (epochs, max_steps) and of the time budget used (``train.max_minutes``)."""
    warmup_steps: int = field(default=0, metadata=_range(0))
    """Linear warm-up of both learning rates over this many steps (0: none)."""
    min_lr_fraction: float = field(default=0.0, metadata=_range(0.0, 1.0))


@dataclass
class TrainConfig:
    """The loop: length, batch, precision, seeding, checkpointing."""

    epochs: int = field(default=1000, metadata=_range(1))
    batch_size: int = field(default=2, metadata=_range(1, 1024))
    """Patches per step per rank."""
    max_steps: int = field(default=0, metadata=_range(0))
    """Stop after this many optimiser steps in total (0: no limit)."""
    max_minutes: float = field(default=0.0, metadata=_range(0.0))
    """Wall-clock budget including validation and checkpointing (0: none): training stops early enough for a
    final validation and checkpoint to fit."""
    seed: int = field(default=0, metadata=_range(0))
    device: str = "auto"
    """auto (cuda when available, else cpu), cpu, cuda, cuda:N."""
    amp: Literal["auto", "off", "bf16", "fp16"] = "auto"
    """auto: bf16 where the device supports it (CUDA), else off."""
    num_threads: int = field(default=0, metadata=_range(0, 1024))
    """torch CPU threads per process (0: torch's default)."""
    checkpoint_every_steps: int = field(default=0, metadata=_range(0))
    """Write last.pt every N steps (0: at the end of every epoch only)."""
    compile: Literal["off", "default", "reduce-overhead", "max-autotune"] = "off"
    """torch.compile the generator and discriminator for training (reduce-overhead: CUDA graphs). The first steps
    pay the compile time; a compile failure falls back to eager with a warning."""
    channels_last: bool = False
    """channels-last-3d memory format for both networks and their inputs."""


@dataclass
class ValidationConfig:
    """Full-volume validation through synthct.sliding_window and synthct.metrics (what the containers compute)."""

    every_epochs: int = field(default=10, metadata=_range(0))
    every_steps: int = field(default=0, metadata=_range(0))
    """Validate every N steps as well (0: off)."""
    at_end: bool = True
    overlap: float = field(default=0.5, metadata=_range(0.0, 0.95))
    batch_size: int = field(default=4, metadata=_range(1, 256))
    blend: Literal["gaussian", "constant"] = "gaussian"
    sigma_scale: float = field(default=0.125, metadata=_range(0.0, 10.0, low_open=True))
    metrics_variant: Literal["synthrad2023", "synthrad2025"] = "synthrad2023"
    max_cases: int = field(default=0, metadata=_range(0))
    """Periodic validations use the first N validation cases only (0: all); the validation at the end always
    uses every validation case."""


@dataclass
class LoggingConfig:
    """Console, TensorBoard, JSON logs (rank 0 only)."""

    tensorboard: bool = True
    progress: bool = True
    log_every_steps: int = field(default=10, metadata=_range(1))
    images: bool = True
    """Write MR / sCT / CT slice grids to TensorBoard at each validation."""


@dataclass
class Config:
    """The whole training config."""

    region: Literal["brain", "pelvis", "hn", "th", "ab"] = "brain"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (lists, not tuples): YAML/JSON/torch.load(weights_only=True) safe."""
        return dataclasses.asdict(self)


# ------------------------------------------------------------------------------------------------------------------
# building a validated Config from a mapping


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(v) for v in typing.get_args(tp))
    if origin is list:
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    return getattr(tp, "__name__", str(tp))


def _check_range(value: float, meta: Mapping[str, Any], where: str) -> None:
    low, high = meta.get("low"), meta.get("high")
    if low is not None and (value <= low if meta.get("low_open") else value < low):
        raise ConfigError(f"{where}: {value!r} is out of range (must be {'>' if meta.get('low_open') else '≥'} {low})")
    if high is not None and value > high:
        raise ConfigError(f"{where}: {value!r} is out of range (must be ≤ {high})")
    multiple = meta.get("multiple_of")
    if multiple and int(value) % multiple:
        raise ConfigError(f"{where}: {value!r} must be a multiple of {multiple}")


def _convert_scalar(value: Any, tp: Any, meta: Mapping[str, Any], where: str) -> Any:
    if typing.get_origin(tp) is Literal:
        allowed = typing.get_args(tp)
        if value is False and "off" in allowed:  # YAML 1.1 reads a bare `off` as false
            value = "off"
        if value not in allowed:
            close = difflib.get_close_matches(str(value), [str(a) for a in allowed], n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{where}: {value!r} is not one of {', '.join(repr(a) for a in allowed)}{hint}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            else:
                raise ConfigError(f"{where}: expected an integer, got {value!r}")
        _check_range(value, meta, where)
        return int(value)
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e-5" (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                raise ConfigError(f"{where}: expected a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        value = float(value)
        if value != value or value in (float("inf"), float("-inf")):
            raise ConfigError(f"{where}: expected a finite number, got {value!r}")
        _check_range(value, meta, where)
        return value
    if tp is str:
        if not isinstance(value, str):
            if isinstance(value, os.PathLike):
                return os.fspath(value)
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported type {tp!r}")  # pragma: no cover - programming error


def _convert(value: Any, tp: Any, meta: Mapping[str, Any], where: str) -> Any:
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, where)
    if typing.get_origin(tp) is list:
        if isinstance(value, str) or not isinstance(value, Sequence):
            raise ConfigError(f"{where}: expected a list ({_type_name(tp)}), got {value!r}")
        length = meta.get("length")
        if length is not None and len(value) != length:
            raise ConfigError(f"{where}: expected {length} values, got {len(value)} ({list(value)!r})")
        item_type = typing.get_args(tp)[0]
        return [_convert_scalar(item, item_type, meta, f"{where}[{i}]") for i, item in enumerate(value)]
    return _convert_scalar(value, tp, meta, where)


def _build(cls: type, values: Any, where: str = "") -> Any:
    label = where or "config"
    if values is None:
        values = {}
    if not isinstance(values, Mapping):
        raise ConfigError(f"{label}: expected a mapping of keys, got {values!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in values:
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1, cutoff=0.5)
            hint = f"; did you mean {(where + '.' if where else '') + close[0]!r}?" if close else ""
            raise ConfigError(
                f"unknown config key {(where + '.' if where else '') + str(key)!r}{hint} "
                f"(valid keys in {label}: {', '.join(fields)})"
            )
    kwargs = {}
    for name, f in fields.items():
        if name in values:
            path = f"{where}.{name}" if where else name
            kwargs[name] = _convert(values[name], hints[name], f.metadata, path)
    return cls(**kwargs)


def _check_consistency(config: Config) -> None:
    model = config.model
    if model.feature_size % 12:
        raise ConfigError("model.feature_size must be a multiple of 12 (SwinUNETR)")
    for index, heads in enumerate(model.num_heads):
        if (model.feature_size * 2**index) % heads:
            raise ConfigError(
                f"model.num_heads[{index}] = {heads} must divide the stage's embedding size "
                f"{model.feature_size * 2**index} (feature_size × 2^{index})"
            )


def config_from_dict(values: Mapping[str, Any] | None) -> Config:
    """A validated :class:`Config` from a nested mapping; missing keys take the paper's defaults.

    Raises :class:`ConfigError` naming the offending key.
    """
    config = _build(Config, values or {}, "")
    _check_consistency(config)
    return config


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"optim.lr_generator=2e-4"`` → (["optim", "lr_generator"], 2e-4); the value is parsed with yaml.safe_load."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE (e.g. train.epochs=10)")
    key, raw = text.split("=", 1)
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise ConfigError(f"--set {text!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {text!r}: value is not valid YAML ({exc})") from exc
    return parts, value


def apply_overrides(values: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """A deep copy of ``values`` with each ``a.b=value`` override applied (keys are checked at validation)."""
    result = _deep_copy(values)
    for text in overrides:
        parts, value = parse_override(text)
        node = result
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                raise ConfigError(f"--set {text!r}: {part!r} is not a section")
            node = child
        node[parts[-1]] = value
    return result


def _deep_copy(values: Any) -> Any:
    if isinstance(values, Mapping):
        return {str(k): _deep_copy(v) for k, v in values.items()}
    if isinstance(values, list | tuple):
        return [_deep_copy(v) for v in values]
    return values


def read_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The mapping in a YAML config file. Raises :class:`ConfigError` naming the file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: config file not found") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the config ({exc})") from exc
    try:
        values = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: the config must be a mapping of sections, got {type(values).__name__}")
    return values


def load_config(path: str | os.PathLike[str] | None = None, overrides: Sequence[str] = (),
                base: Mapping[str, Any] | None = None, assignments: Mapping[str, Any] | None = None) -> Config:
    """Config from ``base`` (e.g. a checkpoint's config), then the YAML file, then ``--set`` overrides, then
    ``assignments`` (dotted key → Python value, e.g. from command-line options); validated.

    Errors in the file are reported with its path, errors in an override with ``--set``.
    """
    values: dict[str, Any] = _deep_copy(base) if base is not None else {}
    if path is not None:
        values = _merge(values, read_config_file(path))
        try:
            config_from_dict(values)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from exc
    values = apply_overrides(values, overrides)
    try:
        config_from_dict(values)
    except ConfigError as exc:
        raise ConfigError(f"--set: {exc}") from exc
    for key, value in (assignments or {}).items():
        node = values
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return config_from_dict(values)


def _merge(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = _deep_copy(value)
    return merged


def dump_config(config: Config) -> str:
    """The resolved config as YAML (block style, keys in declaration order)."""
    return yaml.safe_dump(config.to_dict(), sort_keys=False, default_flow_style=False)


def diff_configs(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two config dicts."""
    keys = sorted(set(old) | set(new))
    differences: list[str] = []
    for key in keys:
        path = f"{prefix}.{key}" if prefix else str(key)
        a, b = old.get(key), new.get(key)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            differences += diff_configs(a, b, path)
        elif a != b:
            differences.append(path)
    return differences

