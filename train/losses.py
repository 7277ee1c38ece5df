"""The paper's loss (eq. 2, SPEC §3): ``L = mean(|W|·|G−P|) + α·(1−SSIM(P, G)) + λ·L_GAN``, ``W = (1+G)/2``;
the second recipe's masked L1 (the mean taken inside the body mask only) through the same function.

G = ground-truth CT, P = predicted CT, both normalised to [-1, 1], tensors (B, 1, z, y, x). Every term is
returned separately so that it can be logged. SSIM is computed in float32 whatever the autocast dtype.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

Weighting = Literal["paper", "uniform", "floor"]
GanMode = Literal["lsgan", "bce"]
SSIM_DATA_RANGE = 2.0
"""Data range of normalised images ([-1, 1])."""


def voxel_weight(ct_normalised: torch.Tensor, weighting: Weighting = "paper", floor: float = 0.1) -> torch.Tensor:
    """Per-voxel weight W of the L1 term, from the ground-truth CT (normalised).

    paper: ``(1 + G) / 2`` — 0 at -1024 HU, rising linearly with HU to 1 at 3000 HU; uniform: 1 everywhere;
    floor: ``max((1 + G) / 2, floor)`` so that air and soft tissue still count.
    """
    if weighting == "uniform":
        return torch.ones_like(ct_normalised)
    weight = (1.0 + ct_normalised) / 2.0
    if weighting == "paper":
        return weight
    if weighting == "floor":
        return torch.clamp(weight, min=floor)
    raise ValueError(f"unknown weighting {weighting!r} (expected 'paper', 'uniform' or 'floor')")


def weighted_l1(prediction: torch.Tensor, target: torch.Tensor, weighting: Weighting = "paper",
                floor: float = 0.1, mask: torch.Tensor | None = None) -> torch.Tensor:
    """``mean(|W| · |target − prediction|)`` over every voxel of the batch (scalar); with ``mask`` (1 inside the
    body, 0 outside, same shape) the mean over the body's voxels only (0 for a batch without a body voxel)."""
    weight = voxel_weight(target, weighting, floor)
    error = weight.abs() * (target - prediction).abs()
    if mask is None:
        return error.mean()
    inside = (mask > 0.5).to(error.dtype)
    return (error * inside).sum() / inside.sum().clamp_min(1.0)


def _window_1d(size: int, kernel: Literal["uniform", "gaussian"], sigma: float, device: torch.device) -> torch.Tensor:
    if kernel == "uniform":
        return torch.full((size,), 1.0 / size, device=device)
    if kernel == "gaussian":
        coords = torch.arange(size, device=device, dtype=torch.float32) - (size - 1) / 2.0
        window = torch.exp(-(coords**2) / (2.0 * sigma**2))
        return window / window.sum()
    raise ValueError(f"unknown SSIM kernel {kernel!r} (expected 'uniform' or 'gaussian')")


