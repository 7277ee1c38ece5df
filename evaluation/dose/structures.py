"""Planning structures of a case: the user's masks, or a documented virtual target with OARs beside it.

User structures (``--structures DIR``): ``DIR/<ID>/ptv.<ext>`` and ``DIR/<ID>/oar_<name>.<ext>`` (any image format
synthct reads), on the CT's grid (same size, spacing, origin, direction); voxels > 0 are inside. Or, without a
``ptv.<ext>``, one DICOM RTSTRUCT (``DIR/<ID>/*.dcm``) in the CT's frame of reference: its closed planar contours are
rasterised onto the CT grid (voxel centres inside; nested contours of one ROI cut holes); ROIs named ``PTV…`` form
the PTV (their union), ROIs named like the body (``BODY``, ``EXTERNAL``, ``SKIN``, ``OUTLINE``, ``COUCH…``) are
ignored, every other ROI with contours on the CT is an OAR ``oar_<name>``.

Virtual structures (deterministic: a pure function of the CT, the body mask and the settings; sizes in mm):

- **brain**: the intracranial space is the soft tissue (−100…150 HU, holes filled) enclosed by the skull (> 250 HU)
  in each axial slice. The PTV is a sphere (``target_radius_mm``) whose centre is the intracranial voxel, at least the
  radius plus 3 mm inside the intracranial space, nearest to the intracranial centroid moved 35 % of the intracranial
  half-width towards +x (the patient's left in LPS). OARs: ``oar_right`` beside it towards −x (the patient's right)
  and ``oar_posterior`` behind it (+y), both spheres (``oar_radius_mm``) ``oar_gap_mm`` from the PTV surface, clipped to
  the intracranial space.
- **pelvis**: bone is > 200 HU. The pubic symphysis is the most anterior bone within 10 mm of the bony midline
  (mean x of bone). The prostate PTV (sphere) is centred 30 % of the bony pelvis' anterior-posterior extent behind
  the symphysis and 10 % of it above (+z), moved to the nearest voxel at least its radius plus 2 mm from bone and
  from the body surface. OARs: ``oar_rectum`` behind the PTV (+y) and ``oar_bladder`` above it (+z), clipped to the
  body's soft tissue (no bone).
- **hn** (head and neck, an oropharynx target): the neck is the axial slice of smallest body area in the lower
  half of the body's cranio-caudal extent (among slices with at least 20 % of the largest slice's area). The airway
  there is the air (< -400 HU) inside the body within 15 mm of the body's midline (mean x of that slice's body) in
  that slice and the 10 slices on either side. The PTV (sphere) is centred next to the airway, at the airway's
  centroid moved the PTV radius towards +x (the patient's left) and half that forwards (−y), then to the
  nearest voxel at least its radius plus 2 mm from bone (> 250 HU), air, the body surface, the image border and the
  faces of a slab 50 mm thick around the neck slice. OARs: ``oar_contralateral`` beside it towards −x and
  ``oar_posterior`` behind it (+y, towards the spinal cord), clipped to the soft tissue.
- **th** (thorax, a lung target): the lungs are the body's voxels from -950 to -400 HU (air in the trachea and
  bronchi, below -950 HU, is not lung) and the target lung is their largest connected part (vessels inside it count
  as lung). The PTV is centred at the voxel at least its radius plus 2 mm inside that lung nearest to its centroid.
  OARs: ``oar_medial`` towards the body's midline (±x, the mediastinum) and ``oar_anterior`` in front of the PTV
  (−y), clipped to the body.
- **ab** (abdomen, a pancreas-like target): bone is > 200 HU; the spine is the bone within 15 mm of the body's
  midline (mean x of the body) in the posterior half of the body, its centroid taken over the slices that hold it.
  The PTV is centred 25 % of the body's antero-posterior extent in front of that centroid (−y), moved to the nearest
  voxel at least its radius plus 2 mm from bone, gas (< -400 HU) and the body surface. OARs: ``oar_right`` (−x) and
  ``oar_left`` (+x) beside it, clipped to the soft tissue.

A space too small for ``target_radius_mm`` (a child, a small phantom) gets the largest PTV that fits the margin,
down to 5 mm (the radius used is in ``details``); the OAR radius is then at most the PTV radius.

Axes (z, y, x) as stored; for SynthRAD's LPS images +x is the patient's left, +y posterior, +z superior.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
from scipy import ndimage
from synthct.evaluation.dose.config import DoseConfig

from synthct.io import IMAGE_SUFFIXES, ImageError, geometry_differences, read_image, strip_image_suffix
from synthct.regions import REGIONS, Region, region_from_case_id, region_of_folder

MIN_VOXELS = 8
"""Fewest voxels a PTV or OAR may have on the CT grid."""
MIN_RADIUS_MM = 5.0
"""Smallest virtual PTV radius (mm) used when the anatomy has no room for ``target_radius_mm``."""


VIRTUAL_REGIONS: tuple[Region, ...] = REGIONS
"""Regions with a virtual-target recipe (see the module docstring): every region."""


class StructureError(ValueError):
    """The case's structures cannot be used (missing, empty, outside the body); the message says which and why."""


