"""Pelvis anatomy painted on a :class:`~synthct.phantom.canvas.Canvas`.

Anatomical coordinates (mm at adult size; z superior, y posterior, x patient-left; femoral heads near z = -55):
trunk and thighs with skin and subcutaneous fat, muscle with fat planes, psoas, bowel with gas above the pelvis,
pelvic fat; lumbar vertebrae L2-L5 with discs and canal, sacrum, iliac wings, acetabula, pubic and ischial rami,
femoral heads, necks, trochanters and shafts (cortical shell, cancellous core, fatty marrow in the shaft);
bladder (wall, urine), rectum (wall, faeces, gas), prostate or uterus, iliac and femoral vessels.
"""

from __future__ import annotations

from functools import partial

import numpy as np

from synthct.phantom import tissues as T
from synthct.phantom.canvas import Canvas
from synthct.phantom.paint import (
    BonePart,
    Point,
    block_noise,
    box,
    paint_bone_parts,
    paint_ellipsoid,
    paint_tube,
    shape_in,
    tube_bone,
)
from synthct.phantom.shapes import Coords, ellipsoid, polyline, smooth_union, superellipse_prism

_SOFT = (T.MUSCLE, T.FAT, T.BOWEL, T.SOFT_TISSUE, T.INTERNAL_AIR, T.FAECES)
_Z_LOW, _Z_HIGH = -260.0, 260.0


def _sacrum_y(z: np.ndarray | float) -> np.ndarray | float:
    """Anterior-posterior position (mm) of the sacrum's mid-surface at height z: concave forward."""
    t = np.clip((65.0 - np.asarray(z)) / 125.0, 0.0, 1.0)
    return 45.0 + 40.0 * t**1.6


def _intersect(*distances: np.ndarray | float) -> np.ndarray:
    result = np.asarray(distances[0])
    for d in distances[1:]:
        result = np.maximum(result, d)
    return result.astype(np.float32, copy=False)


def paint_pelvis(canvas: Canvas, rng: np.random.Generator, thin: float) -> None:
    """Paint a random pelvis (see the module docstring) onto ``canvas``."""
    g = rng.uniform
    habitus = g(0.85, 1.2)
    block = canvas.block((_Z_LOW, 7.0 - 118.0 * habitus**1.3 - 15.0, -160.0 * habitus - 20.0),
                         (_Z_HIGH, 7.0 + 100.0 * habitus + 15.0, 160.0 * habitus + 20.0))
    assert block is not None
    u = canvas.coords(block)

    # Outline: trunk (superelliptic, belly rounder than back, waist above the iliac crest) and thighs.
    waist = 1.0 - 0.08 * np.clip((u[0] - 60.0) / 120.0, 0.0, 1.0)
    rx = 160.0 * habitus * waist
    ry = np.where(u[1] < 7.0, 118.0 * habitus**1.3, 100.0 * habitus)
    trunk = _intersect(superellipse_prism(u[1], u[2], (7.0, 0.0), (ry, rx), 2.4), -(u[0] + 135.0))
    thighs = None
    for side in (-1.0, 1.0):
        thigh = superellipse_prism(u[1], u[2], (5.0, 86.0 * habitus * side), (80.0 * habitus, 74.0 * habitus), 2.0)
        thigh = _intersect(thigh, u[0] + 60.0)
        thighs = thigh if thighs is None else np.minimum(thighs, thigh)
    assert thighs is not None
    body = smooth_union(trunk, thighs, 18.0)
    del trunk, thighs, rx, ry, waist
    depth = -body
    del body
    fat_planes = np.abs(block_noise(canvas, block, 14.0, rng)) < 0.07
    canvas.paint(T.MUSCLE, depth > 0, block)
    canvas.paint(T.FAT, (depth > 0) & fat_planes, block)
    del fat_planes
    fat_t = g(8.0, 22.0) * habitus**2 * (1.0 + 0.3 * block_noise(canvas, block, 40.0, rng))
    fat_t = fat_t * (1.0 + 0.5 * np.clip((u[1] - 20.0) / 80.0, 0.0, 1.0))  # thicker over the buttocks
    canvas.paint(T.FAT, (depth > 0) & (depth < fat_t), block)
    canvas.paint(T.SKIN, (depth > 0) & (depth < 2.0 * thin), block)
    del depth, fat_t

    _paint_viscera_background(canvas, rng, thin)
    _paint_bones(canvas, rng, thin)
    _paint_organs(canvas, rng, thin)


