"""Trunk anatomy (thorax and abdomen, SynthRAD 2025 regions TH and AB) painted on a
:class:`~synthct.phantom.canvas.Canvas`.

One anatomy serves both regions; the region only chooses which part of it the field of view holds. Anatomical
coordinates (mm at adult size; z superior, y posterior, x patient-left; z = 0 near the top of the right
diaphragm dome, lung apices near z = +225, the fifth lumbar vertebra near z = -245):

- outline with skin, subcutaneous fat (thickness from the habitus), muscle with fat planes (chest and abdominal
  wall, paraspinal muscles); the thoracic and abdominal cavities (mediastinal / intra-abdominal fat) split by the
  diaphragm domes (right higher, deep posterior recesses);
- spine T1-L5 (vertebral bodies with cortex and cancellous core, discs, pedicles, laminae, transverse and spinous
  processes, canal with CSF and cord), twelve pairs of ribs sloping down to the front with costal cartilage,
  sternum;
- lungs with a branching vessel tree and lobar bronchi, trachea with cartilage rings, main bronchi, oesophagus,
  heart (myocardium, blood-filled chambers) with the aorta (ascending, arch, descending, abdominal), pulmonary
  arteries, venae cavae;
- liver with vessels, gallbladder, stomach (wall, fluid, gas anteriorly: the patient is supine), spleen, kidneys
  with renal sinus fat, pancreas, psoas muscles, colon (wall, faeces, gas) and small-bowel loops with gas;
- a couch (carbon-fibre shells around a foam core) below the back, separated from the skin by an air gap, as on a
  planning CT; the MR shows no couch.

``thin`` multiplies thin-layer thicknesses (skin, cortex, rib radius) so that they stay a few voxels thick at a
reduced scale.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import numpy as np

from synthct.phantom import tissues as T
from synthct.phantom.canvas import Canvas
from synthct.phantom.paint import (
    BonePart,
    block_noise,
    box,
    paint_bone_parts,
    paint_ellipsoid,
    paint_tube,
    shape_in,
    tube_bone,
)
from synthct.phantom.shapes import Coords, Vec, capsule, ellipsoid, polyline, superellipse_prism

_Z_LOW, _Z_HIGH = -330.0, 280.0
_BACK_Y = 118.0
"""Posterior skin surface at the midline (mm)."""
_CAVITY_FRONT, _CAVITY_BACK, _CAVITY_X = 75.0, 85.0, 128.0
"""Thoracic/abdominal cavity: distance (mm) of its wall in front of and behind y = 0, and its half-width."""
_FAT_LIKE = (T.FAT,)


def _spine_y(z: np.ndarray | float) -> np.ndarray | float:
    """Antero-posterior centre (mm) of the vertebral bodies at height z: lordosis brings the lumbar spine forward."""
    return 40.0 - 15.0 * np.clip((-60.0 - np.asarray(z)) / 150.0, 0.0, 1.0)


def _taper(z: np.ndarray | float) -> np.ndarray | float:
    """Width factor of the rib cage and cavity towards the apex (1 below z = 110 mm, 0 at z = 235 mm)."""
    t = np.clip((np.asarray(z) - 110.0) / 125.0, 0.0, 1.0)
    return np.sqrt(np.clip(1.0 - t * t, 0.0, 1.0))


class _Trunk:
    """Per-case random shape parameters of the trunk and its dome/cavity functions (anatomical mm)."""

    def __init__(self, rng: np.random.Generator, thin: float) -> None:
        g = rng.uniform
        self.thin = thin
        self.habitus = g(0.85, 1.2)
        self.dome_right = g(-8.0, 10.0)
        self.dome_left = self.dome_right - g(8.0, 18.0)
        self.diaphragm_t = 4.0 * thin**0.5
        self.belly = 105.0 * self.habitus**0.9

    def dome(self, uy: np.ndarray, ux: np.ndarray) -> np.ndarray:
        """Height (mm) of the diaphragm's upper surface above (y, x): two domes, deep posterior recesses."""
        top = self.dome_left + (self.dome_right - self.dome_left) / (1.0 + np.exp(np.clip(ux / 20.0, -30, 30)))
        lateral = ((np.abs(ux) - 70.0) / 100.0) ** 2
        back = np.clip((uy - 20.0) / 80.0, 0.0, 1.0) ** 2
        return (top - 40.0 * lateral - 30.0 * ((uy + 5.0) / 100.0) ** 2 - 30.0 * back).astype(np.float32)

    def cavity(self, u: Coords) -> np.ndarray:
        """Signed distance (mm) to the cavity wall (inner surface of ribs, sternum and abdominal wall)."""
        taper = _taper(u[0])
        abdomen = np.clip(-u[0] / 80.0, 0.0, 1.0)
        front = (_CAVITY_FRONT + (self.belly - 20.0 - _CAVITY_FRONT) * abdomen) * taper + 1.0
        back = _CAVITY_BACK * taper + 1.0
        half_x = (_CAVITY_X + 5.0 * abdomen) * taper + 1.0
        ry = np.where(u[1] < 0.0, front, back)
        inside = superellipse_prism(u[1], u[2], (0.0, 0.0), (ry, half_x), 2.3)
        return np.maximum(inside, u[0] - 235.0).astype(np.float32)


