"""The label canvas: a voxel grid, the per-case anatomical coordinates of every voxel, and tissue painting.

Anatomy is described in *anatomical* coordinates (mm at real size, origin at the anatomy's centre, LPS axes in
(z, y, x) order: z superior, y posterior, x patient-left). Each voxel's anatomical coordinate is

    u = (Rᵀ (p - t) + d(p)) / scale

with p the voxel centre relative to the volume centre (mm), R a random rotation, t a random shift, d a smooth
random displacement (mm) and ``scale`` the size's scale factor (z, y, x). Shapes are painted in bounding blocks,
so small structures cost little.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from synthct.phantom.shapes import Coords, Vec

Block = tuple[slice, slice, slice]


class Canvas:
    """Label volume (z, y, x) uint8 plus anatomical coordinates; see the module docstring."""

    def __init__(
        self,
        shape: Sequence[int],
        spacing_mm: Sequence[float],
        rotation: np.ndarray,
        shift_mm: Sequence[float],
        scale: Sequence[float],
        displacement_mm: np.ndarray | None,
    ) -> None:
        """``displacement_mm`` (3, z, y, x) float32 is consumed (its memory becomes the coordinates)."""
        self.shape = tuple(int(n) for n in shape)
        self.spacing_mm = np.asarray(spacing_mm, dtype=np.float64)
        self.rotation = np.asarray(rotation, dtype=np.float64)
        self.shift_mm = np.asarray(shift_mm, dtype=np.float64)
        self.scale = np.asarray(scale, dtype=np.float64)
        self.labels = np.zeros(self.shape, dtype=np.uint8)
        axes = [((np.arange(n) - (n - 1) / 2.0) * s - t) for n, s, t in zip(self.shape, self.spacing_mm,
                                                                              self.shift_mm, strict=True)]
        grids = [a.astype(np.float32).reshape([-1 if k == i else 1 for k in range(3)]) for i, a in enumerate(axes)]
        if displacement_mm is None:
            displacement_mm = np.zeros((3, *self.shape), dtype=np.float32)
            self.max_displacement_mm = 0.0
        else:
            self.max_displacement_mm = float(np.abs(displacement_mm).max())
        u = []
        for k in range(3):
            component = displacement_mm[k]  # reused in place: u_k = (sum_j R[j, k] p_j + d_k) / scale_k
            for j in range(3):
                component += np.float32(self.rotation[j, k]) * grids[j]
            component *= np.float32(1.0 / self.scale[k])
            u.append(component)
        self.u: Coords = (u[0], u[1], u[2])

    def block(self, low: Vec, high: Vec, margin_mm: float = 2.0) -> Block | None:
        """Voxel block covering the anatomical box [low, high] (z, y, x mm), or None if it misses the volume."""
        corners = np.array(np.meshgrid(*zip(low, high, strict=True), indexing="ij")).reshape(3, -1).T
        physical = (corners * self.scale) @ self.rotation.T + self.shift_mm
        pad = self.max_displacement_mm + margin_mm
        lo_mm = physical.min(axis=0) - pad
        hi_mm = physical.max(axis=0) + pad
        slices = []
        for k in range(3):
            centre = (self.shape[k] - 1) / 2.0
            start = max(int(np.floor(lo_mm[k] / self.spacing_mm[k] + centre)), 0)
            stop = min(int(np.ceil(hi_mm[k] / self.spacing_mm[k] + centre)) + 1, self.shape[k])
            if stop <= start:
                return None
            slices.append(slice(start, stop))
        return (slices[0], slices[1], slices[2])

    def coords(self, block: Block) -> Coords:
        """Anatomical coordinates (mm) of the voxels in ``block``."""
        return (self.u[0][block], self.u[1][block], self.u[2][block])

    def around(self, centre: Sequence[float], half_extent: float | Sequence[float]) -> tuple[Block, Coords] | None:
        """Block and coordinates around an anatomical point, ``half_extent`` mm each way (scalar or (z, y, x))."""
        half = np.broadcast_to(np.asarray(half_extent, dtype=np.float64), (3,))
        block = self.block(np.asarray(centre) - half, np.asarray(centre) + half)
        return None if block is None else (block, self.coords(block))

    def paint(
        self,
        label: int,
        inside: np.ndarray,
        block: Block,
        only: Iterable[int] | None = None,
        keep: Iterable[int] | None = None,
    ) -> None:
        """Set ``label`` where ``inside`` (a boolean array of the block) holds; with ``only``, just over those labels;
        with ``keep``, never over those labels."""
        target = self.labels[block]
        where = inside
        if only is not None:
            where = where & np.isin(target, np.fromiter(only, dtype=np.uint8))
        if keep is not None:
            where = where & ~np.isin(target, np.fromiter(keep, dtype=np.uint8))
        target[where] = label

    def label_in(self, block: Block, labels: Iterable[int]) -> np.ndarray:
        """Boolean array of the block: voxels currently holding one of ``labels``."""
        return np.isin(self.labels[block], np.fromiter(labels, dtype=np.uint8))
