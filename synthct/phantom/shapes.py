"""Approximate signed distances (mm, negative inside) of analytic shapes, evaluated on coordinate arrays.

Coordinates are a tuple ``(uz, uy, ux)`` of broadcastable float32 arrays in mm; centres, radii and points are
given in the same (z, y, x) order. The ellipsoid distance is the first-order approximation ``g / |grad g|``,
exact on the surface and good within a few mm of it, which is where layers (skin, skull tables) are cut.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Coords = tuple[np.ndarray, np.ndarray, np.ndarray]
Vec = Sequence[float] | np.ndarray
"""A (z, y, x) point or extent in mm: a sequence of floats or a (3,) array."""


def ellipsoid(u: Coords, centre: Vec, radii: Vec) -> np.ndarray:
    """Signed distance to an axis-aligned ellipsoid (approximate away from the surface)."""
    q = [(ui - c) for ui, c in zip(u, centre, strict=True)]
    k0 = np.sqrt(sum((qi / r) ** 2 for qi, r in zip(q, radii, strict=True)))
    k1 = np.sqrt(sum((qi / (r * r)) ** 2 for qi, r in zip(q, radii, strict=True)))
    return (k0 * (k0 - 1.0) / np.maximum(k1, 1e-6)).astype(np.float32, copy=False)


def rotated_ellipsoid(u: Coords, centre: Vec, radii: Vec, rotation: np.ndarray) -> np.ndarray:
    """Signed distance to an ellipsoid whose axes are the columns of ``rotation`` (3x3 on (z, y, x))."""
    return ellipsoid(to_local(u, centre, rotation), (0.0, 0.0, 0.0), radii)


def to_local(u: Coords, centre: Vec, rotation: np.ndarray) -> Coords:
    """Coordinates in a frame centred at ``centre`` with axes the columns of ``rotation``."""
    q = [(ui - c) for ui, c in zip(u, centre, strict=True)]
    local = [(rotation[0, k] * q[0] + rotation[1, k] * q[1] + rotation[2, k] * q[2]).astype(np.float32, copy=False)
             for k in range(3)]
    return (local[0], local[1], local[2])


def capsule(u: Coords, start: Vec, end: Vec, radius_start: float, radius_end: float | None = None) -> np.ndarray:
    """Signed distance to a capsule (segment swept by a sphere); the radius may taper linearly."""
    a = np.asarray(start, dtype=np.float32)
    ba = np.asarray(end, dtype=np.float32) - a
    pa = [ui - ai for ui, ai in zip(u, a, strict=True)]
    h = np.clip(sum(p * b for p, b in zip(pa, ba, strict=True)) / max(float(ba @ ba), 1e-6), 0.0, 1.0)
    distance = np.sqrt(sum((p - b * h) ** 2 for p, b in zip(pa, ba, strict=True)))
    radius = radius_start if radius_end is None else radius_start + (radius_end - radius_start) * h
    return (distance - radius).astype(np.float32, copy=False)


def polyline(u: Coords, points: Sequence[Vec], radii: Sequence[float]) -> np.ndarray:
    """Union of tapered capsules along a polyline (a bent tube)."""
    result = None
    for k in range(len(points) - 1):
        d = capsule(u, points[k], points[k + 1], radii[k], radii[k + 1])
        result = d if result is None else np.minimum(result, d)
    assert result is not None
    return result


def superellipse_prism(uy: np.ndarray, ux: np.ndarray, centre_yx: Vec, radii_yx: Sequence[float | np.ndarray],
                       power: float) -> np.ndarray:
    """Signed distance (radial approximation) to an infinite prism along z with a superelliptic cross-section.

    ``radii_yx`` may hold arrays (radii varying with z, broadcast against the coordinates).
    """
    qy = np.abs(uy - centre_yx[0])
    qx = np.abs(ux - centre_yx[1])
    level = ((qy / radii_yx[0]) ** power + (qx / radii_yx[1]) ** power) ** (1.0 / power)
    radial = np.sqrt(qy * qy + qx * qx)
    return (radial * (1.0 - 1.0 / np.maximum(level, 1e-6))).astype(np.float32, copy=False)


def smooth_union(a: np.ndarray, b: np.ndarray, blend_mm: float) -> np.ndarray:
    """Polynomial smooth minimum of two distances (rounds the crease where shapes meet)."""
    h = np.clip(0.5 + 0.5 * (b - a) / blend_mm, 0.0, 1.0)
    return (b * (1.0 - h) + a * h - blend_mm * h * (1.0 - h)).astype(np.float32, copy=False)