def _paint_viscera_background(canvas: Canvas, rng: np.random.Generator, thin: float) -> None:
    g = rng.uniform
    # Pelvic fat in the lesser pelvis; bowel loops (wall, contents, gas) above it.
    paint_ellipsoid(canvas, T.FAT, (-25.0, -5.0, 0.0), (80.0, 62.0, 60.0), only=(T.MUSCLE,))
    centre, radii = (150.0, -30.0, 0.0), (120.0, 80.0, 120.0)
    found = shape_in(canvas, (25.0, -115.0, -125.0), (275.0, 55.0, 125.0), lambda u: ellipsoid(u, centre, radii))
    if found is not None:
        block, distance = found
        inside = (distance < 0) & canvas.label_in(block, (T.MUSCLE, T.FAT))
        # Loops: the band around the zero sheets of a noise field reads as convoluted tubes; wall outside, contents
        # (gas or faeces) along the middle, mesenteric fat between loops.
        sheet = np.abs(block_noise(canvas, block, 11.0, rng))
        half_width = g(0.3, 0.45)
        canvas.paint(T.FAT, inside, block)
        canvas.paint(T.BOWEL, inside & (sheet < half_width), block)
        lumen = inside & (sheet < half_width - 0.14)
        content = block_noise(canvas, block, 8.0, rng)
        gas_level, faeces_level = g(0.2, 1.2), g(-1.2, -0.3)
        canvas.paint(T.INTERNAL_AIR, lumen & (content > gas_level), block)
        canvas.paint(T.FAECES, lumen & (content < faeces_level), block)
    # Psoas muscles along the spine to the groin.
    for side in (-1.0, 1.0):
        points = [(260.0, 40.0, 32.0 * side), (120.0, 38.0, 45.0 * side), (20.0, 25.0, 62.0 * side),
                  (-50.0, -30.0, 78.0 * side)]
        paint_tube(canvas, T.MUSCLE, points, [14.0, 20.0, 22.0, 17.0], only=(T.FAT, T.BOWEL, T.INTERNAL_AIR, T.FAECES))
    del thin


