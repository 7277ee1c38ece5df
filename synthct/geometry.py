"""The geometry the network sees: one canonical orientation and the training spacing (SPEC §12).

A network trained on one voxel layout (SynthRAD: transverse slices, ~1 mm brain, ~1 × 1 × 2.5 mm pelvis) gives
other HU for the same anatomy stored sagittally, flipped or at 0.5 × 0.5 × 3 mm. So every case is brought to one
layout before the network sees it, in training (the dataset cache) and in inference (every entry point):

1. **Orientation, no interpolation.** Axes are permuted and flipped so that image x, y, z point along the patient's
   L, P, S axes (DICOM's LPS patient coordinates; :data:`CANONICAL_ORIENTATION` = ``"LPS"``). Only the closest
   axis permutation is applied: an oblique image stays oblique by its small residual angle (training augments
   rotations). A pure permutation is undone exactly, voxel for voxel.
2. **Spacing, only when needed.** When an axis' spacing differs from the training spacing by more than
   :data:`DEFAULT_SPACING_TOLERANCE` (relative), the MR is resampled (linear) and the mask (nearest neighbour) to
   the training spacing over the same field of view; the predicted HU are interpolated (linear) back onto the MR's
   own grid, and −1000 HU set outside the MR's own mask. The tolerance is measured in
   ``benchmarks/bench_geometry.py``: inside it, interpolating twice costs more than the spacing mismatch.

Orientation codes name where each image axis points as its index grows: ``"LPS"`` = x → patient left, y →
posterior, z → superior (SimpleITK identity direction); ``"RAS"`` flips x and y; ``"PSL"`` is a sagittal stack.

Arrays are (z, y, x) as SimpleITK's numpy view; spacings in this module's records are (z, y, x) mm as well,
labelled ``_zyx_mm``. numpy + SimpleITK only (the core).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import SimpleITK as sitk

CANONICAL_ORIENTATION = "LPS"
"""Orientation every case is brought to before the network sees it (image x → L, y → P, z → S)."""
DEFAULT_SPACING_TOLERANCE = 0.15
"""Largest relative difference per axis between an MR's spacing and the training spacing that is left as it is.

Measured in ``benchmarks/bench_geometry.py`` (the ``make demo`` model, validation phantoms acquired at scaled
spacings; MAE vs CT, resampled / not): in-plane 0.8× 149 / 175 HU, 0.9× 154 / 151, 1.1× 164 / 145, 1.2× 163 / 144,
1.5× 166 / 171 HU. Resampling twice costs 10–20 HU, so it pays only beyond about 13 % finer and 30–40 % coarser;
15 % is the one symmetric tolerance that resamples the finer side where it pays and keeps the small differences
scanners and resampled datasets show. A package may carry its own (``geometry.spacing_tolerance``)."""
ResampleMode = Literal["auto", "never"]
RESAMPLE_MODES: tuple[ResampleMode, ...] = ("auto", "never")

_POSITIVE = "LPS"
_NEGATIVE = "RAI"


class GeometryError(ValueError):
    """An image cannot be brought to the network's geometry (the message says why and what to do)."""


# ----------------------------------------------------------------------------------------------- orientation
def orientation_code(direction: Sequence[float]) -> str:
    """Three letters, one per image axis (x, y, z): the patient direction each axis is closest to (LPS letters)."""
    matrix = np.asarray(direction, dtype=np.float64).reshape(3, 3)
    permutation, flips = _closest_permutation(matrix)
    letters = [""] * 3
    for patient_axis, image_axis in enumerate(permutation):
        letters[image_axis] = (_NEGATIVE if flips[patient_axis] else _POSITIVE)[patient_axis]
    return "".join(letters)