def paint_trunk(canvas: Canvas, rng: np.random.Generator, thin: float) -> None:
    """Paint a random trunk (see the module docstring) onto ``canvas``."""
    trunk = _Trunk(rng, thin)
    _paint_wall(canvas, rng, trunk)
    _paint_spine(canvas, rng, trunk)
    _paint_mediastinum(canvas, rng, trunk)
    _paint_lungs(canvas, rng, trunk)
    _paint_abdomen(canvas, rng, trunk)
    _paint_ribs(canvas, rng, trunk)
    _paint_table(canvas, rng, trunk)


def _paint_wall(canvas: Canvas, rng: np.random.Generator, trunk: _Trunk) -> None:
    g = rng.uniform
    block = canvas.block((_Z_LOW, -trunk.belly - 30.0, -200.0), (_Z_HIGH, _BACK_Y + 10.0, 200.0))
    assert block is not None
    u = canvas.coords(block)
    abdomen = np.clip(-u[0] / 80.0, 0.0, 1.0)
    front = 112.0 + (trunk.belly - 112.0) * abdomen
    half_x = 165.0 * (1.0 - 0.04 * abdomen) * trunk.habitus**0.3
    body = superellipse_prism(u[1], u[2], (0.0, 0.0), (np.where(u[1] < 0.0, front, _BACK_Y), half_x), 2.4)
    depth = -body
    del body, front, half_x
    fat_planes = np.abs(block_noise(canvas, block, 14.0, rng)) < 0.07
    canvas.paint(T.MUSCLE, depth > 0, block)
    canvas.paint(T.FAT, (depth > 0) & fat_planes, block)
    del fat_planes
    fat_t = g(7.0, 18.0) * trunk.habitus**2 * (1.0 + 0.3 * block_noise(canvas, block, 40.0, rng))
    fat_t = fat_t * (1.0 + 0.6 * abdomen * (u[1] < 0))  # thicker over the belly
    canvas.paint(T.FAT, (depth > 0) & (depth < fat_t), block)
    canvas.paint(T.SKIN, (depth > 0) & (depth < 2.0 * trunk.thin), block)
    del depth, fat_t
    cavity = trunk.cavity(u) < 0
    dome = trunk.dome(u[1], u[2])
    canvas.paint(T.FAT, cavity, block)
    band = (u[0] <= dome) & (u[0] > dome - trunk.diaphragm_t)
    canvas.paint(T.MUSCLE, cavity & band, block)


