"""Painting helpers shared by the anatomy modules: shapes evaluated in their bounding blocks, bones with a
cortical shell, air-cell honeycombs, block-local noise."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

import numpy as np

from synthct.phantom import tissues as T
from synthct.phantom.canvas import Block, Canvas
from synthct.phantom.fields import smooth_field
from synthct.phantom.shapes import Coords, capsule, ellipsoid

Point = tuple[float, float, float]


def block_noise(canvas: Canvas, block: Block, cell_adult_mm: float, rng: np.random.Generator) -> np.ndarray:
    """Unit-sd smooth noise on ``block`` with features about ``2 * cell_adult_mm`` anatomical mm wide."""
    shape = tuple(s.stop - s.start for s in block)
    cell = [max(cell_adult_mm * float(sc), 1.2 * sp) for sc, sp in zip(canvas.scale, canvas.spacing_mm, strict=True)]
    return smooth_field(shape, canvas.spacing_mm, cell, rng)


def box(centre: Sequence[float], radii: Sequence[float], pad: float = 3.0) -> tuple[Point, Point]:
    """Anatomical box around ``centre``: ``radii`` (z, y, x) or one radius for all axes, plus ``pad`` mm."""
    half = [float(radii[0]) + pad] * 3 if len(radii) == 1 else [float(r) + pad for r in radii]
    low = (centre[0] - half[0], centre[1] - half[1], centre[2] - half[2])
    high = (centre[0] + half[0], centre[1] + half[1], centre[2] + half[2])
    return low, high


def shape_in(canvas: Canvas, low: Sequence[float], high: Sequence[float],
             distance: Callable[[Coords], np.ndarray]) -> tuple[Block, np.ndarray] | None:
    """(block, signed distance on the block) of a shape within the anatomical box [low, high], or None."""
    block = canvas.block(low, high)
    if block is None:
        return None
    return block, distance(canvas.coords(block))


def paint_ellipsoid(canvas: Canvas, label: int, centre: Sequence[float], radii: Sequence[float],
                    only: Sequence[int] | None = None, keep: Sequence[int] | None = None,
                    shell: tuple[int, float] | None = None) -> None:
    """Paint an ellipsoid; with ``shell=(label, thickness_mm)`` a shell of that label is painted around it first."""
    thickness = shell[1] if shell else 0.0
    found = shape_in(canvas, *box(centre, radii, 3.0 + thickness), lambda u: ellipsoid(u, centre, radii))
    if found is None:
        return
    block, distance = found
    if shell:
        canvas.paint(shell[0], distance < thickness, block, only=only, keep=keep)
    canvas.paint(label, distance < 0, block, only=only, keep=keep)


def paint_bone(canvas: Canvas, block: Block, distance: np.ndarray, cortex_mm: float,
               keep: Sequence[int] | None = None, core: int = T.CANCELLOUS_BONE) -> None:
    """Bone: a cortical shell ``cortex_mm`` thick around a core (cancellous bone by default)."""
    canvas.paint(T.CORTICAL_BONE, distance < 0, block, keep=keep)
    canvas.paint(core, distance < -cortex_mm, block, keep=keep)


def air_cells(canvas: Canvas, centre: Sequence[float], radii: Sequence[float], air_fraction: float,
              cell_mm: float, rng: np.random.Generator) -> None:
    """A honeycomb of air cells separated by thin bony septa (mastoid, ethmoid)."""
    found = shape_in(canvas, *box(centre, radii), lambda u: ellipsoid(u, centre, radii))
    if found is None:
        return
    block, distance = found
    inside = distance < 0
    noise = block_noise(canvas, block, cell_mm, rng)
    threshold = float(np.quantile(noise[inside], 1.0 - air_fraction)) if inside.any() else 0.0
    canvas.paint(T.CORTICAL_BONE, inside, block)
    canvas.paint(T.INTERNAL_AIR, inside & (noise > threshold), block)


Distance = Callable[[Coords], np.ndarray]
BonePart = tuple[Point, Point, Distance, float, int]
"""(box low, box high, signed distance, cortex mm, core label) of one piece of bone."""


def capsule_box(start: Sequence[float], end: Sequence[float], radius: float, pad: float = 2.0) -> tuple[Point, Point]:
    """Anatomical box holding a capsule of ``radius`` between ``start`` and ``end``."""
    low = [min(a, b) - radius - pad for a, b in zip(start, end, strict=True)]
    high = [max(a, b) + radius + pad for a, b in zip(start, end, strict=True)]
    return (low[0], low[1], low[2]), (high[0], high[1], high[2])


def tube_segments(points: Sequence[Sequence[float]], radii: Sequence[float]
                  ) -> list[tuple[Point, Point, Distance]]:
    """A bent tube as one tapered capsule per segment, each with its own box (cheap to evaluate)."""
    segments: list[tuple[Point, Point, Distance]] = []
    for k in range(len(points) - 1):
        a, b, ra, rb = tuple(points[k]), tuple(points[k + 1]), float(radii[k]), float(radii[k + 1])
        low, high = capsule_box(a, b, max(ra, rb))
        segments.append((low, high, partial(capsule, start=a, end=b, radius_start=ra, radius_end=rb)))
    return segments


def paint_tube(canvas: Canvas, label: int, points: Sequence[Sequence[float]], radii: Sequence[float],
               only: Sequence[int] | None = None, keep: Sequence[int] | None = None) -> None:
    """Paint a bent tube (union of tapered capsules)."""
    for low, high, distance in tube_segments(points, radii):
        found = shape_in(canvas, low, high, distance)
        if found is not None:
            canvas.paint(label, found[1] < 0, found[0], only=only, keep=keep)


def paint_bone_parts(canvas: Canvas, parts: Sequence[BonePart], keep: Sequence[int] | None = None) -> None:
    """Paint bones made of overlapping parts with union semantics: first every part's cortical shell, then every
    part's core, so a core is never covered by a neighbouring part's cortex."""
    evaluated = []
    for low, high, distance, cortex, core in parts:
        found = shape_in(canvas, low, high, distance)
        if found is not None:
            evaluated.append((found[0], found[1], cortex, core))
    for block, signed, _, _ in evaluated:
        canvas.paint(T.CORTICAL_BONE, signed < 0, block, keep=keep)
    for block, signed, cortex, core in evaluated:
        canvas.paint(core, signed < -cortex, block, keep=keep)


def tube_bone(points: Sequence[Sequence[float]], radii: Sequence[float], cortex: float,
              core: int = T.CANCELLOUS_BONE) -> list[BonePart]:
    """Bone parts of a bent tube (mandible, rami, vertebral arches)."""
    return [(low, high, distance, cortex, core) for low, high, distance in tube_segments(points, radii)]