def _closest_permutation(matrix: np.ndarray) -> tuple[tuple[int, int, int], tuple[bool, bool, bool]]:
    """For each patient axis k (x, y, z): the image axis closest to it and whether it points the other way.

    The permutation maximises the summed |cosine|, so a 45° oblique image still gets one consistent assignment.
    """
    best: tuple[int, ...] = (0, 1, 2)
    best_score = -1.0
    for candidate in itertools.permutations(range(3)):
        score = sum(abs(float(matrix[k, candidate[k]])) for k in range(3))
        if score > best_score + 1e-12:
            best, best_score = candidate, score
    permutation = (int(best[0]), int(best[1]), int(best[2]))
    fz, fy, fx = (bool(matrix[k, permutation[k]] < 0) for k in range(3))
    flips = (fz, fy, fx)
    return permutation, flips


@dataclass(frozen=True)
class Reorientation:
    """Axis permutation + flips bringing an image to :data:`CANONICAL_ORIENTATION` (exactly invertible).

    ``permutation[k]`` is the source image axis (x = 0, y = 1, z = 2) that becomes canonical axis k; ``flips[k]``
    says whether it is reversed. ``source`` is the source's orientation code.
    """

    permutation: tuple[int, int, int]
    flips: tuple[bool, bool, bool]
    source: str

    @property
    def is_identity(self) -> bool:
        return self.permutation == (0, 1, 2) and not any(self.flips)

    def _numpy_axes(self) -> tuple[int, int, int]:
        # numpy axis of image axis i is 2 - i; new numpy axis j holds canonical axis 2 - j
        return (2 - self.permutation[2], 2 - self.permutation[1], 2 - self.permutation[0])

    def apply(self, array: np.ndarray) -> np.ndarray:
        """A source array (z, y, x) in canonical order (a view where numpy can; no interpolation)."""
        out = np.transpose(array, self._numpy_axes())
        for k in range(3):
            if self.flips[k]:
                out = np.flip(out, axis=2 - k)
        return out

    def undo(self, array: np.ndarray) -> np.ndarray:
        """A canonical array (z, y, x) back in the source's voxel order: ``undo(apply(a)) == a``."""
        out = array
        for k in range(3):
            if self.flips[k]:
                out = np.flip(out, axis=2 - k)
        return np.transpose(out, np.argsort(self._numpy_axes()))

    def apply_to_image(self, image: sitk.Image) -> sitk.Image:
        """``image`` reoriented: the same voxels at the same physical points, axes in canonical order."""
        array = np.ascontiguousarray(self.apply(sitk.GetArrayViewFromImage(image)))
        out = sitk.GetImageFromArray(array)
        direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)
        spacing = image.GetSpacing()
        size = image.GetSize()
        corner = [0, 0, 0]
        columns = []
        for k in range(3):
            axis = self.permutation[k]
            corner[axis] = size[axis] - 1 if self.flips[k] else 0
            columns.append(-direction[:, axis] if self.flips[k] else direction[:, axis])
        out.SetSpacing(tuple(float(spacing[self.permutation[k]]) for k in range(3)))
        out.SetOrigin(image.TransformIndexToPhysicalPoint(corner))
        out.SetDirection(tuple(float(v) for v in np.stack(columns, axis=1).ravel()))
        return out


def canonical_reorientation(image: sitk.Image) -> Reorientation:
    """The permutation + flips that bring ``image`` (3-D) to :data:`CANONICAL_ORIENTATION`."""
    if image.GetDimension() != 3:
        raise GeometryError(f"need a 3-D image, got {image.GetDimension()}-D")
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    permutation, flips = _closest_permutation(direction)
    return Reorientation(permutation, flips, orientation_code(image.GetDirection()))


def spacing_zyx_mm(image: sitk.Image) -> tuple[float, float, float]:
    """Voxel spacing (z, y, x) in mm."""
    x, y, z = image.GetSpacing()
    return float(z), float(y), float(x)


