"""The training config: typed, range-checked settings with the paper's values as defaults.

A config is a nested mapping (YAML file) with the sections ``model``, ``data``, ``loss``, ``optim``, ``train``,
``validation``, ``logging`` and the top-level ``region``: pydantic models on :mod:`synthct.settings`. Loading rejects
unknown keys (naming the key and the closest valid one), wrong types and out-of-range values, each with the dotted
path of the key. ``--set a.b=value`` overrides are parsed with ``yaml.safe_load``. The resolved config (every key,
defaults filled in) is what the run folder's ``config.yaml`` and every checkpoint store. ``--config paper`` names a
config bundled with synthct (``configs/paper.yaml``, installed as ``synthct.configs``).

Paper (Karimzadeh & Ibragimov; SPEC §3): 64³ patches, AdamW at a constant lr of 1e-5, loss
``mean(|W|·|G−P|) + α·(1−SSIM) + λ·L_GAN`` with ``W = (1+G)/2``, 80/20 seeded split, 1000 epochs. The paper's α and λ
could not be found, so α = 1 and λ = 0.01 (pix2pix-style: the adversarial term a small fraction of the
reconstruction terms) are this project's choice.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import Field, field_validator, model_validator
from synthct.train.resenc_plan import divisors as resenc_divisors
from synthct.train.resenc_plan import stride_plan as resenc_stride_plan

from synthct import settings
from synthct.intensity import MrRule
from synthct.regions import Region, region_or_none
from synthct.settings import Bool, Float, Int, Settings, Str, in_range, length


class ConfigError(settings.SettingsError):
    """A config problem; the message names the key (dotted path) and what is wrong."""


class ResEncConfig(Settings):
    """nnU-Net's residual-encoder U-Net (``model.architecture: resenc_unet``): one entry per resolution stage."""

    features_per_stage: Annotated[list[Annotated[Int, in_range(1, 1024)]], length(at_least=2)] = Field(
        default_factory=lambda: [32, 64, 128, 256, 320])
    """Channels of each encoder stage (the first at full resolution, each next one at half)."""
    blocks_per_stage: Annotated[list[Annotated[Int, in_range(1, 16)]], length(at_least=2)] = Field(
        default_factory=lambda: [1, 3, 4, 6, 6])
    """Residual blocks of each encoder stage."""
    upsample: Literal["trilinear", "transposed"] = "trilinear"
    """Decoder upsampling: trilinear interpolation + 1×1×1 convolution, or a transposed convolution."""
    strides: list[Annotated[list[Annotated[Int, in_range(1, 4)]], length(3)]] | None = None
    """Down-sampling of each stage along (z, y, x), nnU-Net's plans; none: [1, 1, 1] then [2, 2, 2] for every next
    stage. Thick slices: leave z at 1 until the in-plane spacing has caught up (2.5 mm slices, 1 mm pixels:
    [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2]])."""


class ModelConfig(Settings):
    """Networks (passed to train.models.build_generator / build_discriminator)."""

    architecture: Literal["swinunetr", "resenc_unet"] = "swinunetr"
    """The generator: SwinUNETR (paper) or a residual-encoder U-Net (``resenc``)."""
    feature_size: Annotated[Int, in_range(12, 192, multiple_of=12)] = 24
    depths: Annotated[list[Annotated[Int, in_range(1, 12)]], length(4)] = Field(default_factory=lambda: [2, 2, 2, 2])
    num_heads: Annotated[list[Annotated[Int, in_range(1, 64)]], length(4)] = Field(
        default_factory=lambda: [3, 6, 12, 24])
    use_v2: Bool = False
    use_checkpoint: Bool = False
    resenc: ResEncConfig = Field(default_factory=ResEncConfig)
    disc_channels: Annotated[Int, in_range(4, 512)] = 32
    disc_layers: Annotated[Int, in_range(1, 5)] = 3


