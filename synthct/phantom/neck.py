"""Head-and-neck anatomy (SynthRAD 2025 region HN) painted on a :class:`~synthct.phantom.canvas.Canvas`.

The brain phantom's head (:func:`synthct.phantom.brain.paint_head`: skull, brain, face, sinuses, mandible, teeth,
tongue, pharynx, upper cervical spine) with its outline extended down by a longer neck and the top of the
shoulders. Added below it (anatomical mm, same frame as the head: z superior, y posterior, x patient-left, origin
near the cranium's centre; the field of view reaches z = -275): the lower cervical and upper thoracic vertebrae
(bodies, discs, transverse and spinous processes, canal with CSF and cord), larynx (thyroid cartilage), trachea
with cartilage rings, oesophagus, thyroid lobes, carotid arteries and jugular veins, clavicles, first ribs, the
manubrium and the lung apices.
"""

from __future__ import annotations

from functools import partial

import numpy as np

from synthct.phantom import tissues as T
from synthct.phantom.brain import Outline, paint_head
from synthct.phantom.canvas import Canvas
from synthct.phantom.paint import (
    BonePart,
    box,
    paint_bone_parts,
    paint_ellipsoid,
    paint_tube,
    shape_in,
    tube_bone,
)
from synthct.phantom.shapes import Coords, capsule, ellipsoid, polyline, smooth_union, superellipse_prism

_Z_BOTTOM = -340.0
_SOFT = (T.SOFT_TISSUE, T.MUSCLE, T.FAT)


def _below_outline(habitus: float) -> Outline:
    """Neck and shoulders as (box low, box high, signed distance) joined to the head's outline."""
    half_x = 150.0 * habitus

    def distance(u: Coords) -> np.ndarray:
        neck = superellipse_prism(u[1], u[2], (15.0, 0.0), (56.0, 54.0 * habitus**0.5), 2.2)
        neck = np.maximum(np.maximum(neck, u[0] + 110.0), -(u[0] - _Z_BOTTOM))
        shoulder_top = -215.0 - 0.28 * np.maximum(np.abs(u[2]) - 40.0, 0.0) - 0.6 * np.maximum(
            np.abs(u[1] - 15.0) - 45.0, 0.0)
        trunk = superellipse_prism(u[1], u[2], (20.0, 0.0), (np.where(u[1] < 20.0, 95.0, 100.0), half_x), 2.6)
        trunk = np.maximum(np.maximum(trunk, u[0] - shoulder_top), -(u[0] - _Z_BOTTOM))
        return smooth_union(neck, trunk, 30.0)

    return (_Z_BOTTOM - 5.0, -100.0, -half_x - 10.0), (-105.0, 125.0, half_x + 10.0), distance


