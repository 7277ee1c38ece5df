"""Labels → CT in HU: per-tissue means and texture, partial-volume smoothing, quantum noise."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

Box = tuple[slice, slice, slice]


def foreground_box(labels: np.ndarray, margin: int = 4) -> Box:
    """Bounding box (z, y, x slices) of the non-zero labels, grown by ``margin`` voxels and clipped to the volume."""
    box = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        present = np.nonzero(labels.any(axis=other))[0]
        if present.size == 0:
            return (slice(0, 0), slice(0, 0), slice(0, 0))
        box.append(slice(max(int(present[0]) - margin, 0), min(int(present[-1]) + margin + 1, labels.shape[axis])))
    return (box[0], box[1], box[2])


def correlated_noise(shape: Sequence[int], spacing_mm: Sequence[float], sigma_mm: float,
                     rng: np.random.Generator) -> np.ndarray:
    """White noise smoothed by a Gaussian of ``sigma_mm``, rescaled to unit standard deviation. (z, y, x) float32."""
    noise = rng.standard_normal(tuple(int(n) for n in shape), dtype=np.float32)
    if noise.size == 0:
        return noise
    sigma = [sigma_mm / s for s in spacing_mm]
    ndimage.gaussian_filter(noise, sigma, output=noise, mode="wrap", truncate=2.5)
    scale = float(np.std(noise[:: max(1, noise.shape[0] // 16)]))
    noise /= np.float32(max(scale, 1e-6))
    return noise


def partial_volume(volume: np.ndarray, spacing_mm: Sequence[float], sigma_mm: float = 0.45,
                   max_sigma_voxels: float = 0.6) -> np.ndarray:
    """Blur tissue boundaries like a scanner's point spread: Gaussian of ``sigma_mm`` (at most
    ``max_sigma_voxels``, at least 0.35 voxel along an axis), in place. Returns ``volume``."""
    sigma = [min(max(sigma_mm / s, 0.35), max_sigma_voxels) for s in spacing_mm]
    if volume.size:
        ndimage.gaussian_filter(volume, sigma, output=volume, mode="nearest", truncate=2.5)
    return volume


def tissue_texture(labels: np.ndarray, spacing_mm: Sequence[float], rng: np.random.Generator) -> np.ndarray:
    """Unit-sd correlated texture (~0.9 mm grain) on the labels' foreground box; zero elsewhere. Shared by the
    CT and the MR simulation (the same tissue microstructure seen by both)."""
    texture = np.zeros(labels.shape, dtype=np.float32)
    box = foreground_box(labels)
    texture[box] = correlated_noise(labels[box].shape, spacing_mm, 0.9, rng)
    return texture


def simulate_ct(
    labels: np.ndarray,
    spacing_mm: Sequence[float],
    hu_mean: np.ndarray,
    hu_texture: np.ndarray,
    texture: np.ndarray,
    rng: np.random.Generator,
    noise_hu: float,
) -> np.ndarray:
    """CT (z, y, x) float32 HU from a label volume: mean HU per tissue plus ``texture`` scaled by the tissue's
    texture sd, blurred at boundaries (partial volume), plus correlated quantum noise of ``noise_hu`` sd."""
    hu = hu_mean[labels]
    hu += hu_texture[labels] * texture
    partial_volume(hu[foreground_box(labels)], spacing_mm)
    hu += correlated_noise(labels.shape, spacing_mm, 0.5, rng) * np.float32(noise_hu)
    return hu
