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

from evaluation.dose.config import DoseConfig
from synthct.io import IMAGE_SUFFIXES, ImageError, geometry_differences, read_image, strip_image_suffix

MIN_VOXELS = 8
"""Fewest voxels a PTV or OAR may have on the CT grid."""
MIN_RADIUS_MM = 5.0
"""Smallest virtual PTV radius (mm) used when the anatomy has no room for ``target_radius_mm``."""


class StructureError(ValueError):
    """The case's structures cannot be used (missing, empty, outside the body); the message says which and why."""


@dataclass
class Structures:
    """Boolean masks (z, y, x) on the CT grid: the PTV and named OARs, and where they came from."""

    ptv: np.ndarray
    oars: dict[str, np.ndarray]
    source: str
    """``'user'`` or ``'virtual-brain'`` / ``'virtual-pelvis'``."""
    details: dict[str, Any] = field(default_factory=dict)
    """Files (user) or centres and radii in mm (virtual), written to metrics.json."""


def region_of_case(case_id: str, paths: list[Path] | tuple[Path, ...] = ()) -> str | None:
    """``'brain'`` / ``'pelvis'`` from a SynthRAD id (``1BA001``, ``1PC012``) or a ``brain``/``pelvis`` path part."""
    match = re.fullmatch(r"\d([BP])[A-Z]\d+", case_id.upper())
    if match:
        return "brain" if match.group(1) == "B" else "pelvis"
    for path in paths:
        parts = {p.lower() for p in Path(path).parts}
        for region in ("brain", "pelvis"):
            if region in parts:
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


def virtual_structures(
    ct_hu: np.ndarray, body: np.ndarray, spacing_mm: tuple[float, ...], region: str, config: DoseConfig
) -> Structures:
    """The region's virtual PTV and OARs on the CT grid. Raises :class:`StructureError` when they cannot be placed."""
    body = body > 0
    if region == "brain":
        return virtual_brain(ct_hu, body, spacing_mm, config)
    if region == "pelvis":
        return virtual_pelvis(ct_hu, body, spacing_mm, config)
    raise StructureError(f"no virtual-target recipe for region {region!r} (brain, pelvis); give --structures DIR")


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
