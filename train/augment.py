"""Batched augmentation on the training device: affine (one ``grid_sample`` per batch and volume kind), then
mirroring and MR intensity changes (:func:`apply_batch_intensity`: gamma, bias field, noise, low resolution).

The loader hands over, per patch, a crop larger than the patch (``AUGMENT_MARGIN`` of the patch on each side) and
the 4 × 4 affine of the patch's rotation / scale / translation (or none); here every augmented patch of the batch
is resampled at once: bilinear for MR and CT, nearest for the mask, the same transform for all three. The geometry
is MONAI ``Affined``'s (the loader-side path), so both paths give the same patches up to interpolation rounding.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from monai.transforms.utils import create_rotate, create_scale, create_translate

AUGMENT_MARGIN = 0.25
"""An augmented patch is resampled from a crop this fraction of the patch larger on each side (fewer border voxels)."""


def crop_margin(patch_size: Sequence[int]) -> list[int]:
    """Voxels added on each side of the patch for the crop an augmented patch is resampled from."""
    return [math.ceil(int(p) * AUGMENT_MARGIN) for p in patch_size]


def affine_matrix(rotate: Sequence[float], scale: Sequence[float], translate: Sequence[float]) -> np.ndarray:
    """MONAI ``Affine``'s matrix (rotation @ translation @ scale; centred voxel coordinates, output → input)."""
    matrix = create_rotate(3, list(rotate), backend="numpy") @ create_translate(3, list(translate), backend="numpy")
    return np.asarray(matrix @ create_scale(3, list(scale), backend="numpy"), dtype=np.float64)


def _sampling_grid(affines: torch.Tensor, in_shape: Sequence[int], out_shape: Sequence[int]) -> torch.Tensor:
    """grid_sample grid (B, *out_shape, 3) for affines (B, 4, 4) mapping centred output to centred input voxels."""
    device = affines.device
    axes = [torch.arange(n, device=device, dtype=torch.float64) - (n - 1) / 2.0 for n in out_shape]
    mesh = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1)  # (*out, 3), (z, y, x) order
    homogeneous = torch.cat([mesh, torch.ones_like(mesh[..., :1])], dim=-1).reshape(-1, 4)
    mapped = torch.einsum("bij,nj->bni", affines.to(torch.float64), homogeneous)[..., :3]  # centred input coords
    sizes = torch.tensor([float(n) for n in in_shape], device=device, dtype=torch.float64)
    # align_corners=False: voxel index i ↔ (2i + 1) / n - 1; with i = c + (n - 1) / 2 that is 2c / n
    normalised = 2.0 * mapped / sizes
    grid = normalised.flip(-1)  # grid_sample wants (x, y, z)
    return grid.reshape(affines.shape[0], *out_shape, 3).to(torch.float32)


def apply_batch_affine(batch: dict[str, torch.Tensor], patch_size: Sequence[int]) -> dict[str, torch.Tensor]:
    """Patches (B, 1, *patch) from a loader batch holding crops (B, 1, *(patch + 2·margin)) of ``mr``, ``ct``,
    ``mask``, per-patch ``affine`` (B, 4, 4) and ``augmented`` (B,) flags, on the batch's device.

    Unaugmented patches are the crops' centres, exactly; augmented ones are resampled (border padding).
    """
    patch = [int(p) for p in patch_size]
    margin = crop_margin(patch)
    centre = (slice(None), slice(None), *(slice(m, m + p) for m, p in zip(margin, patch, strict=True)))
    out = {key: batch[key][centre].contiguous() for key in ("mr", "ct", "mask")}
    flags = batch["augmented"].to(torch.bool)
    if not bool(flags.any()):
        return out
    chosen = torch.nonzero(flags).flatten()
    in_shape = batch["mr"].shape[2:]
    grid = _sampling_grid(batch["affine"][chosen].to(batch["mr"].device), in_shape, patch)
    images = torch.cat([batch["mr"][chosen], batch["ct"][chosen]], dim=1).float()
    resampled = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
    mask = F.grid_sample(batch["mask"][chosen].float(), grid, mode="nearest", padding_mode="border",
                         align_corners=False)
    out["mr"][chosen] = resampled[:, :1].to(out["mr"].dtype)
    out["ct"][chosen] = resampled[:, 1:].to(out["ct"].dtype)
    out["mask"][chosen] = mask.to(out["mask"].dtype)
    return out