def _paint_spine(canvas: Canvas, rng: np.random.Generator, trunk: _Trunk) -> None:
    g = rng.uniform
    thin = trunk.thin
    cortex = 1.5 * thin
    cc = T.CANCELLOUS_BONE
    size = g(0.92, 1.08)
    parts: list[BonePart] = []
    centres = [215.0 - 25.0 * k for k in range(12)] + [-98.0 - 37.0 * k for k in range(5)]
    discs = []
    for index, zc in enumerate(centres):
        lumbar = index >= 12
        radii = ((14.0, 16.0, 23.0) if lumbar else (10.5, 13.0 + 0.3 * index, 14.0 + 0.6 * index))
        radii = (radii[0], radii[1] * size, radii[2] * size)
        yc = float(_spine_y(zc))
        centre = (zc, yc, 0.0)
        parts.append((*box(centre, radii), partial(ellipsoid, centre=centre, radii=radii), cortex, cc))
        back = yc + radii[1]
        for side in (-1.0, 1.0):
            parts += tube_bone([(zc, back - 4.0, 10.0 * side), (zc, back + 20.0, 9.0 * side)], [4.5, 4.0], cortex)
            reach = 45.0 if lumbar else 32.0
            parts += tube_bone([(zc, back + 14.0, 9.0 * side), (zc + 2.0, back + (10.0 if lumbar else 22.0),
                                                               reach * side)], [4.5, 4.0], cortex)
        tip = (zc - (10.0 if lumbar else 22.0), back + (48.0 if lumbar else 52.0), 0.0)
        parts += tube_bone([(zc, back + 18.0, 0.0), tip], [5.0, 4.0], cortex)
        if index + 1 < len(centres):
            discs.append(((zc + centres[index + 1]) / 2.0, (yc + float(_spine_y(centres[index + 1]))) / 2.0,
                          radii[1] - 1.0, radii[2] - 1.0))
    paint_bone_parts(canvas, parts)
    for zc, yc, ry, rx in discs:
        paint_ellipsoid(canvas, T.SOFT_TISSUE, (zc, yc, 0.0), (4.0 * thin**0.5, ry, rx), only=(T.MUSCLE, T.FAT))
    points = [(z, float(_spine_y(z)) + 30.0, 0.0) for z in (300.0, 100.0, -100.0, -330.0)]
    paint_tube(canvas, T.CSF, points, [8.0] * 4)
    paint_tube(canvas, T.SOFT_TISSUE, points, [4.5] * 4)


def _paint_mediastinum(canvas: Canvas, rng: np.random.Generator, trunk: _Trunk) -> None:
    g = rng.uniform
    thin = trunk.thin
    soft = (T.FAT, T.MUSCLE, T.HEART)
    heart = g(0.88, 1.12)
    centre, radii = (32.0, -22.0, 18.0), (50.0 * heart, 45.0 * heart, 60.0 * heart)
    paint_ellipsoid(canvas, T.HEART, centre, radii, only=(T.FAT,))
    for c, r in (((30.0, -15.0, 40.0), (28.0, 22.0, 22.0)), ((28.0, -45.0, 0.0), (25.0, 14.0, 26.0)),
                 ((52.0, 5.0, 10.0), (20.0, 18.0, 35.0))):
        paint_ellipsoid(canvas, T.BLOOD, (c[0], c[1] * heart, c[2] * heart), (r[0] * heart, r[1] * heart,
                                                                                r[2] * heart), only=(T.HEART,))
    aorta = [(40.0, -15.0, 5.0), (100.0, -10.0, 5.0), (128.0, 5.0, 12.0), (115.0, 25.0, 24.0), (80.0, 25.0, 28.0),
             (-20.0, 22.0, 25.0), (-100.0, 5.0, 15.0), (-200.0, -8.0, 10.0), (-330.0, -12.0, 5.0)]
    paint_tube(canvas, T.BLOOD, aorta, [14.0, 14.0, 12.5, 12.0, 12.0, 11.0, 11.0, 10.0, 9.0], only=soft)
    paint_tube(canvas, T.BLOOD, [(5.0, -10.0, -25.0), (-30.0, 15.0, -28.0), (-120.0, 10.0, -25.0),
                                 (-330.0, -5.0, -22.0)], [11.0, 11.0, 11.0, 10.0], only=soft)
    paint_tube(canvas, T.BLOOD, [(30.0, -25.0, -30.0), (160.0, -20.0, -35.0)], [9.0, 9.0], only=soft)
    paint_tube(canvas, T.BLOOD, [(45.0, -50.0, 10.0), (75.0, -30.0, 15.0), (75.0, 0.0, 55.0)], [12.0, 11.0, 9.0],
               only=soft)
    paint_tube(canvas, T.BLOOD, [(75.0, -30.0, 15.0), (70.0, -5.0, -55.0)], [11.0, 9.0], only=soft)
    # Trachea (cartilage rings) to the carina, main bronchi; oesophagus behind it, into the stomach.
    trachea = [(290.0, -5.0, 0.0), (200.0, -3.0, 0.0), (95.0, 10.0, 0.0)]
    found = shape_in(canvas, (85.0, -25.0, -22.0), (300.0, 30.0, 22.0), lambda u: polyline(u, trachea, [9.0] * 3))
    if found is not None:
        block, distance = found
        rings = np.cos(canvas.coords(block)[0] * np.float32(2.0 * np.pi / 8.0)) > -0.3
        wall = 2.0 * thin
        canvas.paint(T.CARTILAGE, (distance < wall) & rings, block, only=(T.FAT, T.MUSCLE))
        canvas.paint(T.SOFT_TISSUE, (distance < wall) & ~rings, block, only=(T.FAT, T.MUSCLE))
        canvas.paint(T.INTERNAL_AIR, distance < 0, block)
    for end, radius in (((70.0, 10.0, -45.0), 7.0), ((65.0, 15.0, 50.0), 6.5)):
        found = shape_in(canvas, *box((82.0, 12.0, end[2] / 2.0), (20.0, 12.0, 35.0)),
                         partial(capsule, start=(95.0, 10.0, 0.0), end=end, radius_start=radius))
        if found is not None:
            canvas.paint(T.CARTILAGE, found[1] < 1.5 * thin, found[0], only=(T.FAT, T.MUSCLE, T.BLOOD))
            canvas.paint(T.INTERNAL_AIR, found[1] < 0, found[0])
    oesophagus = [(290.0, 14.0, 4.0), (95.0, 26.0, 10.0), (0.0, 22.0, 18.0), (-35.0, -5.0, 45.0)]
    paint_tube(canvas, T.SOFT_TISSUE, oesophagus, [7.5, 7.5, 7.5, 8.0], only=(T.FAT, T.MUSCLE))
    if g() < 0.5:
        paint_tube(canvas, T.INTERNAL_AIR, oesophagus[:2], [2.5, 2.5], only=(T.SOFT_TISSUE,))


