"""A transverse planning-CT grid for a synthetic CT predicted on a non-transverse (sagittal, coronal, oblique) MR.

Planning systems expect a transverse CT: ImageOrientationPatient 1\\0\\0\\0\\1\\0, slices stacked along the patient's
z axis (LPS, mm). The sCT lives on the MR's grid; :func:`transverse_grid` resamples it (linear in HU) onto an
axis-aligned grid in the same patient coordinates (hence the same frame of reference) that covers the body:

- **Transverse** means a slice normal (row × column) within :data:`TRANSVERSE_MAX_ANGLE_DEG` (10°) of patient z.
  Such an MR keeps its grid (no interpolation, voxel for voxel as before). 10° separates transverse acquisitions
  with a small alignment tilt (auto-align, head tilt corrections) from sagittal (90°), coronal (90°) and strongly
  oblique planes; the same angle names the plane in ImageType (:func:`slice_plane`).
- **Extent**: the body mask's physical bounding box (the 8 corners of its voxel box, each voxel's full extent) plus
  :data:`MARGIN_MM` (10 mm of air around the skin, room for bolus / immobilisation contours and for the planning
  system's external contour), clipped to the MR's field of view (nothing is known outside it). Empty mask: the FOV.
- **Spacing**: in-plane (x, y) the MR's finest spacing (no in-plane resolution lost in any orientation); slices
  (z) ``slice_mm``, by default the MR's finest spacing but not below :data:`MIN_DEFAULT_SLICE_MM` (1 mm): a sagittal
  or coronal MR's fine in-plane spacing becomes the CT's slice spacing, and planning CTs and dose grids are
  1–3 mm; sub-millimetre slices multiply the file count and size without helping dose calculation.
- **Lattice**: along a patient axis that some MR axis is parallel to (pure sagittal / coronal), the first voxel
  centre is snapped onto the MR's voxel lattice, so CT voxel centres coincide with MR voxel centres wherever the
  spacings allow (there the HU are the sCT's own, not interpolated).
- **Values**: linear interpolation of the sCT (HU), −1000 HU outside the MR's field of view, and −1000 HU where the
  body mask, resampled linearly as a float (0/1), is below 0.5.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import SimpleITK as sitk

from synthct.dicom.errors import DicomError

TRANSVERSE_MAX_ANGLE_DEG = 10.0
"""Largest angle (degrees) between the slice normal and the patient z axis for slices to count as transverse."""
MARGIN_MM = 10.0
"""Air kept around the body mask's bounding box on the transverse grid (mm, each side)."""
MIN_DEFAULT_SLICE_MM = 1.0
"""The default transverse slice spacing is the MR's finest spacing, but not below this (mm)."""
AIR_HU = -1000
"""HU outside the body and outside the MR's field of view."""
MAX_VOXELS = 2**28
"""Largest transverse grid (voxels); beyond it the spacing is unreasonable for a planning CT."""
MAX_MATRIX = 65535
"""Largest Rows / Columns of a DICOM image (US)."""
_SLAB_VOXELS = 2**23
"""Voxels resampled per slab (bounds the float32 temporaries to ~64 MB)."""
_PARALLEL = 1e-6
"""|cos| tolerance for an MR axis to count as parallel to a patient axis."""

CtGrid = Literal["transverse", "mr"]
CT_GRIDS: tuple[str, ...] = ("transverse", "mr")


def _direction(image: sitk.Image) -> np.ndarray:
    return np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)


def slice_normal(image: sitk.Image) -> np.ndarray:
    """Unit slice normal (row × column, LPS) of a 3-D image, as the DICOM slices of it will have it."""
    if image.GetDimension() != 3:
        raise DicomError(f"need a 3-D image, got {image.GetDimension()}-D")
    direction = _direction(image)
    normal = np.cross(direction[:, 0], direction[:, 1])
    return normal / np.linalg.norm(normal)


def angle_from_axis_deg(normal: np.ndarray, axis: int) -> float:
    """Angle (degrees, 0–90) between the line of ``normal`` and patient axis ``axis`` (0 x, 1 y, 2 z)."""
    unit = np.asarray(normal, dtype=np.float64) / np.linalg.norm(normal)
    return math.degrees(math.acos(min(1.0, abs(float(unit[axis])))))


def is_transverse(image: sitk.Image, max_angle_deg: float = TRANSVERSE_MAX_ANGLE_DEG) -> tuple[bool, float]:
    """(slices transverse?, angle in degrees between the slice normal and patient z); handedness does not matter."""
    angle = angle_from_axis_deg(slice_normal(image), 2)
    return angle <= max_angle_deg, angle