# ------------------------------------------------------------------------------------- mirroring and intensity
GAMMA_RANGE = (0.7, 1.5)
"""Gamma of the MR, uniform in this range (nnU-Net's). The MR intensity changes act on the patch's MR rescaled to
[0, 1] by its own minimum and maximum and map back to that range, whatever the normalisation rule (max, percentile:
[-1, 1]; zscore: unbounded)."""
BIAS_FIELD_STD = 0.3
"""Standard deviation of the log bias field's coarse (4³) control values: the field is ``exp`` of their trilinear
up-sampling, ≈ ±30 % intensity variation over a patch."""
BIAS_FIELD_GRID = 4
NOISE_STD_MAX = 0.025
"""Gaussian noise on the MR: σ uniform in (0, this] of the patch's MR range (min to max)."""
LOWRES_ZOOM = (0.5, 1.0)
"""Low-resolution simulation: the MR is down-sampled by a factor uniform in this range (per patch, all axes), then
up-sampled back (trilinear both ways)."""


def _chance(probability: float, count: int) -> list[bool]:
    if probability <= 0.0:
        return [False] * count
    return [bool(v) for v in (torch.rand(count) < probability).tolist()]


def _bias_field(shape: Sequence[int], device: torch.device) -> torch.Tensor:
    """A smooth multiplicative field (1, 1, *shape), ``exp`` of up-sampled coarse Gaussian control values."""
    coarse = torch.randn((1, 1, *(BIAS_FIELD_GRID,) * 3), device=device) * BIAS_FIELD_STD
    return torch.exp(F.interpolate(coarse, size=tuple(int(s) for s in shape), mode="trilinear", align_corners=True))


def _low_resolution(volume: torch.Tensor, zoom: float) -> torch.Tensor:
    shape = volume.shape[2:]
    small = [max(1, round(int(n) * zoom)) for n in shape]
    down = F.interpolate(volume, size=small, mode="trilinear", align_corners=False)
    return F.interpolate(down, size=tuple(int(n) for n in shape), mode="trilinear", align_corners=False)


def apply_batch_intensity(batch: dict[str, torch.Tensor], mirror: bool = False, gamma_probability: float = 0.0,
                          bias_field_probability: float = 0.0, noise_probability: float = 0.0,
                          lowres_probability: float = 0.0) -> dict[str, torch.Tensor]:
    """Mirroring and MR intensity augmentation of a batch of patches (``mr``, ``ct``, ``mask``: (B, 1, z, y, x),
    normalised, on any device), drawn per patch from torch's global RNG (seeded and checkpointed by the
    trainer); returns new tensors, the input is not changed.

    mirror: each axis (z, y, x) flipped with probability ½, MR, CT and mask alike. On the MR only, each with its
    probability: gamma (:data:`GAMMA_RANGE`), a smooth multiplicative bias field, Gaussian noise, a low-resolution
    copy (down- then up-sampled); the MR stays within the patch's own range. All off by default: the batch comes
    back unchanged.
    """
    out = dict(batch)
    count = int(batch["mr"].shape[0])
    mr = batch["mr"]
    if mirror:
        flips = (torch.rand(count, 3) < 0.5).tolist()
        if any(any(row) for row in flips):
            for key in ("mr", "ct", "mask"):
                rows = [torch.flip(out[key][i], [1 + a for a in range(3) if flips[i][a]]) if any(flips[i])
                        else out[key][i] for i in range(count)]
                out[key] = torch.stack(rows)
            mr = out["mr"]
    draws = [_chance(p, count) for p in (gamma_probability, bias_field_probability, noise_probability,
                                         lowres_probability)]
    if not any(any(d) for d in draws):
        return out
    rows = []
    for i in range(count):
        patch = mr[i:i + 1].float()
        low, high = float(patch.min()), float(patch.max())
        if not high > low or not any(d[i] for d in draws):  # a constant patch has no contrast to change
            rows.append(mr[i:i + 1])
            continue
        unit = (patch - low) / (high - low)
        if draws[0][i]:
            gamma = float(torch.empty(1).uniform_(*GAMMA_RANGE))
            unit = unit.pow(gamma)
        if draws[1][i]:
            unit = unit * _bias_field(unit.shape[2:], unit.device)
        if draws[2][i]:
            sigma = float(torch.empty(1).uniform_(0.0, NOISE_STD_MAX))
            unit = unit + torch.randn(unit.shape, device=unit.device) * sigma
        if draws[3][i]:
            unit = _low_resolution(unit.clamp(0.0, 1.0), float(torch.empty(1).uniform_(*LOWRES_ZOOM)))
        rows.append((unit.clamp(0.0, 1.0) * (high - low) + low).to(mr.dtype))
    out["mr"] = torch.cat(rows)
    return out