def _vessel_tree(rng: np.random.Generator, start: Vec, direction: Vec, length: float,
                 radius: float, depth: int, out: list[tuple[tuple[float, ...], tuple[float, ...], float, int]],
                 level: int = 0) -> None:
    """Segments (start, end, radius, level) of a randomly branching tree (each branch splits in two)."""
    d = np.asarray(direction, dtype=float)
    d /= np.linalg.norm(d)
    end = tuple(float(v) for v in np.asarray(start) + d * length)
    out.append((tuple(float(v) for v in start), end, radius, level))
    if level + 1 >= depth:
        return
    for _ in range(2):
        turn = rng.normal(0.0, 0.55, 3)
        _vessel_tree(rng, end, d + turn, length * 0.78, radius * 0.7, depth, out, level + 1)


def _paint_lungs(canvas: Canvas, rng: np.random.Generator, trunk: _Trunk) -> None:
    g = rng.uniform
    thin = trunk.thin
    found = shape_in(canvas, (-90.0, -_CAVITY_FRONT - 5.0, -_CAVITY_X - 5.0), (240.0, _CAVITY_BACK + 5.0,
                                                                                  _CAVITY_X + 5.0), trunk.cavity)
    if found is None:
        return
    block, distance = found
    u = canvas.coords(block)
    above = u[0] > trunk.dome(u[1], u[2]) + 2.0
    column = np.minimum(capsule(u, (0.0, 5.0, 5.0), (260.0, 12.0, 0.0), 30.0),
                        capsule(u, (60.0, -50.0, 5.0), (200.0, -40.0, 0.0), 22.0))  # anterior mediastinum
    heart = ellipsoid(u, (32.0, -22.0, 18.0), (55.0, 50.0, 65.0))
    lung = (distance < -3.0 * thin**0.5) & above & (column > 0) & (heart > 0)
    del column, heart, above, distance
    canvas.paint(T.LUNG, lung, block, only=_FAT_LIKE)
    del lung
    for side in (-1.0, 1.0):
        hilum = (70.0, 5.0, 50.0 * side)
        segments: list[tuple[tuple[float, ...], tuple[float, ...], float, int]] = []
        for direction in ((1.0, 0.1, 0.35 * side), (-0.3, -0.6, 0.8 * side), (-0.9, 0.5, 0.4 * side),
                          (-0.6, 0.1, 0.9 * side)):
            _vessel_tree(rng, hilum, direction, g(40.0, 55.0), 6.0, 5, segments)
        for a, b, radius, level in segments:
            found = shape_in(canvas, *_segment_box(a, b, radius + 6.0),
                             partial(capsule, start=a, end=b, radius_start=radius, radius_end=radius * 0.85))
            if found is None:
                continue
            canvas.paint(T.BLOOD, found[1] < 0, found[0], only=(T.LUNG,))
            if level <= 1:  # lobar and segmental bronchi beside the arteries
                offset = np.array([0.0, radius + 3.0, 0.0])
                a2, b2 = tuple(np.asarray(a) + offset), tuple(np.asarray(b) + offset)
                bronchus = capsule(canvas.coords(found[0]), a2, b2, 0.7 * radius)
                canvas.paint(T.SOFT_TISSUE, bronchus < 1.2 * thin, found[0], only=(T.LUNG,))
                canvas.paint(T.INTERNAL_AIR, bronchus < 0, found[0], only=(T.SOFT_TISSUE, T.LUNG))


