"""Head anatomy painted on a :class:`~synthct.phantom.canvas.Canvas`.

Anatomical coordinates (mm at adult size; z superior, y posterior, x patient-left; origin near the cranium's
centre): scalp (skin, fat, galea), skull vault with outer/inner cortical tables and diploë, skull base, CSF, cortex
with sulci, white matter, deep grey matter, ventricles, cerebellum, brainstem and cord; face with eyes (vitreous,
lens, orbital fat, bony orbit), nasal cavity, maxillary/sphenoid/frontal sinuses, ethmoid and mastoid air cells,
petrous bone, maxilla, mandible and teeth, tongue, pharynx, upper cervical spine, neck muscles.

``thin`` multiplies layer thicknesses given in adult mm, so that at a reduced scale skin and skull tables stay a
few voxels thick.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

import numpy as np

from synthct.phantom import tissues as T
from synthct.phantom.canvas import Block, Canvas
from synthct.phantom.fields import rotation_matrix
from synthct.phantom.paint import air_cells, block_noise, box, paint_bone, paint_ellipsoid, shape_in
from synthct.phantom.shapes import Coords, capsule, ellipsoid, polyline, rotated_ellipsoid, smooth_union

_BONE = (T.CORTICAL_BONE, T.CANCELLOUS_BONE, T.TEETH)
_CRANIUM = ((0.0, 5.0, 0.0), (85.0, 95.0, 73.0))


Outline = tuple[tuple[float, float, float], tuple[float, float, float], Callable[[Coords], np.ndarray]]
"""(box low, box high, signed distance) of body parts joined to the head's outline (the head-and-neck phantom's
neck and shoulders)."""


def paint_head(canvas: Canvas, rng: np.random.Generator, thin: float, below: Outline | None = None) -> None:
    """Paint a random head (see the module docstring) onto ``canvas``; ``below`` (optional) extends the outline
    (and the neck muscles) downwards."""
    g = rng.uniform
    low: Sequence[float] = (-200.0, -110.0, -85.0)
    high: Sequence[float] = (95.0, 110.0, 85.0)
    if below is not None:
        low = tuple(min(a, b) for a, b in zip(low, below[0], strict=True))
        high = tuple(max(a, b) for a, b in zip(high, below[1], strict=True))
    head_block = canvas.block(low, high)
    assert head_block is not None
    u = canvas.coords(head_block)
    # Outline: cranium, face, neck and nose, smoothly joined.
    head = smooth_union(ellipsoid(u, *_CRANIUM), ellipsoid(u, (-55.0, -22.0, 0.0), (50.0, 60.0, 57.0)), 10.0)
    head = smooth_union(head, ellipsoid(u, (-135.0, 20.0, 0.0), (70.0, 56.0, 52.0)), 12.0)
    head = smooth_union(head, ellipsoid(u, (-45.0, -80.0, 0.0), (20.0, 12.0, 10.0)), 5.0)
    if below is not None:
        head = smooth_union(head, below[2](u), 15.0)
    depth = np.negative(head, out=head)
    inside = depth > 0
    canvas.paint(T.SOFT_TISSUE, inside, head_block)
    # Skin and subcutaneous fat of varying thickness (one smooth field modulates fat, skull and CSF thickness).
    modulation = block_noise(canvas, head_block, 20.0, rng)
    skin_t = g(1.3, 2.0) * thin
    fat_t = g(1.5, 3.5) * thin * (1.0 + 0.35 * modulation)
    canvas.paint(T.FAT, inside & (depth < skin_t + fat_t), head_block)
    canvas.paint(T.SKIN, inside & (depth < skin_t), head_block)
    galea_t = g(1.0, 2.0) * thin
    del depth, inside
    _paint_neck_muscles(canvas, rng, low, high)

    cran_block = canvas.block(*box(*_CRANIUM))
    assert cran_block is not None
    local = tuple(slice(c.start - h.start, c.stop - h.start) for c, h in zip(cran_block, head_block, strict=True))
    modulation = modulation[local]
    fat_t = fat_t[local]
    _paint_cranium(canvas, rng, thin, cran_block, skin_t + fat_t + galea_t, modulation)
    _paint_deep_brain(canvas, rng, thin)
    _paint_face(canvas, rng, thin)


def _paint_neck_muscles(canvas: Canvas, rng: np.random.Generator, low: Sequence[float],
                        high: Sequence[float]) -> None:
    """Neck muscles with fat planes between them (below the jaw), over the neck's soft tissue."""
    block = canvas.block(low, (-68.0, high[1], high[2]))
    if block is None:
        return
    below_jaw = canvas.coords(block)[0] < -70.0
    fat_planes = np.abs(block_noise(canvas, block, 9.0, rng)) < 0.12
    canvas.paint(T.MUSCLE, below_jaw & ~fat_planes, block, only=(T.SOFT_TISSUE,))
    canvas.paint(T.FAT, below_jaw & fat_planes, block, only=(T.SOFT_TISSUE,))


