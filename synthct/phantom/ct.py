"""Labels → CT in HU: per-tissue means and texture, partial-volume smoothing, quantum noise."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage


def correlated_noise(shape: Sequence[int], spacing_mm: Sequence[float], sigma_mm: float,
                     rng: np.random.Generator) -> np.ndarray:
    """White noise smoothed by a Gaussian of ``sigma_mm``, rescaled to unit standard deviation. (z, y, x) float32."""
    noise = rng.standard_normal(tuple(int(n) for n in shape), dtype=np.float32)
    sigma = [sigma_mm / s for s in spacing_mm]
    ndimage.gaussian_filter(noise, sigma, output=noise, mode="wrap", truncate=3.0)
    scale = float(np.std(noise[:: max(1, noise.shape[0] // 16)]))
    noise /= np.float32(max(scale, 1e-6))
    return noise


def partial_volume(volume: np.ndarray, spacing_mm: Sequence[float], sigma_mm: float = 0.45,
                   max_sigma_voxels: float = 0.6) -> np.ndarray:
    """Blur tissue boundaries like a scanner's point spread: Gaussian of ``sigma_mm`` (at most
    ``max_sigma_voxels`` along an axis), in place. Returns ``volume``."""
    sigma = [min(sigma_mm / s, max_sigma_voxels) if sigma_mm / s > 0.25 else 0.35 for s in spacing_mm]
    ndimage.gaussian_filter(volume, sigma, output=volume, mode="nearest", truncate=3.0)
    return volume


def simulate_ct(
    labels: np.ndarray,
    spacing_mm: Sequence[float],
    hu_mean: np.ndarray,
    hu_texture: np.ndarray,
    rng: np.random.Generator,
    noise_hu: float,
) -> np.ndarray:
    """CT (z, y, x) float32 HU from a label volume: mean HU per tissue plus correlated tissue texture (sd per
    tissue), blurred at boundaries (partial volume), plus quantum noise of ``noise_hu`` sd everywhere."""
    hu = hu_mean[labels]
    texture = correlated_noise(labels.shape, spacing_mm, 0.9, rng)
    texture *= hu_texture[labels]
    hu += texture
    del texture
    partial_volume(hu, spacing_mm)
    noise = correlated_noise(labels.shape, spacing_mm, 0.5, rng)
    noise *= np.float32(noise_hu)
    hu += noise
    return hu