# ------------------------------------------------------------------------------------------ training record
@dataclass(frozen=True)
class NetworkGeometry:
    """What a model was trained on: orientation code, spacing (z, y, x) mm, and the resampling tolerance.

    ``spacing_zyx_mm`` None declares a model whose output does not depend on the voxel spacing (a voxel-wise
    model such as the analytic test package): it is reoriented, never resampled.
    """

    orientation: str
    spacing_zyx_mm: tuple[float, float, float] | None
    tolerance: float = DEFAULT_SPACING_TOLERANCE

    def to_dict(self) -> dict[str, Any]:
        spacing = None if self.spacing_zyx_mm is None else [float(v) for v in self.spacing_zyx_mm]
        return {"orientation": self.orientation, "spacing_zyx_mm": spacing, "spacing_tolerance": float(self.tolerance)}

    @classmethod
    def from_dict(cls, record: Any, where: str = "geometry") -> NetworkGeometry:
        """Parse and check a record written by :meth:`to_dict`; ``ValueError`` naming ``where`` if malformed."""
        if not isinstance(record, dict):
            raise ValueError(f"{where} must be an object, got {record!r}")
        orientation = record.get("orientation")
        spacing = record.get("spacing_zyx_mm")
        tolerance = record.get("spacing_tolerance", DEFAULT_SPACING_TOLERANCE)
        if orientation != CANONICAL_ORIENTATION:
            raise ValueError(f"{where}.orientation is {orientation!r}; this synthct handles "
                             f"{CANONICAL_ORIENTATION!r} only")
        if spacing is not None and not (isinstance(spacing, list) and len(spacing) == 3 and all(
                isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and v > 0
                for v in spacing)):
            raise ValueError(f"{where}.spacing_zyx_mm must be 3 positive numbers (mm) or null, got {spacing!r}")
        if not (isinstance(tolerance, int | float) and 0.0 <= tolerance < 1.0):
            raise ValueError(f"{where}.spacing_tolerance must be in [0, 1), got {tolerance!r}")
        if spacing is None:
            return cls(str(orientation), None, float(tolerance))
        return cls(str(orientation), (float(spacing[0]), float(spacing[1]), float(spacing[2])), float(tolerance))


def training_geometry(spacings_zyx_mm: Sequence[Sequence[float]],
                      tolerance: float = DEFAULT_SPACING_TOLERANCE) -> NetworkGeometry:
    """The training geometry from the training cases' canonical spacings: per-axis median (like nnU-Net's plans)."""
    if not spacings_zyx_mm:
        raise ValueError("no training case to take the spacing from")
    median = np.median(np.asarray(spacings_zyx_mm, dtype=np.float64), axis=0)
    return NetworkGeometry(CANONICAL_ORIENTATION, (float(median[0]), float(median[1]), float(median[2])),
                           tolerance)


# ------------------------------------------------------------------------------------------------- resampling
def spacing_mismatch(spacing: Sequence[float], target: Sequence[float]) -> float:
    """Largest relative difference |spacing − target| / target over the axes."""
    return max(abs(float(s) - float(t)) / float(t) for s, t in zip(spacing, target, strict=True))


def resampled_grid(image: sitk.Image, spacing_zyx_mm: Sequence[float]) -> sitk.Image:
    """An empty (uint8) image covering ``image``'s field of view at ``spacing_zyx_mm``, same direction.

    The field of view's outer faces (half a voxel beyond the first and last centres) are kept; the voxel count
    per axis is ``round(size · spacing / new spacing)`` (at least 1), centred in the field of view.
    """
    spacing = np.asarray(image.GetSpacing(), dtype=np.float64)
    new_spacing = np.asarray(list(spacing_zyx_mm)[::-1], dtype=np.float64)
    size = np.asarray(image.GetSize(), dtype=np.float64)
    new_size = np.maximum(1, np.rint(size * spacing / new_spacing)).astype(int)
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    extent = size * spacing
    lower_face = np.asarray(image.GetOrigin()) - direction @ (spacing / 2)
    margin = (extent - new_size * new_spacing) / 2  # centre the new voxels in the old field of view
    origin = lower_face + direction @ (margin + new_spacing / 2)
    grid = sitk.Image([int(v) for v in new_size], sitk.sitkUInt8)
    grid.SetSpacing(tuple(float(v) for v in new_spacing))
    grid.SetOrigin(tuple(float(v) for v in origin))
    grid.SetDirection(image.GetDirection())
    return grid