def _bone_parts(rng: np.random.Generator, thin: float) -> tuple[list[BonePart], list[tuple[Point, float]]]:
    """All bone parts of the pelvis, each with a tight box; and the femoral heads (centre, radius)."""
    g = rng.uniform
    bone = g(0.93, 1.07)
    cortex = 1.5 * thin
    cc = T.CANCELLOUS_BONE
    parts: list[BonePart] = []
    joints: list[tuple[Point, float]] = []
    # Lumbar vertebrae L2-L5: bodies, pedicles/laminae, transverse and spinous processes.
    for zc in (85.0, 122.0, 159.0, 196.0, 233.0):
        body_c, body_r = (zc, 38.0, 0.0), (14.0, 17.0, 23.0 * bone)
        parts.append((*box(body_c, body_r), partial(ellipsoid, centre=body_c, radii=body_r), cortex, cc))
        for side in (-1.0, 1.0):
            parts += tube_bone([(zc, 50.0, 15.0 * side), (zc, 70.0, 7.0 * side)], [5.0, 5.0], cortex)
            parts += tube_bone([(zc, 55.0, 10.0 * side), (zc, 55.0, 48.0 * side)], [4.5, 4.0], cortex)
        parts += tube_bone([(zc, 68.0, 0.0), (zc - 10.0, 98.0, 0.0)], [5.5, 5.0], cortex)

    # Sacrum: a curved wedge, wide at the top (alae), thin at the tip.
    def sacrum(u: Coords) -> np.ndarray:
        t = np.clip((u[0] + 60.0) / 125.0, 0.0, 1.0)
        half_width = (15.0 + 42.0 * t**0.8) * bone
        half_thickness = 8.0 + 14.0 * t
        section = superellipse_prism(u[1] - _sacrum_y(u[0]), u[2], (0.0, 0.0), (half_thickness, half_width), 2.2)
        return _intersect(section, u[0] - 68.0, -62.0 - u[0])
    parts.append(((-70.0, 20.0, -70.0), (75.0, 115.0, 70.0), sacrum, cortex, cc))

    for side in (-1.0, 1.0):
        def wing(u: Coords, side: float = side) -> np.ndarray:
            bowl = ellipsoid(u, (25.0, 0.0, 0.0), (75.0, 72.0, 120.0 * bone))
            crest = 75.0 + 6.0 * np.cos(u[1] / 25.0)
            plate = np.abs(bowl) - (3.0 + 2.5 * np.clip((u[0] - 40.0) / 35.0, 0.0, 1.0)) * thin
            return _intersect(plate, 45.0 - side * u[2], -35.0 - u[0], u[0] - crest, -58.0 - u[1], u[1] - 62.0)
        x_low, x_high = (40.0, 135.0 * bone) if side > 0 else (-135.0 * bone, -40.0)
        parts.append(((-40.0, -62.0, x_low), (85.0, 66.0, x_high), wing, cortex, cc))
        parts += tube_bone([(30.0, 52.0, 52.0 * side), (-42.0, -5.0, 82.0 * side * bone)], [13.0, 13.0], cortex)
        parts += tube_bone([(40.0, 56.0, 48.0 * side), (40.0, 50.0, 84.0 * side)], [12.0, 12.0], cortex)
        head_c = (-55.0, -5.0, 88.0 * bone * side)
        head_r = g(22.0, 26.0) * bone
        cup_r = (head_r + 9.0,) * 3
        joints.append((head_c, head_r))

        def cup(u: Coords, side: float = side, head_c: Point = head_c, cup_r: tuple = cup_r) -> np.ndarray:
            return _intersect(ellipsoid(u, head_c, cup_r), side * (u[2] - head_c[2]) - 8.0)
        parts.append((*box(head_c, cup_r), cup, cortex, cc))
        # Pubic rami (meeting at the symphysis), ischium and its tuberosity.
        parts += tube_bone([(-50.0, -10.0, 72.0 * side), (-80.0, -58.0, 6.0 * side), (-100.0, -52.0, 6.0 * side),
                            (-122.0, -10.0, 45.0 * side)], [9.0, 9.5, 8.0, 7.0], cortex)
        parts += tube_bone([(-60.0, 5.0, 75.0 * side), (-122.0, 12.0, 53.0 * side)], [13.0, 15.0], cortex)
        # Femur: head, neck, greater and lesser trochanters, shaft.
        femur_cortex = cortex * 1.3
        parts.append((*box(head_c, (head_r,) * 3), partial(ellipsoid, centre=head_c, radii=(head_r,) * 3),
                      femur_cortex, cc))
        parts += tube_bone([head_c, (-85.0, 5.0, 120.0 * side * bone)], [15.0, 15.0], femur_cortex)
        for centre, radii in (((-82.0, 10.0, 128.0 * side * bone), (20.0, 18.0, 14.0)),
                              ((-112.0, 15.0, 105.0 * side * bone), (8.0, 8.0, 8.0))):
            parts.append((*box(centre, radii), partial(ellipsoid, centre=centre, radii=radii), femur_cortex, cc))
        parts += tube_bone([(-92.0, 5.0, 118.0 * side * bone), (-300.0, 0.0, 100.0 * side * bone)], [14.0, 14.0],
                           femur_cortex)
    return parts, joints