class MrNormalisationConfig(Settings):
    """MR rule (synthct.intensity.normalise_mr): the paper's max, robust percentiles, or a z-score inside the body.
    A bare rule (``mr_normalisation: zscore``) stands for ``{rule: zscore}``."""

    rule: MrRule = "max"
    percentile: Annotated[Float, in_range(0.0, 100.0, low_open=True)] = 99.5
    """percentile rule: this percentile of the MR inside the body maps to +1 (robust to a few bright voxels)."""

    @model_validator(mode="before")
    @classmethod
    def _bare_rule(cls, values: Any) -> Any:
        return {"rule": values} if isinstance(values, str) else values


class AugmentConfig(Settings):
    """Random rotation + affine (scale, translation) applied to MR, CT and mask together (MONAI Affined), and
    nnU-Net-style intensity and mirror augmentations (off by default)."""

    enabled: Bool = True
    probability: Annotated[Float, in_range(0.0, 1.0)] = 0.5
    rotate_degrees: Annotated[Float, in_range(0.0, 180.0)] = 10.0
    """Maximum rotation about each axis, degrees (uniform in ±value)."""
    scale: Annotated[Float, in_range(0.0, 0.5)] = 0.1
    """Maximum relative scale change per axis (uniform in 1 ± value)."""
    translate_voxels: Annotated[Float, in_range(0.0, 64.0)] = 4.0
    """Maximum translation per axis, voxels."""
    where: Literal["auto", "loader", "device"] = "auto"
    """loader: MONAI Affined per patch in the loader processes; device: one batched grid_sample per batch on the
    training device (train.augment); auto: device on CUDA, loader on CPU. Same geometry either way."""
    mirror: Bool = False
    """Random flips of MR, CT and mask along each axis (z, y, x), each with probability 0.5."""
    gamma_probability: Annotated[Float, in_range(0.0, 1.0)] = 0.0
    """Probability of a random gamma curve on the MR (intensity augmentation)."""
    bias_field_probability: Annotated[Float, in_range(0.0, 1.0)] = 0.0
    """Probability of a smooth multiplicative bias field on the MR."""
    noise_probability: Annotated[Float, in_range(0.0, 1.0)] = 0.0
    """Probability of Gaussian noise on the MR."""
    lowres_probability: Annotated[Float, in_range(0.0, 1.0)] = 0.0
    """Probability of simulating a lower resolution MR (down- then upsampling)."""


class DataConfig(Settings):
    """Training data: patches, normalisation, split, sampling."""

    root: Str = ""
    """Dataset folder (``synthct train --data``)."""
    split: Str = ""
    """Split JSON (``--split``); empty: a seeded split is made and written to the run folder."""
    val_fraction: Annotated[Float, in_range(0.0, 1.0, low_open=True)] = 0.2
    split_seed: Annotated[Int, in_range(0)] = 0
    patch_size: Annotated[list[Annotated[Int, in_range(32, 512, multiple_of=32)]], length(3)] = Field(
        default_factory=lambda: [64, 64, 64])
    """Training patch (z, y, x), voxels, multiples of 32 (the package's rule). SwinUNETR needs ≥ 64 on every axis to
    train (instance norm of its 1/32-resolution bottleneck needs more than one voxel); the ResEnc U-Net takes 32
    (e.g. [32, 96, 96] for 2.5 mm pelvis slices: more in-plane context for the same voxels)."""
    mr_normalisation: MrNormalisationConfig = Field(default_factory=MrNormalisationConfig)
    foreground_fraction: Annotated[Float, in_range(0.0, 1.0)] = 0.9
    """Fraction of patches whose centre lies inside the body mask (the rest: anywhere in the volume)."""
    patches_per_volume: Annotated[Int, in_range(1, 10000)] = 1
    """Patches drawn per training volume per epoch (an epoch = n_train × this many patches over all ranks)."""
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    num_workers: Annotated[Int, in_range(0, 64)] = 0
    """Loader processes per rank; they live for the whole run (persistent across epochs)."""
    prefetch_factor: Annotated[Int, in_range(1, 64)] = 4
    """Batches each loader process prepares ahead (with num_workers > 0)."""
    pin_memory: Bool = True
    """Pinned host memory for batches, copied to the GPU without blocking (CUDA only)."""
    cache_dir: Str = ""
    """Preprocessed dataset cache (synthct data prepare); empty: <data.root>/.synthct-cache/<region>. Built or
    refreshed by rank 0 when missing or stale; on a shared filesystem for multi-node runs."""
    cache_workers: Annotated[Int, in_range(0, 256)] = 0
    """Processes building the cache (0: min(4, CPUs))."""