def resample_onto(image: sitk.Image, reference: sitk.Image, interpolator: int, default: float) -> sitk.Image:
    """``image`` on ``reference``'s grid (float32; the source's pixel type for nearest neighbour).

    The source is first extended by one voxel of edge replication on every face, so that points between its
    outermost voxel centres and the outer faces of those voxels (its field of view) take the boundary values;
    only points further out get ``default``.
    """
    array = sitk.GetArrayViewFromImage(image)
    padded = sitk.GetImageFromArray(np.pad(array, 1, mode="edge"))
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    spacing = np.asarray(image.GetSpacing(), dtype=np.float64)
    padded.SetSpacing(image.GetSpacing())
    padded.SetDirection(image.GetDirection())
    padded.SetOrigin(tuple(float(v) for v in np.asarray(image.GetOrigin()) - direction @ spacing))
    output_type = image.GetPixelID() if interpolator == sitk.sitkNearestNeighbor else sitk.sitkFloat32
    return sitk.Resample(padded, reference, sitk.Transform(), interpolator, float(default), output_type)


# ---------------------------------------------------------------------------------------- the network's grid
@dataclass
class NetworkGrid:
    """An MR and its mask as the network sees them, and how to go back to the MR's own grid.

    ``mr`` (float32) and ``mask`` (uint8) are in canonical orientation, at the training spacing when
    ``resampled``. ``record`` says what was done (for logs, results.json and the QA page).
    """

    mr: sitk.Image
    mask: sitk.Image
    reorientation: Reorientation
    resampled: bool
    record: dict[str, Any]


def _fmt_spacing(spacing_zyx: Sequence[float]) -> str:
    return " × ".join(f"{v:g}" for v in spacing_zyx) + " mm (z, y, x)"


