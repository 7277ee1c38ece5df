"""One training step of the 3D Pix2Pix and what it needs: the networks and optimisers (:class:`StepModels`), AMP,
``torch.compile`` with its eager fallback, and the learning-rate schedule.

One step: the generator predicts the CT of a batch of MR patches; the generator loss (eq. 2) is computed with the
discriminator frozen and the discriminator loss on (MR, CT) vs (MR, P.detach()) pairs, from the same
discriminator state; both losses are checked for NaN/inf on every rank before any weight changes; then both
networks take an optimiser step (the generator's AdamW or SGD + Nesterov, ``optim.name``; the discriminator's
AdamW). With ``loss.lambda_gan`` 0 the discriminator is neither built nor stepped (the regression recipe). Used by the
loop (train.trainer) and the benchmarks.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from synthct.train import losses
from synthct.train.config import Config, ConfigError
from synthct.train.distributed import DistInfo
from synthct.train.models import build_discriminator, build_generator
from synthct.train.process import restore_utf8_ctype
from torch.nn.parallel import DistributedDataParallel

log = logging.getLogger("synthct.train")


class TrainingDiverged(RuntimeError):
    """A loss became NaN or infinite; the run stopped without writing the bad weights."""


@dataclass
class StepModels:
    """What a training step needs (also used by benchmarks/bench_train.py)."""

    generator: torch.nn.Module
    discriminator: torch.nn.Module | None
    """None when the run never uses the adversarial term (``loss.lambda_gan`` 0)."""
    generator_ddp: torch.nn.Module
    discriminator_ddp: torch.nn.Module | None
    optimizer_g: torch.optim.Optimizer
    optimizer_d: torch.optim.Optimizer | None
    scaler: torch.amp.GradScaler
    device: torch.device
    amp_dtype: torch.dtype | None
    generator_train: torch.nn.Module | None = None
    """What the step calls: ``generator_ddp``, compiled when ``train.compile`` is on."""
    discriminator_train: torch.nn.Module | None = None
    """The discriminator loss's call: ``discriminator_ddp``, compiled when ``train.compile`` is on."""
    discriminator_frozen: torch.nn.Module | None = None
    """The generator loss's call (no DDP, frozen weights): ``discriminator``, compiled when compiling."""
    compiled: str = "off"
    """The torch.compile mode in use ("off" after a fallback)."""
    channels_last: bool = False

    def __post_init__(self) -> None:
        self.generator_train = self.generator_train or self.generator_ddp
        self.discriminator_train = self.discriminator_train or self.discriminator_ddp
        self.discriminator_frozen = self.discriminator_frozen or self.discriminator

    def use_eager(self) -> None:
        """Fall back from compiled to eager modules (same parameters)."""
        self.generator_train, self.discriminator_train = self.generator_ddp, self.discriminator_ddp
        self.discriminator_frozen = self.discriminator
        self.compiled = "off"


def resolve_amp(amp: str, device: torch.device) -> tuple[torch.dtype | None, bool]:
    """(autocast dtype or None, whether a GradScaler is needed) for ``train.amp`` on ``device``."""
    if amp == "off":
        return None, False
    if amp == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16, False
        return None, False
    if amp == "bf16":
        return torch.bfloat16, False
    if amp == "fp16":
        return torch.float16, True
    raise ConfigError(f"train.amp: unknown value {amp!r}")


SGD_MOMENTUM = 0.99
"""nnU-Net's SGD: Nesterov momentum 0.99 (its weight decay, 3e-5, is ``optim.weight_decay`` in configs/resenc.yaml)."""
OPTIMIZERS = ("adamw", "sgd")
POLY_EXPONENT = 0.9
"""nnU-Net's poly learning-rate schedule: ``lr · (1 − progress)^0.9``."""


def uses_gan(config: Config) -> bool:
    """Whether the run ever trains with the adversarial term (and so needs a discriminator)."""
    return config.loss.lambda_gan > 0


def make_generator_optimizer(parameters: Any, config: Config, device: torch.device) -> torch.optim.Optimizer:
    """The generator's optimiser, ``optim.name``: adamw (betas, weight decay of the config; fused on CUDA) or sgd
    (Nesterov, momentum :data:`SGD_MOMENTUM`, the config's weight decay)."""
    optim = config.optim
    name = optim.name
    if name == "sgd":
        return torch.optim.SGD(parameters, lr=optim.lr_generator, momentum=SGD_MOMENTUM, nesterov=True,
                               weight_decay=optim.weight_decay)
    if name != "adamw":
        raise ConfigError(f"optim.name: unknown optimiser {name!r} (known: {', '.join(OPTIMIZERS)})")
    fused = {"fused": True} if optim.fused and device.type == "cuda" else {}
    return torch.optim.AdamW(parameters, lr=optim.lr_generator, betas=tuple(optim.betas),
                             weight_decay=optim.weight_decay, **fused)