def slice_plane(normal: np.ndarray, max_angle_deg: float = TRANSVERSE_MAX_ANGLE_DEG) -> str:
    """The slice plane as a CT ImageType value 3: ``AXIAL`` (transverse), ``SAGITTAL``, ``CORONAL`` or ``OBLIQUE``.

    A plane is named after the patient axis (z, x, y) its normal lies within ``max_angle_deg`` of, else OBLIQUE.
    The CT Image IOD's defined terms for value 3 are AXIAL and LOCALIZER (dciodvfy warns on others, no error);
    AXIAL is kept for transverse slices only, so that a non-transverse series does not claim to be one.
    """
    for axis, name in ((2, "AXIAL"), (0, "SAGITTAL"), (1, "CORONAL")):
        if angle_from_axis_deg(normal, axis) <= max_angle_deg:
            return name
    return "OBLIQUE"


def default_slice_mm(image: sitk.Image) -> float:
    """Default transverse slice spacing (mm): the image's finest spacing, not below :data:`MIN_DEFAULT_SLICE_MM`."""
    return max(min(float(s) for s in image.GetSpacing()), MIN_DEFAULT_SLICE_MM)


def _box_corners(image: sitk.Image, low_index: np.ndarray, high_index: np.ndarray) -> np.ndarray:
    """Physical points (8, 3) of the corners of the voxel box from ``low_index`` to ``high_index`` (continuous)."""
    direction = _direction(image)
    spacing = np.asarray(image.GetSpacing(), dtype=np.float64)
    origin = np.asarray(image.GetOrigin(), dtype=np.float64)
    corners = np.array([[(high_index if (k >> axis) & 1 else low_index)[axis] for axis in range(3)]
                        for k in range(8)], dtype=np.float64)
    return origin[None, :] + (corners * spacing[None, :]) @ direction.T


