"""Batched affine augmentation on the training device: one ``grid_sample`` per batch and volume kind.

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