def build_step_models(config: Config, device: torch.device, info: DistInfo | None = None) -> StepModels:
    """Generator, discriminator (only when ``loss.lambda_gan`` > 0; DDP-wrapped when distributed), optimisers
    (:func:`make_generator_optimizer`; AdamW for the discriminator) and the GradScaler."""
    info = info or DistInfo()
    model_config = config.to_dict()["model"]
    generator = build_generator(model_config).to(device)
    discriminator = build_discriminator(model_config).to(device) if uses_gan(config) else None
    if config.train.channels_last:
        generator = generator.to(memory_format=torch.channels_last_3d)
        if discriminator is not None:
            discriminator = discriminator.to(memory_format=torch.channels_last_3d)
    optim = config.optim
    fused = {"fused": True} if optim.fused and device.type == "cuda" else {}
    optimizer_g = make_generator_optimizer(generator.parameters(), config, device)
    optimizer_d = None
    if discriminator is not None:
        optimizer_d = torch.optim.AdamW(discriminator.parameters(), lr=optim.lr_discriminator,
                                        betas=tuple(optim.betas), weight_decay=optim.weight_decay, **fused)
    amp_dtype, use_scaler = resolve_amp(config.train.amp, device)
    scaler = torch.amp.GradScaler(device.type, enabled=use_scaler)
    generator_ddp: torch.nn.Module = generator
    discriminator_ddp: torch.nn.Module | None = discriminator
    if info.enabled:
        device_ids = [device.index] if device.type == "cuda" else None
        generator_ddp = DistributedDataParallel(generator, device_ids=device_ids)
        if discriminator is not None:
            discriminator_ddp = DistributedDataParallel(discriminator, device_ids=device_ids)
    models = StepModels(generator, discriminator, generator_ddp, discriminator_ddp, optimizer_g, optimizer_d, scaler,
                        device, amp_dtype, channels_last=config.train.channels_last)
    if config.train.compile != "off":
        compile_models(models, config.train.compile)
    return models


def compile_models(models: StepModels, mode: str) -> None:
    """``torch.compile`` the training calls of both networks (lazily: the work happens at the first step).

    Dynamo's ``suppress_errors`` lets a graph that cannot be compiled run eagerly; :func:`train_step` falls back to
    eager for good if the first compiled step still fails. The eager modules (checkpoints, validation) are untouched.
    """
    import torch._dynamo

    restore_utf8_ctype()
    torch._dynamo.config.suppress_errors = True
    options = {"mode": mode} if mode != "default" else {}
    try:
        models.generator_train = torch.compile(models.generator_ddp, **options)
        if models.discriminator is not None and models.discriminator_ddp is not None:
            models.discriminator_train = torch.compile(models.discriminator_ddp, **options)
            models.discriminator_frozen = torch.compile(models.discriminator, **options)
        models.compiled = mode
    except Exception as exc:  # an unsupported platform or backend: train eagerly
        log.warning("torch.compile(mode=%s) is not available here (%s): training eagerly", mode, exc)
        models.use_eager()


def prepare_inputs(models: StepModels, *tensors: torch.Tensor) -> list[torch.Tensor]:
    """Batches on the models' device (non-blocking from pinned memory) and memory format."""
    moved = [t.to(models.device, non_blocking=True) for t in tensors]
    if models.channels_last:
        moved = [t.contiguous(memory_format=torch.channels_last_3d) for t in moved]
    return moved


def _autocast(models: StepModels) -> Any:
    if models.amp_dtype is None:
        return torch.autocast(device_type=models.device.type, enabled=False)
    return torch.autocast(device_type=models.device.type, dtype=models.amp_dtype)


def _set_requires_grad(module: torch.nn.Module, flag: bool) -> None:
    for parameter in module.parameters():
        parameter.requires_grad_(flag)