def _paint_cranium(canvas: Canvas, rng: np.random.Generator, thin: float, block: Block, scalp: np.ndarray,
                   modulation: np.ndarray) -> None:
    """Temporal muscle, skull vault and base (tables and diploë), CSF, cerebrum with cortex and sulci."""
    g = rng.uniform
    u = canvas.coords(block)
    depth_c = np.negative(ellipsoid(u, *_CRANIUM))
    # Temporal muscle: thickens the scalp over the temples.
    temple = np.exp(-(((u[0] - 5.0) / 30.0) ** 2 + ((u[1] + 15.0) / 40.0) ** 2)) * (np.abs(u[2]) > 35.0)
    temporalis = g(5.0, 9.0) * thin * temple
    del temple
    canvas.paint(T.MUSCLE, (depth_c >= scalp) & (depth_c < scalp + temporalis) & (u[0] > -40.0), block,
                 only=(T.SOFT_TISSUE, T.FAT))
    depth_c -= scalp + temporalis
    del temporalis
    # Skull base: a plane from above the orbits back to the foramen magnum, dipping into the middle fossae.
    plane_front, plane_back = -13.0 + g(-3, 3), -60.0 + g(-4, 4)
    slope = (plane_back - plane_front) / 120.0
    fossa = g(12.0, 20.0) * np.exp(-(((u[1] + 5.0) / 30.0) ** 2)) * np.clip(np.abs(u[2]) / 45.0, 0.0, 1.0) ** 2
    base = (u[0] - (plane_front + (u[1] + 60.0) * slope) + fossa) / np.float32(np.sqrt(1.0 + slope * slope))
    del fossa
    skull_t = g(5.5, 8.0) * thin * (1.0 - 0.22 * modulation)
    skull_t *= 1.0 - 0.35 * np.exp(-(((u[0] + 5.0) / 25.0) ** 2)) * (np.abs(u[2]) > 45.0)  # thin temporal squama
    outer_table = g(1.4, 2.2) * thin
    inner_table = g(1.1, 1.8) * thin
    plate_t = g(7.0, 11.0) * thin
    outside_skull = depth_c >= 0
    vault = outside_skull & (depth_c < skull_t) & (base > -plate_t)
    plate = outside_skull & (base <= 0) & (base > -plate_t)
    vault_depth = np.where(vault, np.minimum(depth_c / outer_table, (skull_t - depth_c) / inner_table), -np.inf)
    plate_depth = np.where(plate, np.minimum(-base, base + plate_t) / outer_table, -np.inf)
    bone = vault | plate
    canvas.paint(T.CORTICAL_BONE, bone, block)
    canvas.paint(T.CANCELLOUS_BONE, bone & (np.maximum(vault_depth, plate_depth) > 1.0), block)
    del vault, plate, bone, vault_depth, plate_depth, outside_skull
    # Intracranial: CSF, then the cerebrum with a folded cortex (sulci from the zero sheets of a noise field).
    csf_t = g(1.2, 3.0) * thin * (1.0 + 0.3 * modulation)
    intracranial = (depth_c >= skull_t) & (base > 0)
    canvas.paint(T.CSF, intracranial, block)
    brain_depth = np.minimum(depth_c - skull_t - csf_t, base - csf_t)
    del depth_c, csf_t, skull_t, base
    in_brain = intracranial & (brain_depth > 0)
    del intracranial
    canvas.paint(T.WHITE_MATTER, in_brain, block)
    gm_t = g(2.2, 3.2) * thin
    folds = np.abs(block_noise(canvas, block, 7.0, rng))
    sulcal_depth = g(8.0, 14.0) * thin
    sulcus_w = g(0.06, 0.1)
    cortex = (brain_depth < gm_t) | ((folds < sulcus_w + 0.14) & (brain_depth < sulcal_depth + gm_t))
    canvas.paint(T.GREY_MATTER, in_brain & cortex, block)
    canvas.paint(T.CSF, in_brain & (folds < sulcus_w) & (brain_depth < sulcal_depth), block)
    del folds, cortex, brain_depth
    # Interhemispheric fissure, lined by cortex.
    fissure_half = g(0.8, 1.5) * thin
    high = in_brain & (u[0] > 18.0 + 10.0 * np.tanh(u[1] / 40.0))
    midline = np.abs(u[2])
    canvas.paint(T.GREY_MATTER, high & (midline < fissure_half + gm_t), block)
    canvas.paint(T.CSF, high & (midline < fissure_half), block)