@dataclass
class Structures:
    """Boolean masks (z, y, x) on the CT grid: the PTV and named OARs, and where they came from."""

    ptv: np.ndarray
    oars: dict[str, np.ndarray]
    source: str
    """``'user'``, ``'user-rtstruct'`` or ``'virtual-<region>'`` (brain, pelvis, hn, th, ab)."""
    details: dict[str, Any] = field(default_factory=dict)
    """Files (user) or centres and radii in mm (virtual), written to metrics.json."""


def region_of_case(case_id: str, paths: list[Path] | tuple[Path, ...] = ()) -> Region | None:
    """The region from a SynthRAD id (``1BA001``/``2BA001`` brain, ``1PC012`` pelvis, ``1HNA001`` hn, ``1THA001`` th,
    ``1ABA001`` ab: :func:`synthct.regions.region_from_case_id`) or a region folder among the path's parts
    (``brain``, ``pelvis``, ``HN``, ``TH``, ``AB``), the folder nearest the file first."""
    region = region_from_case_id(case_id)
    if region is not None:
        return region
    for path in paths:
        for part in reversed(Path(path).parts):
            region = region_of_folder(part)
            if region is not None:
                return region
    return None


def _ball(shape: tuple[int, ...], spacing_mm: tuple[float, ...], centre_mm: np.ndarray, radius_mm: float) -> np.ndarray:
    """Boolean sphere (voxel centres within ``radius_mm`` of ``centre_mm``, both in (z, y, x) mm from voxel 0)."""
    mask = np.zeros(shape, dtype=bool)
    spacing = np.asarray(spacing_mm, dtype=float)
    low = np.maximum(np.floor((centre_mm - radius_mm) / spacing).astype(int), 0)
    high = np.minimum(np.ceil((centre_mm + radius_mm) / spacing).astype(int) + 1, shape)
    if np.any(high <= low):
        return mask
    axes = [np.arange(lo, hi) * s - c for lo, hi, s, c in zip(low, high, spacing, centre_mm, strict=True)]
    dz, dy, dx = np.meshgrid(*axes, indexing="ij")
    mask[low[0] : high[0], low[1] : high[1], low[2] : high[2]] = dz**2 + dy**2 + dx**2 <= radius_mm**2
    return mask


def _nearest_allowed(allowed: np.ndarray, spacing_mm: tuple[float, ...], wanted_mm: np.ndarray) -> np.ndarray | None:
    """The allowed voxel centre (mm) nearest to ``wanted_mm``; None when nothing is allowed."""
    indices = np.argwhere(allowed)
    if indices.size == 0:
        return None
    points = indices * np.asarray(spacing_mm, dtype=float)
    return points[int(np.argmin(np.sum((points - wanted_mm) ** 2, axis=1)))]


def _largest_component(binary: np.ndarray) -> np.ndarray:
    labels, count = ndimage.label(binary)
    if count <= 1:
        return binary
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(np.argmax(sizes))


