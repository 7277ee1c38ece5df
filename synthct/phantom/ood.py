"""Out-of-distribution MRs built from a phantom, for the trust check's tests and calibration (SPEC §14).

Each function takes a generated case (:class:`synthct.phantom.PhantomVolumes`) and returns ``(mr, mask)`` int16 /
uint8 arrays (z, y, x) on the case's grid, the MR a T1 model was not trained on:

- :func:`t2_like`: the same anatomy re-simulated with T2-weighted contrast (fluid and CSF bright, fat darker than
  in T1, muscle dark);
- :func:`strong_bias`: the T1 MR times a smooth multiplicative field spanning ``ratio`` (default 4×) across the
  body (a failed coil-sensitivity correction);
- :func:`truncated_fov`: the field of view cut through the body (the MR and mask cropped in-plane to ``keep`` of
  the body's width, the cut-off part gone from the image);
- :func:`signal_void`: a sphere of no signal deep in the body (a metal artefact), the mask unchanged.

A pelvis through a brain model needs no function: a pelvis phantom is that case.
"""

from __future__ import annotations

import numpy as np

from synthct.phantom.ct import tissue_texture
from synthct.phantom.generate import MR_MAX, PhantomVolumes
from synthct.phantom.mr import simulate_mr
from synthct.phantom.tissues import (
    BLOOD,
    BOWEL,
    CANCELLOUS_BONE,
    CSF,
    EYE,
    FAT,
    FLUID,
    GREY_MATTER,
    MARROW,
    MUSCLE,
    N_LABELS,
    SKIN,
    SOFT_TISSUE,
    URINE,
    WHITE_MATTER,
)

T2_RELATIVE: dict[int, float] = {
    SKIN: 0.55, FAT: 0.55, MUSCLE: 0.3, SOFT_TISSUE: 0.6, GREY_MATTER: 0.85, WHITE_MATTER: 0.55, CSF: 2.2,
    EYE: 2.2, URINE: 2.4, FLUID: 2.2, BLOOD: 0.9, BOWEL: 0.8, MARROW: 0.5, CANCELLOUS_BONE: 0.35,
}
"""T2-weighted intensity relative to white matter (brain) / fat's T1 level; unlisted tissues (bone cortex, air,
lung) stay dark."""


def t2_like(case: PhantomVolumes, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The case's anatomy with T2-like contrast (same labels, texture, noise model as the T1 simulation)."""
    rng = np.random.default_rng(seed)
    relative = np.zeros(N_LABELS, dtype=np.float32)
    for label, value in T2_RELATIVE.items():
        relative[label] = value
    texture_sd = np.full(N_LABELS, 0.04, dtype=np.float32)
    spacing = tuple(float(s) for s in case.spacing_xyz_mm[::-1])
    texture = tissue_texture(case.labels, spacing, rng)
    mr = simulate_mr(case.labels, spacing, relative, texture_sd, texture, rng, reference=600.0,
                     noise_fraction=0.025, bias_strength=0.1)
    return np.clip(np.rint(mr), 0, MR_MAX).astype(np.int16), case.mask.copy()


def strong_bias(case: PhantomVolumes, ratio: float = 4.0) -> tuple[np.ndarray, np.ndarray]:
    """The T1 MR times a linear-in-log field along the body's diagonal, ``ratio`` from one side to the other."""
    shape = case.mr.shape
    grid = np.meshgrid(*(np.linspace(-0.5, 0.5, n, dtype=np.float32) for n in shape), indexing="ij")
    field = np.exp(np.float32(np.log(ratio)) * (grid[0] + grid[1] + grid[2]) / np.float32(1.5))
    mr = case.mr.astype(np.float32) * field
    return np.clip(np.rint(mr), 0, MR_MAX).astype(np.int16), case.mask.copy()


def truncated_fov(case: PhantomVolumes, keep: float = 0.6) -> tuple[np.ndarray, np.ndarray]:
    """The MR and mask cropped along y (anterior–posterior) to ``keep`` of the body's extent: the FOV cuts it."""
    rows = np.nonzero(case.mask.any(axis=(0, 2)))[0]
    stop = rows[0] + max(round(keep * (rows[-1] - rows[0] + 1)), 1)
    return case.mr[:, :stop].copy(), case.mask[:, :stop].copy()


def signal_void(case: PhantomVolumes, radius_mm: float = 15.0) -> tuple[np.ndarray, np.ndarray]:
    """A sphere of radius ``radius_mm`` with no signal (Rician noise floor only) at the body's centre."""
    spacing = np.asarray(case.spacing_xyz_mm[::-1], dtype=np.float32)
    centre = np.asarray([float(np.mean(a)) for a in np.nonzero(case.mask)], dtype=np.float32)
    z, y, x = np.indices(case.mr.shape, dtype=np.float32)
    distance = np.sqrt(((z - centre[0]) * spacing[0]) ** 2 + ((y - centre[1]) * spacing[1]) ** 2
                       + ((x - centre[2]) * spacing[2]) ** 2)
    mr = case.mr.copy()
    mr[distance < radius_mm] = np.int16(3)
    return mr, case.mask.copy()