def _segment_box(a: Sequence[float], b: Sequence[float], pad: float) -> tuple[tuple[float, ...], tuple[float, ...]]:
    low = tuple(min(p, q) - pad for p, q in zip(a, b, strict=True))
    high = tuple(max(p, q) + pad for p, q in zip(a, b, strict=True))
    return low, high


def _below(trunk: _Trunk, u: Coords, margin: float = 1.0) -> np.ndarray:
    """Voxels of the abdominal cavity: below the diaphragm (and its muscle) and inside the cavity wall."""
    return (u[0] < trunk.dome(u[1], u[2]) - trunk.diaphragm_t - margin) & (trunk.cavity(u) < 0)


def _organ(canvas: Canvas, trunk: _Trunk, label: int, centres: Sequence[Sequence[float]],
           radii: Sequence[Sequence[float]], only: Sequence[int] = _FAT_LIKE) -> None:
    """Paint the union of ellipsoids as one organ, below the diaphragm only."""
    lows = [tuple(c[k] - r[k] - 3.0 for k in range(3)) for c, r in zip(centres, radii, strict=True)]
    highs = [tuple(c[k] + r[k] + 3.0 for k in range(3)) for c, r in zip(centres, radii, strict=True)]
    low = tuple(min(v[k] for v in lows) for k in range(3))
    high = tuple(max(v[k] for v in highs) for k in range(3))
    block = canvas.block(low, high)
    if block is None:
        return
    u = canvas.coords(block)
    distance = np.minimum.reduce([ellipsoid(u, c, r) for c, r in zip(centres, radii, strict=True)])
    canvas.paint(label, (distance < 0) & _below(trunk, u), block, only=only)