def _paint_deep_brain(canvas: Canvas, rng: np.random.Generator, thin: float) -> None:
    g = rng.uniform
    brain_tissue = (T.WHITE_MATTER, T.GREY_MATTER, T.CSF)
    # Cerebellum in the posterior fossa: folia (fine GM/WM texture) around a white-matter core.
    cb_c, cb_r = (-40.0 + g(-3, 3), 55.0, 0.0), (22.0 * g(0.9, 1.1), 30.0, 48.0 * g(0.9, 1.1))
    found = shape_in(canvas, *box(cb_c, cb_r, 4.0), lambda u: ellipsoid(u, cb_c, cb_r))
    if found is not None:
        block, distance = found
        region = canvas.label_in(block, brain_tissue)
        folia = block_noise(canvas, block, 2.2, rng)
        canvas.paint(T.CSF, region & (distance < 2.0 * thin), block)
        inside = region & (distance < 0)
        canvas.paint(T.GREY_MATTER, inside, block)
        canvas.paint(T.WHITE_MATTER, inside & (((distance < -9.0 * thin) & (folia < 0.6)) | (folia < -0.9)), block)
        canvas.paint(T.CSF, inside & (np.abs(folia - 0.3) < 0.06), block)
    # Deep grey nuclei: caudate, thalamus, putamen.
    for side in (-1.0, 1.0):
        paint_ellipsoid(canvas, T.GREY_MATTER, (12.0, -15.0, 14.0 * side), (9.0, 10.0, 5.0), only=brain_tissue)
        paint_ellipsoid(canvas, T.GREY_MATTER, (-2.0, 10.0, 9.0 * side), (9.0, 14.0, 8.0), only=brain_tissue)
        paint_ellipsoid(canvas, T.GREY_MATTER, (0.0, -5.0, 24.0 * side), (10.0, 14.0, 5.0), only=brain_tissue)
    # Ventricles: lateral (body, frontal, occipital, temporal horns), third, fourth.
    size = g(0.6, 1.7)
    for side in (-1.0, 1.0):
        for centre, radii in (((14.0, 0.0, 10.0), (6.0, 27.0, 4.5)), ((16.0, -22.0, 12.0), (6.0, 10.0, 4.5)),
                              ((6.0, 30.0, 17.0), (5.0, 12.0, 4.0)), ((-15.0, 10.0, 28.0), (4.0, 14.0, 3.0))):
            scaled = (radii[0] * size ** 0.5, radii[1], radii[2] * size)
            paint_ellipsoid(canvas, T.CSF, (centre[0], centre[1], centre[2] * side), scaled, only=brain_tissue)
    paint_ellipsoid(canvas, T.CSF, (-2.0, 5.0, 0.0), (9.0, 12.0, 1.0 + 1.2 * size), only=brain_tissue)
    paint_ellipsoid(canvas, T.CSF, (-38.0, 38.0, 0.0), (5.0, 4.0, 5.0), only=brain_tissue)
    # Brainstem through the foramen magnum into the cord, in a CSF-filled canal.
    stem_top, stem_bottom = (-12.0, 15.0, 0.0), (-70.0, 30.0, 0.0)
    found = shape_in(canvas, (-210.0, 0.0, -20.0), (0.0, 55.0, 20.0),
                     lambda u: capsule(u, stem_top, stem_bottom, 10.0, 7.5))
    if found is not None:
        block, distance = found
        canvas.paint(T.CSF, distance < 3.0 * thin, block, only=(*_BONE, T.SOFT_TISSUE, T.MUSCLE))
        canvas.paint(T.WHITE_MATTER, distance < 0, block)
    _paint_cervical_spine(canvas, rng, thin)