def _fit_radius(clearance_mm: np.ndarray, margin_mm: float, config: DoseConfig, what: str) -> float:
    """``target_radius_mm``, or the largest radius ≥ :data:`MIN_RADIUS_MM` that keeps ``margin_mm`` of clearance."""
    radius = min(config.target_radius_mm, float(clearance_mm.max(initial=0.0)) - margin_mm)
    if radius < MIN_RADIUS_MM:
        raise StructureError(
            f"{what} is too small for a virtual PTV (room for a radius of {max(radius, 0.0):.1f} mm, at least "
            f"{MIN_RADIUS_MM:g} mm needed); give --structures DIR"
        )
    return radius


def _place_oars(
    names_directions: list[tuple[str, np.ndarray]],
    centre_mm: np.ndarray,
    ptv_radius_mm: float,
    allowed: np.ndarray,
    ptv: np.ndarray,
    spacing_mm: tuple[float, ...],
    config: DoseConfig,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    oar_radius = min(config.oar_radius_mm, ptv_radius_mm)
    distance = ptv_radius_mm + config.oar_gap_mm + oar_radius
    oars: dict[str, np.ndarray] = {}
    details: dict[str, Any] = {}
    for name, direction in names_directions:
        oar_centre = centre_mm + distance * direction
        oar = _ball(allowed.shape, spacing_mm, oar_centre, oar_radius) & allowed & ~ptv
        if int(oar.sum()) >= MIN_VOXELS:
            oars[name] = oar
            centre = [round(float(v), 1) for v in oar_centre]
            details[name] = {"centre_mm_zyx": centre, "radius_mm": round(oar_radius, 1)}
    return oars, details


def virtual_brain(ct_hu: np.ndarray, body: np.ndarray, spacing_mm: tuple[float, ...], config: DoseConfig) -> Structures:
    """Virtual brain PTV and OARs (see the module docstring)."""
    bone = (ct_hu > 250.0) & body
    enclosed = np.zeros_like(bone)
    for z in range(bone.shape[0]):
        if bone[z].any():
            enclosed[z] = ndimage.binary_fill_holes(bone[z])
    soft = enclosed & ~bone & (ct_hu > -100.0) & (ct_hu < 150.0) & body
    intracranial = ndimage.binary_fill_holes(_largest_component(soft)) & ~bone
    if intracranial.sum() < MIN_VOXELS:
        raise StructureError("no intracranial space found (soft tissue enclosed by skull > 250 HU) for a brain target")
    spacing = np.asarray(spacing_mm, dtype=float)
    indices = np.argwhere(intracranial)
    centroid = indices.mean(axis=0) * spacing
    half_width_x = (indices[:, 2].max() - indices[:, 2].min() + 1) * spacing[2] / 2
    wanted = centroid + np.array([0.0, 0.0, 0.35 * half_width_x])
    depth = ndimage.distance_transform_edt(intracranial, sampling=spacing)
    radius = _fit_radius(depth, 3.0, config, "the intracranial space")
    centre = _nearest_allowed(depth >= radius + 3.0, spacing_mm, wanted)
    assert centre is not None  # the deepest voxel qualifies
    ptv = _ball(ct_hu.shape, spacing_mm, centre, radius) & intracranial
    oars, oar_details = _place_oars(
        [("oar_right", np.array([0.0, 0.0, -1.0])), ("oar_posterior", np.array([0.0, 1.0, 0.0]))],
        centre, radius, intracranial, ptv, spacing_mm, config,
    )
    details = {"ptv": {"centre_mm_zyx": [round(float(v), 1) for v in centre], "radius_mm": round(radius, 1)},
               **oar_details}
    return Structures(ptv, oars, "virtual-brain", details)


def virtual_pelvis(
    ct_hu: np.ndarray, body: np.ndarray, spacing_mm: tuple[float, ...], config: DoseConfig
) -> Structures:
    """Virtual prostate PTV with rectum and bladder OARs (see the module docstring)."""
    bone = (ct_hu > 200.0) & body
    if bone.sum() < MIN_VOXELS:
        raise StructureError("no pelvic bone (> 200 HU) found to place a prostate target")
    spacing = np.asarray(spacing_mm, dtype=float)
    bone_idx = np.argwhere(bone)
    x_mid = bone_idx[:, 2].mean() * spacing[2]
    midline = bone_idx[np.abs(bone_idx[:, 2] * spacing[2] - x_mid) <= 10.0]
    if midline.size == 0:
        raise StructureError("no bone near the bony midline: cannot find the pubic symphysis")
    y_front = midline[:, 1].min() * spacing[1]
    symphysis = midline[midline[:, 1] * spacing[1] <= y_front + 5.0].mean(axis=0) * spacing
    extent_ap = (bone_idx[:, 1].max() - bone_idx[:, 1].min() + 1) * spacing[1]
    wanted = np.array([symphysis[0] + 0.1 * extent_ap, symphysis[1] + 0.3 * extent_ap, x_mid])
    soft = body & ~bone
    clearance = ndimage.distance_transform_edt(soft, sampling=spacing)
    radius = _fit_radius(clearance, 2.0, config, "the pelvis' soft tissue")
    centre = _nearest_allowed(clearance >= radius + 2.0, spacing_mm, wanted)
    assert centre is not None  # the voxel of largest clearance qualifies
    ptv = _ball(ct_hu.shape, spacing_mm, centre, radius) & soft
    oars, oar_details = _place_oars(
        [("oar_rectum", np.array([0.0, 1.0, 0.0])), ("oar_bladder", np.array([1.0, 0.0, 0.0]))],
        centre, radius, soft, ptv, spacing_mm, config,
    )
    details = {
        "symphysis_mm_zyx": [round(float(v), 1) for v in symphysis],
        "ptv": {"centre_mm_zyx": [round(float(v), 1) for v in centre], "radius_mm": round(radius, 1)},
        **oar_details,
    }
    return Structures(ptv, oars, "virtual-pelvis", details)


def _details(centre: np.ndarray, radius: float, oar_details: dict[str, Any], **extra: Any) -> dict[str, Any]:
    rounded = {k: [round(float(v), 1) for v in value] for k, value in extra.items()}
    return {**rounded, "ptv": {"centre_mm_zyx": [round(float(v), 1) for v in centre], "radius_mm": round(radius, 1)},
            **oar_details}


def virtual_head_neck(
    ct_hu: np.ndarray, body: np.ndarray, spacing_mm: tuple[float, ...], config: DoseConfig
) -> Structures:
    """Virtual oropharynx PTV beside the airway at the neck, contralateral and posterior OARs (module docstring)."""
    spacing = np.asarray(spacing_mm, dtype=float)
    area = body.sum(axis=(1, 2))
    slices = np.nonzero(area)[0]
    if slices.size == 0:
        raise StructureError("the body mask is empty: no head-and-neck target")
    lower = slices[slices <= (slices[0] + slices[-1]) / 2.0]
    candidates = lower[area[lower] >= 0.2 * area.max()]
    if candidates.size == 0:
        raise StructureError("no neck found (no slice in the lower half of the body with 20 % of the largest area); "
                             "give --structures DIR")
    neck_z = int(candidates[np.argmin(area[candidates])])
    window = slice(max(neck_z - 10, 0), neck_z + 11)
    air = np.zeros_like(body)
    air[window] = (ct_hu[window] < -400.0) & body[window]
    body_x = np.argwhere(body[neck_z])[:, 1].mean() * spacing[2]
    air &= (np.abs(np.arange(body.shape[2]) * spacing[2] - body_x) <= 15.0)[None, None, :]  # not the lung apices
    if air.sum() < MIN_VOXELS:
        raise StructureError(f"no airway (< -400 HU inside the body) near the neck (slice {neck_z}) for an "
                             "oropharynx target; give --structures DIR")
    airway = np.argwhere(air).mean(axis=0) * spacing
    bone = (ct_hu > 250.0) & body
    soft = body & ~bone & (ct_hu >= -400.0)
    slab = np.abs(np.arange(body.shape[0]) - neck_z) * spacing[0] <= 25.0
    soft &= slab[:, None, None]  # the neck only: not the brain or the shoulders
    clearance = ndimage.distance_transform_edt(np.pad(soft, 1), sampling=spacing)[1:-1, 1:-1, 1:-1]
    radius = _fit_radius(clearance, 2.0, config, "the neck's soft tissue")
    wanted = airway + np.array([0.0, -0.5 * radius, radius])
    centre = _nearest_allowed(clearance >= radius + 2.0, spacing_mm, wanted)
    assert centre is not None  # the voxel of largest clearance qualifies
    ptv = _ball(ct_hu.shape, spacing_mm, centre, radius) & soft
    oars, oar_details = _place_oars(
        [("oar_contralateral", np.array([0.0, 0.0, -1.0])), ("oar_posterior", np.array([0.0, 1.0, 0.0]))],
        centre, radius, soft, ptv, spacing_mm, config,
    )
    return Structures(ptv, oars, "virtual-hn", _details(centre, radius, oar_details, airway_mm_zyx=airway))


def virtual_thorax(ct_hu: np.ndarray, body: np.ndarray, spacing_mm: tuple[float, ...], config: DoseConfig
                   ) -> Structures:
    """Virtual PTV in the larger lung with medial and anterior OARs (see the module docstring)."""
    spacing = np.asarray(spacing_mm, dtype=float)
    lungs = body & (ct_hu >= -950.0) & (ct_hu < -400.0)
    labels, count = ndimage.label(lungs)
    if count == 0:
        raise StructureError("no lung (-950…-400 HU inside the body) found for a thorax target; "
                             "give --structures DIR")
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    lung = labels == int(np.argmax(sizes))
    if lung.sum() < MIN_VOXELS:
        raise StructureError("the lungs are too small for a thorax target; give --structures DIR")
    body_x = np.argwhere(body)[:, 2].mean() * spacing[2]
    depth = ndimage.distance_transform_edt(ndimage.binary_fill_holes(lung), sampling=spacing)  # vessels count
    radius = _fit_radius(depth, 2.0, config, "the lung")
    wanted = np.argwhere(lung).mean(axis=0) * spacing
    centre = _nearest_allowed(depth >= radius + 2.0, spacing_mm, wanted)
    assert centre is not None  # the voxel of largest depth qualifies
    ptv = _ball(ct_hu.shape, spacing_mm, centre, radius) & body
    medial = np.array([0.0, 0.0, 1.0 if centre[2] < body_x else -1.0])
    oars, oar_details = _place_oars(
        [("oar_medial", medial), ("oar_anterior", np.array([0.0, -1.0, 0.0]))],
        centre, radius, body, ptv, spacing_mm, config,
    )
    return Structures(ptv, oars, "virtual-th", _details(centre, radius, oar_details, lung_centroid_mm_zyx=wanted))


def virtual_abdomen(ct_hu: np.ndarray, body: np.ndarray, spacing_mm: tuple[float, ...], config: DoseConfig
                    ) -> Structures:
    """Virtual pancreas-like PTV in front of the spine with right and left OARs (see the module docstring)."""
    spacing = np.asarray(spacing_mm, dtype=float)
    points = np.argwhere(body)
    if points.size == 0:
        raise StructureError("the body mask is empty: no abdomen target")
    body_x = points[:, 2].mean() * spacing[2]
    y_low, y_high = points[:, 1].min() * spacing[1], (points[:, 1].max() + 1) * spacing[1]
    bone = (ct_hu > 200.0) & body
    bone_idx = np.argwhere(bone)
    spine = bone_idx[(np.abs(bone_idx[:, 2] * spacing[2] - body_x) <= 15.0)
                     & (bone_idx[:, 1] * spacing[1] >= (y_low + y_high) / 2.0)]
    if spine.shape[0] < MIN_VOXELS:
        raise StructureError("no spine (bone > 200 HU near the midline, posterior half of the body) found for an "
                             "abdomen target; give --structures DIR")
    spine_mm = spine.mean(axis=0) * spacing
    wanted = spine_mm - np.array([0.0, 0.25 * (y_high - y_low), 0.0])
    soft = body & ~bone & (ct_hu >= -400.0)
    clearance = ndimage.distance_transform_edt(soft, sampling=spacing)
    radius = _fit_radius(clearance, 2.0, config, "the abdomen's soft tissue")
    centre = _nearest_allowed(clearance >= radius + 2.0, spacing_mm, wanted)
    assert centre is not None  # the voxel of largest clearance qualifies
    ptv = _ball(ct_hu.shape, spacing_mm, centre, radius) & soft
    oars, oar_details = _place_oars(
        [("oar_right", np.array([0.0, 0.0, -1.0])), ("oar_left", np.array([0.0, 0.0, 1.0]))],
        centre, radius, soft, ptv, spacing_mm, config,
    )
    return Structures(ptv, oars, "virtual-ab", _details(centre, radius, oar_details, spine_mm_zyx=spine_mm))


def virtual_structures(
    ct_hu: np.ndarray, body: np.ndarray, spacing_mm: tuple[float, ...], region: str, config: DoseConfig
) -> Structures:
    """The region's virtual PTV and OARs on the CT grid. Raises :class:`StructureError` when they cannot be placed."""
    body = body > 0
    if region == "brain":
        return virtual_brain(ct_hu, body, spacing_mm, config)
    if region == "pelvis":
        return virtual_pelvis(ct_hu, body, spacing_mm, config)
    if region == "hn":
        return virtual_head_neck(ct_hu, body, spacing_mm, config)
    if region == "th":
        return virtual_thorax(ct_hu, body, spacing_mm, config)
    if region == "ab":
        return virtual_abdomen(ct_hu, body, spacing_mm, config)
    raise StructureError(f"no virtual-target recipe for region {region!r} ({', '.join(VIRTUAL_REGIONS)}); "
                         "give --structures DIR")


def _structure_files(folder: Path) -> tuple[list[Path], dict[str, Path]]:
    ptvs: list[Path] = []
    oars: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if not (path.is_file() and path.name.lower().endswith(IMAGE_SUFFIXES)):
            continue
        stem = strip_image_suffix(path.name)
        if stem.lower() == "ptv":
            ptvs.append(path)
        elif stem.lower().startswith("oar_") and len(stem) > 4:
            if stem in oars:
                raise StructureError(f"{folder}: two files for {stem}: {oars[stem].name}, {path.name}")
            oars[stem] = path
    return ptvs, oars


def _read_mask(path: Path, ct_image: sitk.Image) -> np.ndarray:
    image = read_image(path)
    problems = geometry_differences(ct_image, image)
    if problems:
        raise StructureError(f"{path}: structure geometry differs from the CT: " + "; ".join(problems))
    values = sitk.GetArrayFromImage(image)
    if not np.all(np.isfinite(values)):
        raise StructureError(f"{path}: structure mask holds NaN or infinite values")
    return values > 0


_IGNORED_ROIS = re.compile(r"(body|external|skin|outline|couch.*|table.*)", re.IGNORECASE)


def _rasterise(contours: list[np.ndarray], ct_image: sitk.Image) -> np.ndarray:
    """Boolean (z, y, x) mask of closed planar contours (patient mm points, N×3) on the CT grid (even-odd rule)."""
    from matplotlib.path import Path as Polygon

    size_x, size_y, size_z = ct_image.GetSize()
    mask = np.zeros((size_z, size_y, size_x), dtype=bool)
    for points in contours:
        index = np.array([ct_image.TransformPhysicalPointToContinuousIndex(tuple(float(v) for v in p)) for p in points])
        z = round(float(index[:, 2].mean()))
        if not 0 <= z < size_z or len(index) < 3:
            continue
        x0, y0 = np.maximum(np.floor(index[:, :2].min(axis=0)).astype(int), 0)
        x1, y1 = np.minimum(np.ceil(index[:, :2].max(axis=0)).astype(int) + 1, (size_x, size_y))
        if x1 <= x0 or y1 <= y0:
            continue
        yy, xx = np.mgrid[y0:y1, x0:x1]
        inside = Polygon(index[:, :2]).contains_points(np.column_stack([xx.ravel(), yy.ravel()]))
        mask[z, y0:y1, x0:x1] ^= inside.reshape(yy.shape)
    return mask


def rtstruct_structures(path: Path, ct_image: sitk.Image) -> Structures:
    """PTV and OARs of a DICOM RTSTRUCT on the CT grid (see the module docstring)."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        dataset = pydicom.dcmread(path)
    except (InvalidDicomError, OSError) as exc:
        raise StructureError(f"{path}: not a readable DICOM file ({exc})") from exc
    if dataset.get("Modality") != "RTSTRUCT" or "ROIContourSequence" not in dataset:
        raise StructureError(f"{path}: not an RTSTRUCT with contours (Modality {dataset.get('Modality')!r})")
    names = {int(roi.ROINumber): str(roi.ROIName).strip() for roi in dataset.get("StructureSetROISequence", [])}
    ptv = np.zeros(tuple(reversed(ct_image.GetSize())), dtype=bool)
    ptv_names: list[str] = []
    oars: dict[str, np.ndarray] = {}
    for roi in dataset.ROIContourSequence:
        name = names.get(int(roi.ReferencedROINumber), f"roi{int(roi.ReferencedROINumber)}")
        contours = [np.asarray(c.ContourData, dtype=float).reshape(-1, 3) for c in roi.get("ContourSequence", [])
                    if c.get("ContourGeometricType") == "CLOSED_PLANAR"]
        if _IGNORED_ROIS.fullmatch(name) or not contours:
            continue
        mask = _rasterise(contours, ct_image)
        if name.upper().startswith("PTV"):
            ptv |= mask
            ptv_names.append(name)
        elif mask.any():
            oars["oar_" + re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_").lower()] = mask
    if not ptv_names:
        raise StructureError(f"{path}: no ROI named PTV… among {', '.join(sorted(names.values())) or 'none'}")
    return Structures(ptv, oars, "user-rtstruct", {"file": str(path), "ptv_rois": ptv_names, "oars": sorted(oars)})


def user_structures(folder: Path, case_id: str, ct_image: sitk.Image) -> Structures:
    """The user's PTV and OARs of one case from ``folder/<case_id>/``; raises :class:`StructureError` if unusable."""
    case_folder = Path(folder) / case_id
    if not case_folder.is_dir():
        raise StructureError(f"{case_folder}: no structure folder for case {case_id}")
    ptvs, oar_files = _structure_files(case_folder)
    dicoms = sorted(p for p in case_folder.iterdir() if p.is_file() and p.suffix.lower() == ".dcm")
    if not ptvs and len(dicoms) == 1:
        return rtstruct_structures(dicoms[0], ct_image)
    if not ptvs:
        found = f" (and {len(dicoms)} .dcm files: give one RTSTRUCT)" if dicoms else ""
        raise StructureError(f"{case_folder}: no ptv.<ext> mask{found}")
    if len(ptvs) > 1:
        raise StructureError(f"{case_folder}: several PTV files: {', '.join(p.name for p in ptvs)}")
    try:
        ptv = _read_mask(ptvs[0], ct_image)
        oars = {name: _read_mask(path, ct_image) for name, path in oar_files.items()}
    except ImageError as exc:
        raise StructureError(str(exc)) from exc
    files = {"ptv": str(ptvs[0]), **{name: str(path) for name, path in oar_files.items()}}
    return Structures(ptv, oars, "user", {"files": files})


def check_structures(structures: Structures, body: np.ndarray, where: str) -> None:
    """Raise :class:`StructureError` (prefixed by ``where``) for an empty PTV/OAR or a PTV mostly outside the body."""
    body = body > 0
    if structures.ptv.shape != body.shape:
        raise StructureError(f"{where}: PTV shape {structures.ptv.shape} differs from the CT's {body.shape}")
    count = int(structures.ptv.sum())
    if count < MIN_VOXELS:
        raise StructureError(f"{where}: the PTV is empty or smaller than {MIN_VOXELS} voxels ({count})")
    inside = int((structures.ptv & body).sum())
    if inside < 0.5 * count:
        raise StructureError(f"{where}: the PTV lies outside the body ({inside} of {count} voxels inside the mask)")
    for name, oar in structures.oars.items():
        if oar.shape != body.shape or int(oar.sum()) == 0:
            raise StructureError(f"{where}: {name} is empty or does not match the CT grid")