class LossConfig(Settings):
    """``L = mean(|W|·|G−P|) + alpha·(1−SSIM(P, G)) + lambda_gan·L_GAN``."""

    alpha: Annotated[Float, in_range(0.0, 1000.0)] = 1.0
    lambda_gan: Annotated[Float, in_range(0.0, 1000.0)] = 0.01
    weighting: Literal["paper", "uniform", "floor"] = "paper"
    """paper: W = (1+G)/2 (0 for air); uniform: W = 1; floor: max(W, weight_floor)."""
    weight_floor: Annotated[Float, in_range(0.0, 1.0)] = 0.1
    l1_mask: Literal["body", "none"] = "none"
    """body: the L1 term is the mean over the body mask only; none: over the whole patch (paper)."""
    gan_mode: Literal["lsgan", "bce"] = "lsgan"
    ssim_window: Annotated[Int, in_range(3, 15)] = 7
    ssim_kernel: Literal["uniform", "gaussian"] = "uniform"
    gan_warmup_steps: Annotated[Int, in_range(0)] = 0
    """Steps trained without the adversarial term (and without training the discriminator)."""


class OptimConfig(Settings):
    """The optimisers (AdamW for both networks in the paper) and the learning-rate schedule."""

    name: Literal["adamw", "sgd"] = "adamw"
    """The generator's optimiser: adamw (paper) or sgd (Nesterov, momentum 0.99; nnU-Net's)."""
    lr_generator: Annotated[Float, in_range(0.0, 1.0, low_open=True)] = 1e-5
    lr_discriminator: Annotated[Float, in_range(0.0, 1.0, low_open=True)] = 1e-5
    betas: Annotated[list[Annotated[Float, in_range(0.0, 1.0)]], length(2)] = Field(
        default_factory=lambda: [0.9, 0.999])
    weight_decay: Annotated[Float, in_range(0.0, 1.0)] = 0.01
    fused: Bool = True
    """The fused AdamW kernel on CUDA (one kernel per step instead of several per parameter); ignored on CPU."""
    grad_clip: Annotated[Float, in_range(0.0)] | None = 0.0
    """Max gradient norm of each network (0 or null: no clipping)."""
    schedule: Literal["constant", "cosine", "poly"] = "constant"
    """constant (paper), cosine decay to ``min_lr_fraction``, or poly: ``(1 - progress)^0.9`` (nnU-Net), over the
    run's progress: the larger of the fraction of steps done (epochs, max_steps) and of the time budget used
    (``train.max_minutes``)."""
    warmup_steps: Annotated[Int, in_range(0)] = 0
    """Linear warm-up of both learning rates over this many steps (0: none)."""
    min_lr_fraction: Annotated[Float, in_range(0.0, 1.0)] = 0.0