def _paint_cervical_spine(canvas: Canvas, rng: np.random.Generator, thin: float) -> None:
    g = rng.uniform
    cortex = 1.5 * thin
    y_body = 18.0 + g(-3, 3)
    # Dens and C2/C3 bodies with discs, C1 ring, spinous processes.
    bodies = [(-70.0, -100.0), (-105.0, -122.0), (-127.0, -144.0), (-149.0, -166.0), (-171.0, -188.0)]
    for top, bottom in bodies:
        def vertebra(u: Coords, t: float = top, b: float = bottom) -> np.ndarray:
            return np.minimum(capsule(u, (t - 3, y_body, 0.0), (b + 3, y_body, 0.0), 8.0),
                              capsule(u, ((t + b) / 2, y_body + 24, 0.0), ((t + b) / 2 - 6, y_body + 36, 0.0), 4.0))
        found = shape_in(canvas, (bottom - 12, y_body - 14, -14), (top + 12, y_body + 40, 14), vertebra)
        if found is not None:
            paint_bone(canvas, found[0], found[1], cortex)
    ring = [(-78.0, y_body - 9, 0.0), (-78.0, y_body + 2, 17.0), (-80.0, y_body + 20, 20.0),
            (-82.0, y_body + 32, 10.0), (-82.0, y_body + 35, 0.0)]
    for side in (-1.0, 1.0):
        points = [(z, y, x * side) for z, y, x in ring]
        found = shape_in(canvas, (-95.0, y_body - 15, -30), (-65.0, y_body + 45, 30),
                       partial(polyline, points=points, radii=[4.0] * len(points)))
        if found is not None:
            paint_bone(canvas, found[0], found[1], cortex)
    # Spinal canal with the cord.
    found = shape_in(canvas, (-220.0, y_body, -15), (-60.0, y_body + 30, 15),
                   lambda u: capsule(u, (-66.0, y_body + 15, 0.0), (-230.0, y_body + 17, 0.0), 8.0))
    if found is not None:
        canvas.paint(T.CSF, found[1] < 0, found[0])
        canvas.paint(T.WHITE_MATTER, found[1] < -3.5, found[0])