def _paint_abdomen(canvas: Canvas, rng: np.random.Generator, trunk: _Trunk) -> None:
    g = rng.uniform
    thin = trunk.thin
    s = g(0.9, 1.12)
    _organ(canvas, trunk, T.LIVER, [(-60.0, 0.0, -50.0), (-45.0, -45.0, 35.0)],
           [(75.0 * s, 85.0, 95.0 * s), (35.0 * s, 40.0, 55.0 * s)])
    for points in ([(-130.0, 15.0, -10.0), (-90.0, 0.0, -55.0), (-40.0, -20.0, -95.0)],
                   [(-20.0, 5.0, -30.0), (-50.0, -30.0, -70.0), (-80.0, -55.0, -100.0)],
                   [(-20.0, 0.0, -25.0), (-40.0, -40.0, 10.0), (-55.0, -55.0, 45.0)]):
        paint_tube(canvas, T.BLOOD, points, [6.0, 4.5, 3.0], only=(T.LIVER,))
    paint_ellipsoid(canvas, T.FLUID, (-105.0, -50.0, -55.0), (28.0 * g(0.6, 1.1), 13.0, 14.0),
                    only=(T.LIVER, T.FAT), shell=(T.SOFT_TISSUE, 1.5 * thin))
    # Stomach: wall, fluid, gas in front (non-dependent when supine).
    centre, radii = (-50.0, -25.0, 65.0), (50.0 * g(0.8, 1.15), 38.0, 42.0 * g(0.85, 1.15))
    found = shape_in(canvas, *box(centre, radii), lambda u: ellipsoid(u, centre, radii))
    if found is not None:
        block, distance = found
        u = canvas.coords(block)
        below = _below(trunk, u)
        canvas.paint(T.BOWEL, (distance < 0) & below, block, only=_FAT_LIKE)
        lumen = (distance < -3.0 * thin) & canvas.label_in(block, (T.BOWEL,))
        canvas.paint(T.FLUID, lumen, block)
        level = centre[1] - radii[1] + 2.0 * radii[1] * g(0.15, 0.5)
        canvas.paint(T.INTERNAL_AIR, lumen & (u[1] < level), block)
    _organ(canvas, trunk, T.SPLEEN, [(-40.0, 60.0, 105.0)], [(45.0 * g(0.85, 1.15), 32.0, 20.0)])
    for side, z in ((-1.0, -130.0 + g(-8, 8)), (1.0, -115.0 + g(-8, 8))):
        kidney_c = (z, 52.0, 64.0 * side)
        _organ(canvas, trunk, T.KIDNEY, [kidney_c], [(48.0 * g(0.9, 1.1), 24.0, 27.0)])
        paint_ellipsoid(canvas, T.FAT, (z, 45.0, 50.0 * side), (22.0, 10.0, 9.0), only=(T.KIDNEY,))
    paint_tube(canvas, T.SOFT_TISSUE, [(-110.0, -10.0, -20.0), (-100.0, 0.0, 20.0), (-92.0, 20.0, 60.0),
                                       (-88.0, 40.0, 85.0)], [14.0, 11.0, 10.0, 8.0], only=_FAT_LIKE)
    for side in (-1.0, 1.0):
        paint_tube(canvas, T.MUSCLE, [(-90.0, 42.0, 28.0 * side), (-180.0, 35.0, 45.0 * side),
                                      (-330.0, 15.0, 68.0 * side)], [8.0, 17.0, 23.0], only=_FAT_LIKE)
    # Colon: ascending, transverse, descending; wall, faeces, gas pockets.
    colon = [(-330.0, -10.0, -100.0), (-140.0, -15.0, -100.0), (-130.0, -45.0, -85.0), (-135.0, -62.0, -40.0),
             (-140.0, -66.0, 10.0), (-125.0, -58.0, 60.0), (-110.0, -20.0, 100.0), (-140.0, 20.0, 108.0),
             (-330.0, 15.0, 100.0)]
    radius = g(17.0, 24.0)
    found = shape_in(canvas, (-340.0, -95.0, -135.0), (-80.0, 50.0, 135.0),
                     lambda u: polyline(u, colon, [radius] * len(colon)))
    if found is not None:
        block, distance = found
        canvas.paint(T.BOWEL, (distance < 0) & _below(trunk, canvas.coords(block)), block, only=_FAT_LIKE)
        lumen = (distance < -3.0 * thin) & canvas.label_in(block, (T.BOWEL,))
        canvas.paint(T.FAECES, lumen, block)
        gas = block_noise(canvas, block, 9.0, rng)
        canvas.paint(T.INTERNAL_AIR, lumen & (gas > g(-0.2, 0.8)), block)
    # Small-bowel loops (the band around the zero sheets of a noise field) with gas and fluid.
    centre, radii = (-225.0, -30.0, 0.0), (95.0, 60.0, 95.0)
    found = shape_in(canvas, *box(centre, radii), lambda u: ellipsoid(u, centre, radii))
    if found is not None:
        block, distance = found
        inside = (distance < 0) & canvas.label_in(block, _FAT_LIKE) & _below(trunk, canvas.coords(block))
        sheet = np.abs(block_noise(canvas, block, 11.0, rng))
        half_width = g(0.3, 0.45)
        canvas.paint(T.BOWEL, inside & (sheet < half_width), block)
        lumen = inside & (sheet < half_width - 0.14)
        content = block_noise(canvas, block, 8.0, rng)
        canvas.paint(T.INTERNAL_AIR, lumen & (content > g(0.3, 1.2)), block)
        canvas.paint(T.FLUID, lumen & (content < g(-1.2, -0.4)), block)