def _physical_box(image: sitk.Image, low_index: np.ndarray, high_index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    corners = _box_corners(image, low_index, high_index)
    return corners.min(axis=0), corners.max(axis=0)


def transverse_reference(sct_image: sitk.Image, mask_image: sitk.Image, slice_mm: float | None = None,
                         margin_mm: float = MARGIN_MM) -> sitk.Image:
    """The empty (uint8) transverse, axis-aligned grid for ``sct_image`` (see the module's rules); raises DicomError
    for a grid too large for a planning CT."""
    for image, name in ((sct_image, "synthetic CT"), (mask_image, "body mask")):
        if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
            raise DicomError(f"{name}: need a single-component 3-D image for a transverse CT grid")
    spacing_mr = np.asarray(sct_image.GetSpacing(), dtype=np.float64)
    inplane = float(spacing_mr.min())
    slice_spacing = default_slice_mm(sct_image) if slice_mm is None else float(slice_mm)
    if not (math.isfinite(slice_spacing) and slice_spacing > 0):
        raise DicomError(f"transverse CT slice spacing must be a positive number of mm, got {slice_mm!r}")
    spacing = np.array([inplane, inplane, slice_spacing])

    size_mr = np.asarray(sct_image.GetSize(), dtype=np.float64)
    fov_low, fov_high = _physical_box(sct_image, np.full(3, -0.5), size_mr - 0.5)
    body = np.nonzero(sitk.GetArrayViewFromImage(mask_image) > 0)  # (z, y, x) index arrays
    if len(body[0]):
        first = np.array([body[2].min(), body[1].min(), body[0].min()], dtype=np.float64)
        last = np.array([body[2].max(), body[1].max(), body[0].max()], dtype=np.float64)
        low, high = _physical_box(mask_image, first - 0.5, last + 0.5)
        low, high = np.maximum(low - margin_mm, fov_low), np.minimum(high + margin_mm, fov_high)
    else:
        low, high = fov_low, fov_high

    direction_mr = _direction(sct_image)
    origin_mr = np.asarray(sct_image.GetOrigin(), dtype=np.float64)
    origin = low + spacing / 2
    for axis in range(3):
        parallel = np.nonzero(np.abs(direction_mr[axis, :]) > 1 - _PARALLEL)[0]
        if len(parallel):  # an MR axis along this patient axis: first centre on the MR's lattice, not after low + s/2
            step = spacing_mr[parallel[0]]
            origin[axis] = origin_mr[axis] + math.floor((origin[axis] - origin_mr[axis]) / step + 1e-6) * step
    size = np.maximum(np.ceil((high - (origin - spacing / 2)) / spacing - 1e-6), 1).astype(np.int64)
    if size[0] > MAX_MATRIX or size[1] > MAX_MATRIX or int(np.prod(size)) > MAX_VOXELS:
        raise DicomError(f"transverse CT grid of {size.tolist()} voxels at {spacing.tolist()} mm is too large for a "
                         f"planning CT (at most {MAX_MATRIX} rows / columns and {MAX_VOXELS} voxels): choose a "
                         "larger slice spacing (--ct-slice-mm) or keep the MR's grid (--ct-grid mr)")
    reference = sitk.Image([int(n) for n in size], sitk.sitkUInt8)
    reference.SetSpacing([float(s) for s in spacing])
    reference.SetOrigin([float(v) for v in origin])
    reference.SetDirection(np.eye(3).ravel().tolist())
    return reference


def transverse_grid(sct_image: sitk.Image, mask_image: sitk.Image, slice_mm: float | None = None,
                    margin_mm: float = MARGIN_MM) -> sitk.Image:
    """``sct_image`` (HU, on the MR's grid) resampled onto its transverse grid (:func:`transverse_reference`): int16
    HU, direction identity; linear in HU, −1000 HU outside the MR's field of view and where the linearly resampled
    body mask (``mask_image`` > 0 as 0/1) is below 0.5. Resampled in slabs of slices to bound memory."""
    reference = transverse_reference(sct_image, mask_image, slice_mm, margin_mm)
    hu = sitk.Cast(sct_image, sitk.sitkFloat32)
    body = sitk.Cast(sitk.GetImageFromArray((sitk.GetArrayViewFromImage(mask_image) > 0).astype(np.float32)),
                     sitk.sitkFloat32)
    body.CopyInformation(mask_image)
    size = reference.GetSize()
    origin, spacing = np.asarray(reference.GetOrigin()), reference.GetSpacing()
    out = np.empty((size[2], size[1], size[0]), dtype=np.int16)
    per_slab = max(1, _SLAB_VOXELS // (size[0] * size[1]))
    identity = sitk.Transform()
    for start in range(0, size[2], per_slab):
        count = min(per_slab, size[2] - start)
        slab = sitk.Image([size[0], size[1], count], sitk.sitkUInt8)
        slab.SetSpacing(spacing)
        slab.SetOrigin([float(origin[0]), float(origin[1]), float(origin[2] + start * spacing[2])])
        values = sitk.GetArrayFromImage(
            sitk.Resample(hu, slab, identity, sitk.sitkLinear, float(AIR_HU), sitk.sitkFloat32))
        inside = sitk.GetArrayFromImage(
            sitk.Resample(body, slab, identity, sitk.sitkLinear, 0.0, sitk.sitkFloat32)) >= 0.5
        out[start:start + count] = np.where(inside, np.clip(np.rint(values), -32768, 32767), AIR_HU)
    result = sitk.GetImageFromArray(out)
    result.CopyInformation(reference)
    return result


@dataclass(frozen=True)
class DicomCtGrid:
    """The image a DICOM CT series is written from, and what was decided (``record`` for results.json)."""

    image: sitk.Image
    record: dict[str, Any]


def dicom_ct_grid(sct_image: sitk.Image, mask_image: sitk.Image, grid: str = "transverse",
                  slice_mm: float | None = None, max_angle_deg: float = TRANSVERSE_MAX_ANGLE_DEG) -> DicomCtGrid:
    """Choose the DICOM CT's grid: the MR's own when its slices are transverse (whatever ``grid``) or ``grid`` is
    ``"mr"``; else :func:`transverse_grid`. ``record``: grid, size (x, y, z), spacing_mm, origin_mm, plane
    (ImageType value 3), slice_normal_angle_deg (from patient z) and the reason."""
    if grid not in CT_GRIDS:
        raise DicomError(f"CT grid must be one of {', '.join(CT_GRIDS)}, got {grid!r}")
    transverse, angle = is_transverse(sct_image, max_angle_deg)
    shown = f"{angle:.1f}".rstrip("0").rstrip(".")
    if transverse:
        image, chosen = sct_image, "mr"
        reason = f"MR slices transverse (slice normal {shown}° from patient z, at most {max_angle_deg:g}°)"
    elif grid == "mr":
        image, chosen = sct_image, "mr"
        reason = f"MR grid requested; MR slice normal {shown}° from patient z, not transverse"
    else:
        image, chosen = transverse_grid(sct_image, mask_image, slice_mm), "transverse"
        reason = f"MR slice normal {shown}° from patient z (more than {max_angle_deg:g}°)"
    record = {
        "grid": chosen,
        "size": [int(n) for n in image.GetSize()],
        "spacing_mm": [round(float(s), 6) for s in image.GetSpacing()],
        "origin_mm": [round(float(v), 4) for v in image.GetOrigin()],
        "plane": slice_plane(slice_normal(image), max_angle_deg),
        "slice_normal_angle_deg": round(angle, 3),
        "reason": reason,
    }
    return DicomCtGrid(image, record)