def _paint_face(canvas: Canvas, rng: np.random.Generator, thin: float) -> None:
    g = rng.uniform
    cortex = 1.5 * thin
    wall = (T.CORTICAL_BONE, 1.5 * thin)
    face_tissue = (T.SOFT_TISSUE, T.MUSCLE, T.FAT, T.CORTICAL_BONE, T.CANCELLOUS_BONE)
    # Tongue and masseters.
    paint_ellipsoid(canvas, T.MUSCLE, (-78.0, -42.0, 0.0), (14.0, 28.0, 22.0), only=(T.SOFT_TISSUE,))
    for side in (-1.0, 1.0):
        paint_ellipsoid(canvas, T.MUSCLE, (-72.0, -18.0, 43.0 * side), (24.0, 15.0, 7.0), only=(T.SOFT_TISSUE,))
    # Petrous bone (dense), then mastoid air cells behind the ear.
    for side in (-1.0, 1.0):
        rotation = rotation_matrix((40.0 * side, 0.0, 0.0))
        centre = (-35.0, 8.0, 28.0 * side)
        radii = (7.0, 24.0, 8.0)
        found = shape_in(canvas, *box(centre, (max(radii),)),
                       partial(rotated_ellipsoid, centre=centre, radii=radii, rotation=rotation))
        if found is not None:
            canvas.paint(T.CORTICAL_BONE, found[1] < 0, found[0])
        air_cells(canvas, (-42.0 + g(-3, 3), 22.0, 46.0 * side), (13.0 * g(0.8, 1.2), 13.0, 9.0),
                   g(0.35, 0.65), 1.6, rng)
    # Maxilla: hard palate, alveolar ridges, teeth; mandible.
    paint_ellipsoid(canvas, T.CANCELLOUS_BONE, (-66.0, -52.0, 0.0), (3.0 * thin, 22.0, 22.0),
                     shell=wall, only=face_tissue)
    arch = [(-80.0, 0.0), (-77.0, 12.0), (-70.0, 22.0), (-60.0, 27.0), (-46.0, 30.0)]
    for z_teeth, z_bone in ((-71.0, -68.0), (-80.0, -84.0)):
        points = [(z_bone, y, x) for y, x in arch]
        mirrored = [(z, y, -x) for z, y, x in points[::-1]] + points[1:]
        found = shape_in(canvas, (z_bone - 12, -90, -40), (z_bone + 12, -35, 40),
                       partial(polyline, points=mirrored, radii=[7.0] * len(mirrored)))
        if found is not None:
            paint_bone(canvas, found[0], found[1], cortex, keep=(T.SKIN, T.FAT))
        teeth_points = [(z_teeth, y, x) for z, y, x in mirrored]
        found = shape_in(canvas, (z_teeth - 10, -90, -40), (z_teeth + 10, -35, 40),
                       partial(polyline, points=teeth_points, radii=[3.5] * len(teeth_points)))
        if found is not None:
            canvas.paint(T.TEETH, found[1] < 0, found[0])
    mandible = [(-95.0, -76.0, 0.0), (-93.0, -62.0, 24.0), (-90.0, -38.0, 40.0), (-86.0, -8.0, 46.0),
                (-62.0, -2.0, 49.0), (-45.0, 2.0, 50.0)]
    for side in (-1.0, 1.0):
        points = [(z, y, x * side) for z, y, x in mandible]
        found = shape_in(canvas, (-110.0, -90, -60), (-35.0, 15, 60),
                       partial(polyline, points=points, radii=[7.0, 7.0, 6.5, 6.0, 5.0, 5.0]))
        if found is not None:
            paint_bone(canvas, found[0], found[1], 2.0 * thin, keep=(T.SKIN, T.FAT, T.TEETH))
    if g() < 0.4:
        paint_ellipsoid(canvas, T.INTERNAL_AIR, (-75.0, -50.0, 0.0), (2.5, 18.0, 14.0), only=(T.MUSCLE,))
    # Sinuses: maxillary, sphenoid, frontal; nasal cavity with septum and turbinates; airway; ethmoid cells.
    for side in (-1.0, 1.0):
        size = g(0.75, 1.15)
        paint_ellipsoid(canvas, T.INTERNAL_AIR, (-53.0, -46.0, 27.0 * side), (17.0 * size, 18.0 * size, 13.0 * size),
                         shell=wall)
    size = g(0.6, 1.3)
    paint_ellipsoid(canvas, T.INTERNAL_AIR, (-44.0, -18.0, 0.0), (9.0 * size, 10.0 * size, 11.0 * size), shell=wall)
    if g() < 0.85:
        size = g(0.6, 1.3)
        paint_ellipsoid(canvas, T.CANCELLOUS_BONE, (8.0, -78.0, 0.0), (13.0 * size, 7.0, 17.0 * size),
                         shell=(T.CORTICAL_BONE, 1.5 * thin), keep=(T.SKIN, T.FAT))
        paint_ellipsoid(canvas, T.INTERNAL_AIR, (8.0, -78.0, 0.0), (9.0 * size, 3.5, 12.0 * size))
    air_cells(canvas, (-25.0, -50.0, 0.0), (11.0, 16.0, 9.0), g(0.5, 0.75), 1.6, rng)
    nasal_c, nasal_r = (-50.0, -60.0, 0.0), (20.0, 23.0, 10.0)
    found = shape_in(canvas, *box(nasal_c, nasal_r, 4.0), lambda u: ellipsoid(u, nasal_c, nasal_r))
    if found is not None:
        block, distance = found
        u = canvas.coords(block)
        canvas.paint(T.CORTICAL_BONE, distance < 1.5 * thin, block, keep=(T.SKIN, T.FAT, T.INTERNAL_AIR))
        turbinates = block_noise(canvas, block, 3.0, rng) > 0.5
        air = (distance < 0) & ~((np.abs(u[2]) > 4.0) & turbinates)
        canvas.paint(T.INTERNAL_AIR, air, block)
        canvas.paint(T.SOFT_TISSUE, (distance < 0) & (np.abs(u[2]) < 0.8 * thin), block)
    airway = [(-55.0, -40.0, 0.0), (-72.0, -12.0, 0.0), (-110.0, -5.0, 0.0), (-220.0, -2.0, 0.0)]
    width = g(5.0, 8.0)
    found = shape_in(canvas, (-230.0, -50.0, -15.0), (-45.0, 5.0, 15.0),
                   lambda u: polyline(u, airway, [width, width, width * 0.9, width * 0.9]))
    if found is not None:
        canvas.paint(T.INTERNAL_AIR, found[1] < 0, found[0], keep=_BONE)
    # Orbits: fat, bony wall behind the eye, eyeball (vitreous, sclera, lens), optic nerve.
    eye_r = g(11.0, 12.5)
    for side in (-1.0, 1.0):
        eye_c = (-20.0 + g(-2, 2), -62.0, 32.0 * side)
        orbit_c = (eye_c[0], -50.0, 31.0 * side)
        found = shape_in(canvas, *box(orbit_c, (16.0, 22.0, 16.0), 5.0),
                       partial(ellipsoid, centre=orbit_c, radii=(16.0, 22.0, 16.0)))
        if found is not None:
            block, distance = found
            behind = canvas.coords(block)[1] > eye_c[1]
            canvas.paint(T.CORTICAL_BONE, (distance < 1.8 * thin) & behind, block, keep=(T.SKIN, T.FAT))
            canvas.paint(T.FAT, distance < 0, block, keep=(T.SKIN,))
        found = shape_in(canvas, *box((-24.0, -35.0, 21.0 * side), (16.0, 20.0, 14.0)),
                       partial(capsule, start=eye_c, end=(-28.0, -15.0, 12.0 * side), radius_start=2.5))
        if found is not None:
            canvas.paint(T.WHITE_MATTER, found[1] < 0, found[0], only=(T.FAT,))
        paint_ellipsoid(canvas, T.EYE, eye_c, (eye_r, eye_r, eye_r), shell=(T.SOFT_TISSUE, 1.0 * thin),
                         keep=(T.SKIN,))
        lens_c = (eye_c[0], eye_c[1] - eye_r + 2.5, eye_c[2])
        paint_ellipsoid(canvas, T.LENS, lens_c, (4.5, 2.0, 4.5))
