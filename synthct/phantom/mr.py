"""Labels → T1-weighted-like MR: per-case tissue contrast, texture, smooth bias field, partial volume, Rician noise.

Intensities are positive (as SynthRAD's MR). Air outside the body is Rician noise around zero; cortical bone and air
are both dark, so the MR alone does not separate them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from synthct.phantom.ct import foreground_box, partial_volume
from synthct.phantom.fields import smooth_field


def bias_field(shape: Sequence[int], spacing_mm: Sequence[float], strength: float,
               rng: np.random.Generator) -> np.ndarray:
    """Smooth multiplicative field exp(strength * f) with f a unit-sd field of ~100 mm features. (z, y, x) float32."""
    field = smooth_field(shape, spacing_mm, 60.0, rng)
    field *= np.float32(strength)
    return np.exp(field, out=field)


def simulate_mr(
    labels: np.ndarray,
    spacing_mm: Sequence[float],
    relative: np.ndarray,
    texture_sd: np.ndarray,
    texture: np.ndarray,
    rng: np.random.Generator,
    reference: float,
    noise_fraction: float,
    bias_strength: float,
    modulation: np.ndarray | None = None,
) -> np.ndarray:
    """MR (z, y, x) float32 from a label volume.

    ``relative`` (by label) is the tissue intensity relative to the reference tissue, whose mean becomes
    ``reference``; ``texture`` (unit sd) scaled by ``texture_sd`` (by label) a relative texture; the Rician noise
    sd is ``noise_fraction * reference``. ``modulation`` (optional, same shape) multiplies the tissue intensity
    voxel by voxel.
    """
    signal = relative[labels]
    if modulation is not None:
        signal *= modulation
    box = foreground_box(labels)
    inside = signal[box]
    inside *= 1.0 + texture_sd[labels[box]] * texture[box]
    inside *= bias_field(inside.shape, spacing_mm, bias_strength, rng)
    inside *= np.float32(reference)
    partial_volume(inside, spacing_mm, sigma_mm=0.55, max_sigma_voxels=0.7)
    sigma = np.float32(noise_fraction * reference)
    real = rng.standard_normal(labels.shape, dtype=np.float32)
    real *= sigma
    real += signal
    del signal
    imaginary = rng.standard_normal(labels.shape, dtype=np.float32)
    imaginary *= sigma
    np.square(real, out=real)
    np.square(imaginary, out=imaginary)
    real += imaginary
    return np.sqrt(real, out=real)