def _paint_ribs(canvas: Canvas, rng: np.random.Generator, trunk: _Trunk) -> None:
    g = rng.uniform
    thin = trunk.thin
    cortex = 1.5 * thin
    radius = 5.0 * thin**0.6
    parts: list[BonePart] = []
    cartilage: list[tuple[list[tuple[float, float, float]], float]] = []
    slope = g(0.85, 1.15)
    ends = [160.0, 165.0, 165.0, 165.0, 165.0, 165.0, 160.0, 150.0, 140.0, 130.0, 110.0, 90.0]
    for k in range(12):
        z0 = 200.0 - 26.0 * k
        drop = (40.0 + 3.0 * k) * slope
        for side in (-1.0, 1.0):
            points = []
            for phi in np.linspace(25.0, ends[k], 8):
                t = (phi - 25.0) / 140.0
                z = z0 - drop * t**1.3
                taper = float(_taper(z))
                y = (_CAVITY_BACK + 8.0) * taper * np.cos(np.radians(phi)) if phi < 90.0 else \
                    (_CAVITY_FRONT + 8.0 + 15.0 * np.clip(-z / 80.0, 0.0, 1.0)) * taper * np.cos(np.radians(phi))
                x = (_CAVITY_X + 8.0) * max(taper, 0.25) * np.sin(np.radians(phi)) * side
                points.append((z, float(y), float(x)))
            head = (z0 + 3.0, float(_spine_y(z0)) + 10.0, 18.0 * side)
            parts += tube_bone([head, *points], [radius] * (len(points) + 1), cortex)
            if k < 10:
                target = (points[-1][0] - 12.0, -_CAVITY_FRONT - 8.0, 20.0 * side) if k < 7 else \
                    (points[-1][0] + 20.0, points[-1][1] + 5.0, points[-1][2] * 0.8)
                cartilage.append(([points[-1], target], radius * 0.9))
    paint_bone_parts(canvas, parts, keep=(T.LUNG,))
    for points, r in cartilage:
        paint_tube(canvas, T.CARTILAGE, points, [r, r], only=(T.MUSCLE, T.FAT, T.SKIN))
    sternum: list[BonePart] = []
    for centre, radii in (((175.0, -78.0, 0.0), (22.0, 7.0, 26.0)), ((95.0, -86.0, 0.0), (58.0, 7.0, 16.0)),
                          ((30.0, -86.0, 0.0), (12.0, 5.0, 9.0))):
        radii = (radii[0], max(radii[1], 3.0 * thin), radii[2])
        sternum.append((*box(centre, radii), partial(ellipsoid, centre=centre, radii=radii), cortex,
                        T.CANCELLOUS_BONE))
    paint_bone_parts(canvas, sternum, keep=(T.LUNG, T.HEART, T.BLOOD))


def _paint_table(canvas: Canvas, rng: np.random.Generator, trunk: _Trunk) -> None:
    """Couch below the back: a flat carbon-fibre sandwich (shells, foam core) 40 mm thick, over air only. The air
    gap under the back is wider than the body mask's dilation (4 mm) plus 1.5 voxels, so the mask never holds it."""
    g = rng.uniform
    spacing_y = float(canvas.spacing_mm[1] / canvas.scale[1])
    gap = max(g(3.0, 8.0), (4.0 + 1.5 * float(canvas.spacing_mm[1])) / float(canvas.scale[1]))
    top = _BACK_Y + gap
    thickness = max(40.0, 10.0 * spacing_y)
    shell = max(2.0 * trunk.thin, 1.2 * spacing_y)
    block = canvas.block((_Z_LOW, top, -230.0), (_Z_HIGH, top + thickness, 230.0))
    if block is None:
        return
    u = canvas.coords(block)
    slab = (u[1] >= top) & (u[1] <= top + thickness) & (np.abs(u[2]) < 230.0)
    canvas.paint(T.TABLE_SHELL, slab, block, only=(T.BACKGROUND,))
    core = (u[1] >= top + shell) & (u[1] <= top + thickness - shell) & (np.abs(u[2]) < 230.0 - shell)
    canvas.paint(T.TABLE_FOAM, core, block, only=(T.TABLE_SHELL,))