def _separable_filter(volume: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """Valid (no padding) separable 3D filtering of (N, C, z, y, x) with a 1D window along each axis."""
    channels = volume.shape[1]
    size = window.numel()
    out = volume
    for shape in ((size, 1, 1), (1, size, 1), (1, 1, size)):
        kernel = window.reshape(1, 1, *shape).expand(channels, 1, *shape).contiguous()
        out = F.conv3d(out, kernel, groups=channels)
    return out


def ssim3d(prediction: torch.Tensor, target: torch.Tensor, window: int = 7,
           kernel: Literal["uniform", "gaussian"] = "uniform", data_range: float = SSIM_DATA_RANGE,
           sigma: float = 1.5, k1: float = 0.01, k2: float = 0.03) -> torch.Tensor:
    """Mean 3D SSIM of two (B, C, z, y, x) tensors (differentiable, scalar), valid windows only.

    Local means/variances with a ``window``³ uniform (or gaussian, σ = ``sigma`` voxels) kernel, K1 = 0.01,
    K2 = 0.03, data range 2 for [-1, 1] images; sample (N−1) covariance for the uniform window, as the metric.
    """
    if prediction.shape != target.shape or prediction.ndim != 5:
        raise ValueError(f"ssim3d needs two (B, C, z, y, x) tensors of one shape, got {tuple(prediction.shape)} "
                         f"and {tuple(target.shape)}")
    if min(prediction.shape[2:]) < window:
        raise ValueError(f"ssim3d: spatial size {tuple(prediction.shape[2:])} is smaller than the window {window}")
    x = prediction.float()
    y = target.float()
    weights = _window_1d(window, kernel, sigma, x.device)
    stacked = torch.cat([x, y, x * x, y * y, x * y], dim=1)
    filtered = _separable_filter(stacked, weights)
    channels = x.shape[1]
    mu_x, mu_y, xx, yy, xy = torch.split(filtered, channels, dim=1)
    n = float(window**3)
    correction = n / (n - 1.0) if kernel == "uniform" else 1.0
    var_x = (xx - mu_x * mu_x) * correction
    var_y = (yy - mu_y * mu_y) * correction
    cov = (xy - mu_x * mu_y) * correction
    c1 = (k1 * data_range) ** 2
    c2 = (k2 * data_range) ** 2
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return ssim_map.mean()


def ssim_loss(prediction: torch.Tensor, target: torch.Tensor, window: int = 7,
              kernel: Literal["uniform", "gaussian"] = "uniform") -> torch.Tensor:
    """``1 − SSIM(P, G)``: 0 for identical images."""
    return 1.0 - ssim3d(prediction, target, window=window, kernel=kernel)


def _target_like(logits: torch.Tensor, value: float) -> torch.Tensor:
    return torch.full_like(logits, value)


def generator_gan_loss(fake_logits: torch.Tensor, mode: GanMode = "lsgan") -> torch.Tensor:
    """Adversarial loss of the generator: push D(MR, P) towards "real".

    lsgan: ``mean((D − 1)²)``; bce: ``BCEWithLogits(D, 1)``. Decreases as the fake logits rise (below 1 for lsgan).
    """
    fake_logits = fake_logits.float()
    if mode == "lsgan":
        return ((fake_logits - 1.0) ** 2).mean()
    if mode == "bce":
        return F.binary_cross_entropy_with_logits(fake_logits, _target_like(fake_logits, 1.0))
    raise ValueError(f"unknown GAN mode {mode!r} (expected 'lsgan' or 'bce')")


def discriminator_gan_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor,
                           mode: GanMode = "lsgan") -> torch.Tensor:
    """Discriminator loss: real pairs → 1, fake pairs → 0, averaged (½·(real term + fake term)).

    lsgan: ``½·(mean((D(real) − 1)²) + mean(D(fake)²))``; bce: ``½·(BCE(D(real), 1) + BCE(D(fake), 0))``.
    """
    real_logits = real_logits.float()
    fake_logits = fake_logits.float()
    if mode == "lsgan":
        return 0.5 * (((real_logits - 1.0) ** 2).mean() + (fake_logits**2).mean())
    if mode == "bce":
        real = F.binary_cross_entropy_with_logits(real_logits, _target_like(real_logits, 1.0))
        fake = F.binary_cross_entropy_with_logits(fake_logits, _target_like(fake_logits, 0.0))
        return 0.5 * (real + fake)
    raise ValueError(f"unknown GAN mode {mode!r} (expected 'lsgan' or 'bce')")


def generator_loss(prediction: torch.Tensor, target: torch.Tensor, fake_logits: torch.Tensor | None, *,
                   alpha: float, lambda_gan: float, weighting: Weighting = "paper", floor: float = 0.1,
                   gan_mode: GanMode = "lsgan", ssim_window: int = 7,
                   ssim_kernel: Literal["uniform", "gaussian"] = "uniform",
                   mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Every term of eq. 2 and their sum: ``{"l1", "ssim", "gan", "total"}`` (scalars, float32).

    With ``fake_logits`` None (GAN warm-up or λ = 0) the GAN term is 0 and not part of the graph. With ``mask``
    (the body mask of the patches, ``loss.l1_mask: body``) the L1 term is the mean inside the body only (masked
    L1 in normalised HU, the SynthRAD winners' loss); SSIM stays over the whole patch.
    """
    prediction = prediction.float()
    target = target.float()
    l1 = weighted_l1(prediction, target, weighting, floor, None if mask is None else mask.float())
    if alpha > 0:
        ssim_term = ssim_loss(prediction, target, ssim_window, ssim_kernel)
        total = l1 + alpha * ssim_term
    else:  # logged only: no graph
        with torch.no_grad():
            ssim_term = ssim_loss(prediction, target, ssim_window, ssim_kernel)
        total = l1
    if fake_logits is not None:
        gan = generator_gan_loss(fake_logits, gan_mode)
        total = total + lambda_gan * gan
    else:
        gan = torch.zeros((), device=prediction.device)
    return {"l1": l1, "ssim": ssim_term, "gan": gan, "total": total}