class TrainConfig(Settings):
    """The loop: length, batch, precision, seeding, checkpointing."""

    epochs: Annotated[Int, in_range(1)] = 1000
    batch_size: Annotated[Int, in_range(1, 1024)] = 2
    """Patches per step per rank."""
    max_steps: Annotated[Int, in_range(0)] = 0
    """Stop after this many optimiser steps in total (0: no limit)."""
    max_minutes: Annotated[Float, in_range(0.0)] = 0.0
    """Wall-clock budget including validation and checkpointing (0: none): training stops early enough for a
    final validation and checkpoint to fit."""
    budget_excludes_validation: Bool = False
    """False: ``max_minutes`` is the run's wall clock, validations included. True: it counts start-up, training
    steps and checkpoints only; every validation (the final one too) runs on top, so runs whose validations cost
    differently get the same training time (benchmarks comparing recipes)."""
    seed: Annotated[Int, in_range(0)] = 0
    device: Str = "auto"
    """auto (cuda when available, else cpu), cpu, cuda, cuda:N."""
    amp: Literal["auto", "off", "bf16", "fp16"] = "auto"
    """auto: bf16 where the device supports it (CUDA), else off."""
    num_threads: Annotated[Int, in_range(0, 1024)] = 0
    """torch CPU threads per process (0: torch's default)."""
    checkpoint_every_steps: Annotated[Int, in_range(0)] = 0
    """Write last.pt every N steps (0: at the end of every epoch only)."""
    compile: Literal["off", "default", "reduce-overhead", "max-autotune"] = "off"
    """torch.compile the generator and discriminator for training (reduce-overhead: CUDA graphs). The first steps
    pay the compile time; a compile failure falls back to eager with a warning."""
    channels_last: Bool = False
    """channels-last-3d memory format for both networks and their inputs."""


class ValidationConfig(Settings):
    """Full-volume validation through synthct.sliding_window and synthct.metrics (what the containers compute)."""

    every_epochs: Annotated[Int, in_range(0)] = 10
    every_steps: Annotated[Int, in_range(0)] = 0
    """Validate every N steps as well (0: off)."""
    at_end: Bool = True
    overlap: Annotated[Float, in_range(0.0, 0.95)] = 0.5
    batch_size: Annotated[Int, in_range(1, 256)] = 4
    blend: Literal["gaussian", "constant"] = "gaussian"
    sigma_scale: Annotated[Float, in_range(0.0, 10.0, low_open=True)] = 0.125
    metrics_variant: Literal["synthrad2023", "synthrad2025"] = "synthrad2023"
    max_cases: Annotated[Int, in_range(0)] = 0
    """Periodic validations use the first N validation cases only (0: all); the validation at the end always
    uses every validation case."""


class LoggingConfig(Settings):
    """Console, TensorBoard, JSON logs (rank 0 only)."""

    tensorboard: Bool = True
    progress: Bool = True
    log_every_steps: Annotated[Int, in_range(1)] = 10
    images: Bool = True
    """Write MR / sCT / CT slice grids to TensorBoard at each validation."""