def _paint_bones(canvas: Canvas, rng: np.random.Generator, thin: float) -> None:
    parts, joints = _bone_parts(rng, thin)
    paint_bone_parts(canvas, parts)
    # Hip joint spaces (cartilage) between femoral head and acetabulum.
    for head_c, head_r in joints:
        found = shape_in(canvas, *box(head_c, (head_r + 4.0 * thin,) * 3),
                         partial(ellipsoid, centre=head_c, radii=(head_r,) * 3))
        if found is not None:
            canvas.paint(T.SOFT_TISSUE, (found[1] >= 0) & (found[1] < 2.0 * thin), found[0],
                         only=(T.CORTICAL_BONE, T.CANCELLOUS_BONE))
    # Symphysis (fibrocartilage) at the midline.
    found = shape_in(canvas, (-110.0, -72.0, -3.0), (-70.0, -40.0, 3.0), lambda u: np.abs(u[2]) - 1.2 * thin)
    if found is not None:
        canvas.paint(T.SOFT_TISSUE, found[1] < 0, found[0], only=(T.CORTICAL_BONE, T.CANCELLOUS_BONE))
    # Femoral shafts: fatty marrow canal; discs; spinal canal.
    for side in (-1.0, 1.0):
        paint_tube(canvas, T.MARROW, [(-115.0, 5.0, 116.0 * side), (-300.0, 0.0, 100.0 * side)], [8.0, 8.0],
                   only=(T.CANCELLOUS_BONE, T.CORTICAL_BONE))
    for zc in (103.5, 140.5, 177.5, 214.5):
        paint_ellipsoid(canvas, T.SOFT_TISSUE, (zc, 38.0, 0.0), (5.0, 16.0, 22.0), only=(T.MUSCLE, T.FAT))
    paint_ellipsoid(canvas, T.SOFT_TISSUE, (68.0, 42.0, 0.0), (5.0, 17.0, 24.0), only=(T.MUSCLE, T.FAT))
    paint_tube(canvas, T.CSF, [(0.0, 62.0, 0.0), (300.0, 58.0, 0.0)], [9.0, 9.0])


def _paint_organs(canvas: Canvas, rng: np.random.Generator, thin: float) -> None:
    g = rng.uniform
    wall = 2.5 * thin
    # Vessels: external iliac / femoral artery and vein.
    for side in (-1.0, 1.0):
        for offset, radius in ((0.0, 4.5), (9.0, 6.5)):
            points = [(230.0, 30.0, (12.0 + offset) * side), (90.0, 25.0, (22.0 + offset) * side),
                      (20.0, 5.0, (45.0 + offset) * side), (-55.0, -45.0, (82.0 + offset) * side),
                      (-300.0, -35.0, (85.0 + offset) * side)]
            paint_tube(canvas, T.BLOOD, points, [radius] * len(points), only=(T.MUSCLE, T.FAT, T.BOWEL))
    # Prostate (male) or uterus (female).
    if g() < 0.5:
        paint_ellipsoid(canvas, T.SOFT_TISSUE, (-97.0, -28.0, 0.0), (16.0 * g(0.8, 1.3), 14.0, 19.0 * g(0.8, 1.3)),
                        only=_SOFT)
    else:
        paint_ellipsoid(canvas, T.SOFT_TISSUE, (-30.0, 0.0, 0.0), (32.0, 20.0, 26.0) , only=_SOFT)
    # Bladder: wall and urine, filling varies.
    radii = (g(18.0, 45.0), g(20.0, 40.0), g(26.0, 50.0))
    centre = (-72.0 + radii[0], -45.0 + g(-5, 5), g(-5, 5))
    paint_ellipsoid(canvas, T.URINE, centre, radii, only=_SOFT, shell=(T.SOFT_TISSUE, wall))
    # Rectum along the sacrum: wall, faeces with gas; anal canal below.
    radius = g(11.0, 22.0)
    zs = [55.0, 20.0, -20.0, -60.0, -100.0]
    points = [(z, float(_sacrum_y(z)) - 15.0 - radius, g(-6, 6)) for z in zs] + [(-128.0, 12.0, 0.0)]
    radii_r = [radius * 0.9, radius, radius, radius * 0.9, radius * 0.6, 5.0]
    found = shape_in(canvas, (-140.0, -30.0, -45.0), (80.0, 100.0, 45.0), lambda u: polyline(u, points, radii_r))
    if found is not None:
        block, distance = found
        canvas.paint(T.BOWEL, distance < wall, block, only=_SOFT)
        lumen = (distance < 0) & canvas.label_in(block, (T.BOWEL,))
        canvas.paint(T.FAECES, lumen, block)
        gas = block_noise(canvas, block, 7.0, rng)
        canvas.paint(T.INTERNAL_AIR, lumen & (gas > g(0.0, 1.2)), block)
        canvas.paint(T.SOFT_TISSUE, (distance < wall) & (canvas.coords(block)[0] < -105.0) & lumen, block)
