"""Smooth random fields on a voxel grid: separable cubic B-spline upsampling of coarse random control points.

Used for smooth deformations (mm), bias fields, layer-thickness modulation and tissue texture. All arrays are
(z, y, x) float32. Upsampling is three small matrix products (no per-voxel Python), so a 256x256x192 field takes
well under a second.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def bspline_weights(n_samples: int, spacing_mm: float, cell_mm: float, start_mm: float = 0.0) -> np.ndarray:
    """(n_samples, n_controls) cubic B-spline weights sampling a control grid of pitch ``cell_mm``.

    Each row is normalised to unit L2 norm, so unit-variance independent controls give a unit-variance field
    at every sample.
    """
    positions = (start_mm + np.arange(n_samples) * spacing_mm) / cell_mm + 1.0
    n_controls = math.floor(float(positions.max())) + 3
    knots = np.arange(n_controls, dtype=np.float64)
    t = np.abs(positions[:, None] - knots[None, :])
    weights = np.where(t < 1.0, (4.0 - 6.0 * t**2 + 3.0 * t**3) / 6.0, np.where(t < 2.0, (2.0 - t) ** 3 / 6.0, 0.0))
    weights /= np.sqrt((weights**2).sum(axis=1, keepdims=True))
    return weights.astype(np.float32)


def smooth_field(
    shape: Sequence[int],
    spacing_mm: Sequence[float] | np.ndarray,
    cell_mm: float | Sequence[float],
    rng: np.random.Generator,
    components: int = 1,
) -> np.ndarray:
    """Random smooth field(s) with unit standard deviation, features about ``2 * cell_mm`` wide.

    Returns (components, z, y, x) float32, or (z, y, x) when ``components == 1``.
    """
    cells = [float(c) for c in np.broadcast_to(np.asarray(cell_mm, dtype=np.float64), (3,))]
    wz, wy, wx = (bspline_weights(int(n), float(s), c) for n, s, c in zip(shape, spacing_mm, cells, strict=True))
    out = np.empty((components, *(int(n) for n in shape)), dtype=np.float32)
    for component in range(components):
        controls = rng.standard_normal((wz.shape[1], wy.shape[1], wx.shape[1])).astype(np.float32)
        cz, cy, cx = controls.shape
        # Plain 2-D matrix products (one BLAS call each; stacked matmul is far slower).
        along_x = (controls.reshape(cz * cy, cx) @ wx.T).reshape(cz, cy, -1)  # (cz, cy, X)
        along_y = wy @ along_x.transpose(1, 0, 2).reshape(cy, -1)  # (Y, cz * X)
        along_y = np.ascontiguousarray(along_y.reshape(wy.shape[0], cz, -1).transpose(1, 0, 2))  # (cz, Y, X)
        np.matmul(wz, along_y.reshape(cz, -1), out=out[component].reshape(wz.shape[0], -1))
    return out[0] if components == 1 else out


def rotation_matrix(angles_deg: Sequence[float]) -> np.ndarray:
    """3x3 rotation acting on (z, y, x) vectors: rotations about the z, y and x axes by the given degrees, applied
    in that order (yaw about the body axis first)."""
    az, ay, ax = (math.radians(a) for a in angles_deg)
    # Rotation about z mixes (y, x); about y mixes (z, x); about x mixes (z, y).
    rz = np.array([[1, 0, 0], [0, math.cos(az), -math.sin(az)], [0, math.sin(az), math.cos(az)]])
    ry = np.array([[math.cos(ay), 0, -math.sin(ay)], [0, 1, 0], [math.sin(ay), 0, math.cos(ay)]])
    rx = np.array([[math.cos(ax), -math.sin(ax), 0], [math.sin(ax), math.cos(ax), 0], [0, 0, 1]])
    return rx @ ry @ rz