def paint_neck(canvas: Canvas, rng: np.random.Generator, thin: float) -> None:
    """Paint a random head and neck (see the module docstring) onto ``canvas``."""
    g = rng.uniform
    habitus = g(0.9, 1.12)
    paint_head(canvas, rng, thin, below=_below_outline(habitus))
    cortex = 1.5 * thin
    y_body = 18.0
    parts: list[BonePart] = []
    # C6 ... T3: bodies with spinous and transverse processes, the cervical curve leaning back as it descends.
    tops = [-193.0 - 22.0 * k for k in range(7)]
    for k, top in enumerate(tops):
        bottom = top - 17.0 - 0.8 * k
        y = y_body + 2.0 * k
        width = 8.5 + 0.8 * k
        def vertebra(u: Coords, t: float = top, b: float = bottom, y: float = y, w: float = width, k: int = k
                     ) -> np.ndarray:
            return np.minimum(capsule(u, (t - 3.0, y, 0.0), (b + 3.0, y, 0.0), w),
                              capsule(u, ((t + b) / 2, y + 22.0, 0.0), ((t + b) / 2 - 10.0, y + 40.0 + 2.0 * k, 0.0),
                                      4.0))
        parts.append(((bottom - 12.0, y - 14.0, -24.0), (top + 12.0, y + 50.0, 24.0), vertebra, cortex,
                      T.CANCELLOUS_BONE))
        middle = (top + bottom) / 2.0
        for side in (-1.0, 1.0):
            parts += tube_bone([(middle, y + 12.0, 8.0 * side), (middle, y + 14.0, 28.0 * side)], [3.5, 3.5], cortex)
        paint_ellipsoid(canvas, T.SOFT_TISSUE, (bottom - 2.5, y, 0.0), (2.5 * thin**0.5, 9.0, 12.0),
                        only=_SOFT)
    # Clavicles, first ribs and manubrium.
    for side in (-1.0, 1.0):
        parts += tube_bone([(-258.0, -40.0, 18.0 * side), (-256.0, -36.0, 70.0 * side),
                            (-254.0, 0.0, 125.0 * side)], [7.0, 6.5, 7.5], cortex)
        parts += tube_bone([(-226.0, y_body + 20.0, 22.0 * side), (-224.0, 25.0, 55.0 * side),
                            (-236.0, -15.0, 62.0 * side), (-250.0, -40.0, 25.0 * side)], [4.5, 5.0, 5.0, 5.5],
                           cortex)
    manubrium = ((-282.0, -48.0, 0.0), (26.0, max(7.0, 3.0 * thin), 24.0))
    parts.append((*box(*manubrium), lambda u: ellipsoid(u, *manubrium), cortex, T.CANCELLOUS_BONE))
    paint_bone_parts(canvas, parts, keep=(T.SKIN, T.BACKGROUND))
    paint_tube(canvas, T.CSF, [(-225.0, y_body + 17.0, 0.0), (-345.0, y_body + 26.0, 0.0)], [8.0, 8.0])
    paint_tube(canvas, T.WHITE_MATTER, [(-225.0, y_body + 17.0, 0.0), (-345.0, y_body + 26.0, 0.0)], [4.5, 4.5])
    # Larynx: a thyroid-cartilage shield in front of the airway; trachea with rings; oesophagus behind it.
    airway_y = -8.0
    found = shape_in(canvas, (-200.0, -45.0, -30.0), (-140.0, 5.0, 30.0),
                     lambda u: capsule(u, (-150.0, airway_y - 4.0, 0.0), (-190.0, airway_y - 4.0, 0.0), 17.0))
    if found is not None:
        block, distance = found
        front = canvas.coords(block)[1] < airway_y
        canvas.paint(T.CARTILAGE, (np.abs(distance) < 1.5 * thin) & front, block, only=_SOFT)
        canvas.paint(T.SOFT_TISSUE, (distance < 0) & front, block, only=(T.MUSCLE, T.FAT))
    trachea = [(-185.0, airway_y, 0.0), (-260.0, airway_y - 6.0, 0.0), (-345.0, airway_y - 2.0, 0.0)]
    radius = g(7.0, 9.5)
    found = shape_in(canvas, (-350.0, -40.0, -20.0), (-180.0, 15.0, 20.0),
                     lambda u: polyline(u, trachea, [radius] * 3))
    if found is not None:
        block, distance = found
        rings = np.cos(canvas.coords(block)[0] * np.float32(2.0 * np.pi / 8.0)) > -0.3
        canvas.paint(T.CARTILAGE, (distance < 2.0 * thin) & rings, block, only=_SOFT)
        canvas.paint(T.SOFT_TISSUE, (distance < 2.0 * thin) & ~rings, block, only=_SOFT)
        canvas.paint(T.INTERNAL_AIR, distance < 0, block, keep=(T.CORTICAL_BONE, T.CANCELLOUS_BONE))
    paint_tube(canvas, T.SOFT_TISSUE, [(-190.0, 6.0, 3.0), (-345.0, 10.0, 6.0)], [6.5, 6.5], only=(T.MUSCLE, T.FAT))
    for side in (-1.0, 1.0):
        paint_ellipsoid(canvas, T.SOFT_TISSUE, (-235.0, -12.0, 17.0 * side), (22.0, 9.0, 9.0), only=(T.MUSCLE, T.FAT))
        paint_tube(canvas, T.BLOOD, [(-80.0, 12.0, 30.0 * side), (-200.0, 2.0, 24.0 * side),
                                     (-345.0, -5.0, 22.0 * side)], [4.0, 4.0, 4.5], only=_SOFT)
        paint_tube(canvas, T.BLOOD, [(-80.0, 22.0, 38.0 * side), (-200.0, 8.0, 35.0 * side),
                                     (-345.0, 0.0, 32.0 * side)], [5.0, 6.0, 7.0], only=_SOFT)
        # Lung apex under the first rib.
        apex_c, apex_r = (-330.0, 15.0, 62.0 * side), (75.0, 45.0, 42.0 * g(0.9, 1.1))
        found = shape_in(canvas, *box(apex_c, apex_r), partial(ellipsoid, centre=apex_c, radii=apex_r))
        if found is not None:
            canvas.paint(T.LUNG, found[1] < 0, found[0], only=_SOFT)