def to_network_grid(mr_image: sitk.Image, mask_image: sitk.Image, geometry: NetworkGeometry | None,
                    mode: ResampleMode = "auto", slice_thickness_mm: float | None = None,
                    name: str = "MR") -> NetworkGrid:
    """Bring ``mr_image`` and ``mask_image`` (same grid) to the network's orientation and, when needed, spacing.

    ``geometry`` None (a package exported before geometry was recorded): nothing is changed and the record says
    so. ``mode`` "never" reorients but never resamples (a spacing outside the tolerance is noted).
    ``slice_thickness_mm`` (DICOM SliceThickness, when known): a stack whose gaps between slices are larger than
    the slices themselves cannot be resampled (the tissue in the gaps was never measured): :class:`GeometryError`.
    """
    if mode not in RESAMPLE_MODES:
        raise ValueError(f"resample mode must be one of {RESAMPLE_MODES}, got {mode!r}")
    source_code = orientation_code(mr_image.GetDirection())
    record: dict[str, Any]
    if geometry is None:
        identity = Reorientation((0, 1, 2), (False, False, False), source_code)
        record = {"checked": False, "mr_orientation": source_code, "reoriented": False, "resampled": False,
                  "mr_spacing_zyx_mm": list(spacing_zyx_mm(mr_image)),
                  "summary": "model package records no training geometry (exported before synthct recorded it): "
                             "orientation and spacing were not checked; the network sees the MR's grid as stored "
                             "(re-export the model to enable this check)"}
        return NetworkGrid(mr_image, mask_image, identity, False, record)
    reorientation = canonical_reorientation(mr_image)
    mr = reorientation.apply_to_image(sitk.Cast(mr_image, sitk.sitkFloat32))
    mask = reorientation.apply_to_image(sitk.Cast(mask_image > 0, sitk.sitkUInt8))
    spacing = spacing_zyx_mm(mr)
    if geometry.spacing_zyx_mm is None:
        record = {"checked": True, "mr_orientation": source_code, "network_orientation": geometry.orientation,
                  "reoriented": not reorientation.is_identity, "mr_spacing_zyx_mm": [round(v, 6) for v in spacing],
                  "training_spacing_zyx_mm": None, "resampled": False, "resample_mode": mode,
                  "network_shape_zyx": list(mr.GetSize())[::-1],
                  "summary": (f"reoriented {source_code} → {geometry.orientation}" if not reorientation.is_identity
                              else f"orientation {source_code} as trained")
                  + "; the model does not depend on the spacing: not resampled"}
        return NetworkGrid(mr, mask, reorientation, False, record)
    mismatch = spacing_mismatch(spacing, geometry.spacing_zyx_mm)
    outside = mismatch > geometry.tolerance
    parts = [f"reoriented {source_code} → {geometry.orientation} (axis permutation/flip, no interpolation)"
             if not reorientation.is_identity else f"orientation {source_code} as trained"]
    record = {
        "checked": True, "mr_orientation": source_code, "network_orientation": geometry.orientation,
        "reoriented": not reorientation.is_identity, "mr_spacing_zyx_mm": [round(v, 6) for v in spacing],
        "training_spacing_zyx_mm": list(geometry.spacing_zyx_mm), "spacing_difference": round(mismatch, 4),
        "spacing_tolerance": geometry.tolerance, "resample_mode": mode,
    }
    resampled = False
    if outside and mode == "auto":
        if slice_thickness_mm is not None and slice_thickness_mm > 0:
            source_slice_spacing = float(mr_image.GetSpacing()[2])
            gap = source_slice_spacing - slice_thickness_mm
            if gap > slice_thickness_mm + 1e-6:
                raise GeometryError(
                    f"{name}: slices {slice_thickness_mm:g} mm thick every {source_slice_spacing:g} mm (gaps of "
                    f"{gap:g} mm, larger than the slices): a 2-D multi-slice acquisition with gaps cannot be "
                    f"resampled to the model's {_fmt_spacing(geometry.spacing_zyx_mm)}; use a contiguous (3-D "
                    "or gap-free) acquisition")
        grid = resampled_grid(mr, geometry.spacing_zyx_mm)
        mr = resample_onto(mr, grid, sitk.sitkLinear, 0.0)
        mask = resample_onto(mask, grid, sitk.sitkNearestNeighbor, 0)
        resampled = True
        parts.append(f"resampled {_fmt_spacing(spacing)} → {_fmt_spacing(geometry.spacing_zyx_mm)} (training "
                     f"spacing; an axis differs by {mismatch:.0%} > {geometry.tolerance:.0%}), sCT interpolated "
                     "back onto the MR's grid")
    elif outside:
        parts.append(f"spacing {_fmt_spacing(spacing)} differs from the training spacing "
                     f"{_fmt_spacing(geometry.spacing_zyx_mm)} by {mismatch:.0%} but --resample never: not "
                     "resampled, the result may be less accurate")
    else:
        parts.append(f"spacing {_fmt_spacing(spacing)} within {geometry.tolerance:.0%} of the training spacing: "
                     "not resampled")
    record["resampled"] = resampled
    record["network_shape_zyx"] = list(mr.GetSize())[::-1]
    record["summary"] = "; ".join(parts)
    return NetworkGrid(mr, mask, reorientation, resampled, record)


def to_mr_grid(network_values: np.ndarray, grid: NetworkGrid, mr_image: sitk.Image, default: float) -> np.ndarray:
    """Values on the network's grid (z, y, x) back on the MR's own grid (float32, z, y, x).

    A pure reorientation is undone exactly; a resampled grid is interpolated (linear), ``default`` beyond the
    network grid's field of view.
    """
    if not grid.resampled:
        return np.ascontiguousarray(grid.reorientation.undo(network_values), dtype=np.float32)
    image = sitk.GetImageFromArray(np.asarray(network_values, dtype=np.float32))
    image.CopyInformation(grid.mr)
    back = resample_onto(image, mr_image, sitk.sitkLinear, default)
    return sitk.GetArrayFromImage(back).astype(np.float32, copy=False)