def train_step(models: StepModels, mr: torch.Tensor, ct: torch.Tensor, config: Config, use_gan: bool,
               all_finite: Callable[[bool], bool] | None = None, mask: torch.Tensor | None = None) -> dict[str, float]:
    """One optimisation step of both networks on a batch (B, 1, z, y, x) of normalised MR / CT patches; ``mask``
    (the patches' body mask) is used by the L1 term with ``loss.l1_mask: body``.

    Returns the loss terms as floats (``l1``, ``ssim``, ``gan``, ``total`` of the generator, ``d`` of the
    discriminator). Raises :class:`TrainingDiverged` before any weight update if a loss is not finite on any rank
    (``all_finite`` combines the ranks' verdicts). With compiled networks, a step that fails to compile is redone
    eagerly and the run continues eagerly.
    """
    if use_gan and models.discriminator is None:
        raise ConfigError("a GAN step was asked for, but no discriminator was built (loss.lambda_gan is 0)")
    if models.compiled == "off":
        return _train_step(models, mr, ct, config, use_gan, all_finite, mask)
    try:
        return _train_step(models, mr, ct, config, use_gan, all_finite, mask)
    except TrainingDiverged:
        raise
    except Exception as exc:
        log.warning("compiled step failed (%s: %s): falling back to eager for the rest of the run",
                    type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
        models.use_eager()
        return _train_step(models, mr, ct, config, use_gan, all_finite, mask)


def l1_mask_of(config: Config, mask: torch.Tensor | None) -> torch.Tensor | None:
    """The mask the L1 term averages over: the patches' body mask with ``loss.l1_mask: body``, else None."""
    if config.loss.l1_mask != "body":
        return None
    if mask is None:
        raise ConfigError("loss.l1_mask is 'body' but the training step got no body mask")
    return mask


def _train_step(models: StepModels, mr: torch.Tensor, ct: torch.Tensor, config: Config, use_gan: bool,
                all_finite: Callable[[bool], bool] | None = None, mask: torch.Tensor | None = None
                ) -> dict[str, float]:
    loss_config = config.loss
    body = l1_mask_of(config, mask)
    models.optimizer_g.zero_grad(set_to_none=True)
    if models.optimizer_d is not None:
        models.optimizer_d.zero_grad(set_to_none=True)
    assert models.generator_train is not None
    with _autocast(models):
        prediction = models.generator_train(mr)
        fake_logits = None
        if use_gan:
            assert models.discriminator is not None and models.discriminator_frozen is not None
            assert models.discriminator_train is not None
            _set_requires_grad(models.discriminator, False)
            fake_logits = models.discriminator_frozen(mr, prediction)
            _set_requires_grad(models.discriminator, True)
        terms = losses.generator_loss(
            prediction, ct, fake_logits, alpha=loss_config.alpha, lambda_gan=loss_config.lambda_gan,
            weighting=loss_config.weighting, floor=loss_config.weight_floor, gan_mode=loss_config.gan_mode,
            ssim_window=loss_config.ssim_window, ssim_kernel=loss_config.ssim_kernel, mask=body,
        )
        loss_d = None
        if use_gan:
            pairs_mr = torch.cat([mr, mr], dim=0)
            pairs_ct = torch.cat([ct, prediction.detach().to(ct.dtype)], dim=0)
            logits = models.discriminator_train(pairs_mr, pairs_ct)
            real_logits, fake_logits_d = torch.chunk(logits, 2, dim=0)
            loss_d = losses.discriminator_gan_loss(real_logits, fake_logits_d, loss_config.gan_mode)
    values = {key: float(value.detach()) for key, value in terms.items()}
    values["d"] = float(loss_d.detach()) if loss_d is not None else 0.0
    finite = all(math.isfinite(v) for v in values.values())
    if all_finite is not None:
        finite = all_finite(finite)
    if not finite:
        raise TrainingDiverged("non-finite loss (" + ", ".join(f"{k}={v:.4g}" for k, v in values.items()) + ")")
    scaler = models.scaler
    scaler.scale(terms["total"]).backward()
    if loss_d is not None:
        scaler.scale(loss_d).backward()
    clip = config.optim.grad_clip
    if clip:  # None or 0: no clipping
        scaler.unscale_(models.optimizer_g)
        torch.nn.utils.clip_grad_norm_(models.generator.parameters(), clip)
        if loss_d is not None:
            assert models.optimizer_d is not None and models.discriminator is not None
            scaler.unscale_(models.optimizer_d)
            torch.nn.utils.clip_grad_norm_(models.discriminator.parameters(), clip)
    scaler.step(models.optimizer_g)
    if loss_d is not None:
        assert models.optimizer_d is not None
        scaler.step(models.optimizer_d)
    scaler.update()
    return values


def lr_factor(config: Config, step: int, progress: float) -> float:
    """Learning-rate multiplier at ``step`` (0-based, the step about to be taken) and run ``progress`` in [0, 1]:
    linear warm-up over ``optim.warmup_steps``, then constant (paper), cosine decay to ``min_lr_fraction``, or
    nnU-Net's poly ``(1 − progress)^0.9`` (progress = step / max_steps, or the time budget's share when larger)."""
    optim = config.optim
    factor = min(1.0, (step + 1) / optim.warmup_steps) if optim.warmup_steps else 1.0
    progress = min(max(progress, 0.0), 1.0)
    if optim.schedule == "cosine":
        factor *= optim.min_lr_fraction + (1.0 - optim.min_lr_fraction) * 0.5 * (1.0 + math.cos(math.pi * progress))
    elif optim.schedule == "poly":
        factor *= (1.0 - progress) ** POLY_EXPONENT
    return factor