class Config(Settings):
    """The whole training config."""

    region: Region = "brain"
    """Canonical region (synthct.regions); any spelling (``Head and Neck``, ``HN``, ``Task1/HN``) is accepted."""
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    validation: ValidationConfig = Field(default_factory=ValidationConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)

    @field_validator("region", mode="before")
    @classmethod
    def _canonical_region(cls, value: Any) -> Any:
        return (region_or_none(value) or value) if isinstance(value, str) else value

    @model_validator(mode="after")
    def _consistent(self) -> Config:
        model = self.model
        if model.architecture == "swinunetr":
            if min(self.data.patch_size) < 64:
                raise ValueError(f"data.patch_size {self.data.patch_size}: SwinUNETR needs ≥ 64 voxels on every "
                                 "axis (its 1/32-resolution bottleneck must keep more than one voxel for instance "
                                 "norm)")
            for index, heads in enumerate(model.num_heads):
                if (model.feature_size * 2**index) % heads:
                    raise ValueError(
                        f"model.num_heads[{index}] = {heads} must divide the stage's embedding size "
                        f"{model.feature_size * 2**index} (feature_size × 2^{index})"
                    )
        resenc = model.resenc
        stages = len(resenc.features_per_stage)
        if len(resenc.blocks_per_stage) != stages:
            raise ValueError(f"model.resenc: features_per_stage has {stages} stages, "
                             f"blocks_per_stage {len(resenc.blocks_per_stage)}; they must match")
        if resenc.strides is not None and len(resenc.strides) != stages:
            raise ValueError(f"model.resenc.strides has {len(resenc.strides)} entries for {stages} stages; "
                             "give one [z, y, x] per stage")
        if model.architecture == "resenc_unet":
            divisor = resenc_divisors(resenc_stride_plan(resenc.strides, stages))
            patch = self.data.patch_size
            if any(size % d or size // d < 2 for size, d in zip(patch, divisor, strict=True)):
                raise ValueError(f"data.patch_size {patch} (z, y, x) must be a multiple of {list(divisor)} (the "
                                 "product of model.resenc.strides per axis) with at least 2 voxels per axis left "
                                 "at the deepest stage")
        return self


# ------------------------------------------------------------------------------------------------------------------
# building a validated Config


def config_from_dict(values: Mapping[str, Any] | None) -> Config:
    """A validated :class:`Config` from a nested mapping; missing keys take the paper's defaults.

    Raises :class:`ConfigError` naming the offending key.
    """
    return settings.validate(Config, values, ConfigError)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"optim.lr_generator=2e-4"`` → (["optim", "lr_generator"], "2e-4"); the value is parsed with
    yaml.safe_load (the typed field converts it)."""
    return settings.parse_override(text, ConfigError)


def apply_overrides(values: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """A deep copy of ``values`` with each ``a.b=value`` override applied (keys are checked at validation)."""
    return settings.apply_overrides(values, overrides, ConfigError)


def bundled_configs() -> list[str]:
    """Names of the configs bundled with synthct (``configs/*.yaml``, the package ``synthct.configs``)."""
    return sorted(entry.name.removesuffix(".yaml") for entry in resources.files("synthct.configs").iterdir()
                  if entry.name.endswith(".yaml"))


def resolve_config_path(name: str | os.PathLike[str]) -> Path:
    """``name`` as a file when it is one, else the bundled config it names (``paper`` or ``paper.yaml``).

    Raises :class:`ConfigError` listing the bundled names when it is neither.
    """
    path = Path(name)
    if path.is_file():
        return path
    bundled = bundled_configs()
    stem = path.name.removesuffix(".yaml")
    if str(name) in (stem, f"{stem}.yaml") and stem in bundled:
        with resources.as_file(resources.files("synthct.configs") / f"{stem}.yaml") as found:
            return Path(found)
    raise ConfigError(f"{name}: config file not found, and no bundled config has that name (bundled: "
                      f"{', '.join(bundled)})")


def read_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The mapping in a YAML config file. Raises :class:`ConfigError` naming the file."""
    return settings.read_yaml_mapping(path, ConfigError)


def load_config(path: str | os.PathLike[str] | None = None, overrides: Sequence[str] = (),
                base: Mapping[str, Any] | None = None, assignments: Mapping[str, Any] | None = None) -> Config:
    """Config from ``base`` (e.g. a checkpoint's config), then the YAML file, then ``--set`` overrides, then
    ``assignments`` (dotted key → Python value, e.g. from command-line options); validated.

    ``path`` is a file, or the name of a bundled config (``paper``: :func:`resolve_config_path`). Errors in the
    file are reported with its path, errors in an override with ``--set``.
    """
    values: dict[str, Any] = settings.deep_copy(base) if base is not None else {}
    if path is not None:
        path = resolve_config_path(path)
        values = settings.merge(values, read_config_file(path))
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
        settings.assign(values, key.split("."), value)
    return config_from_dict(values)


def dump_config(config: Config) -> str:
    """The resolved config as YAML (block style, keys in declaration order)."""
    return yaml.safe_dump(config.to_dict(), sort_keys=False, default_flow_style=False)


def diff_configs(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two config dicts."""
    return settings.diff(old, new, prefix)
