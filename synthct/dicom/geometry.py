"""Geometry between SimpleITK images and DICOM slices (patient coordinates LPS, mm).

A SimpleITK direction matrix has the image axes as columns: x = the DICOM row direction (first three values of
ImageOrientationPatient), y = the column direction (last three), z = the slice normal. DICOM slices are stacked
along ``row × column``; an image whose z axis points the other way (left-handed) is written with its slices
reversed, which describes the same voxels in space.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from pydicom.valuerep import format_number_as_ds

from synthct.dicom.errors import DicomError


@dataclass(frozen=True)
class SliceStack:
    """A 3-D image as DICOM slices: voxels (z, y, x) in slice order, and each slice's plane."""

    voxels: np.ndarray
    orientation: tuple[float, ...]  # ImageOrientationPatient: row direction, column direction
    positions_mm: np.ndarray  # (n_slices, 3) ImagePositionPatient of each slice
    spacing_mm: tuple[float, float, float]  # (x, y, z): column spacing, row spacing, slice spacing
    normal: np.ndarray  # slice normal, row × column

    @property
    def pixel_spacing(self) -> list[str]:
        """PixelSpacing (row spacing, column spacing) as DS text."""
        return [ds_text(self.spacing_mm[1]), ds_text(self.spacing_mm[0])]

    def slice_location(self, index: int) -> float:
        """Position of slice ``index`` along the normal (mm)."""
        return float(self.positions_mm[index] @ self.normal)


def ds_text(value: float) -> str:
    """A number as DICOM decimal string text (at most 16 characters)."""
    value = float(value)
    if value == 0.0:
        return "0"
    return format_number_as_ds(value)


def slice_stack(image: sitk.Image, where: str) -> SliceStack:
    """Split a 3-D single-component image into DICOM slice planes. ``where`` names the output in errors."""
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise DicomError(
            f"{where}: need a single-component 3-D image, got {image.GetDimension()}-D with "
            f"{image.GetNumberOfComponentsPerPixel()} component(s)"
        )
    voxels = sitk.GetArrayFromImage(image)
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    spacing = np.asarray(image.GetSpacing(), dtype=np.float64)
    origin = np.asarray(image.GetOrigin(), dtype=np.float64)
    row, column, axis = direction[:, 0], direction[:, 1], direction[:, 2]
    if not np.allclose(direction.T @ direction, np.eye(3), atol=1e-5):
        raise DicomError(f"{where}: image direction is not orthonormal ({image.GetDirection()})")
    normal = np.cross(row, column)
    if float(axis @ normal) < 0:  # left-handed: the same voxels, stacked the other way
        voxels = voxels[::-1]
        origin = origin + (voxels.shape[0] - 1) * spacing[2] * axis
    steps = np.arange(voxels.shape[0], dtype=np.float64)[:, None] * spacing[2]
    positions = origin[None, :] + steps * normal[None, :]
    orientation = tuple(float(v) for v in (*row, *column))
    spacing_xyz = (float(spacing[0]), float(spacing[1]), float(spacing[2]))
    return SliceStack(np.ascontiguousarray(voxels), orientation, positions, spacing_xyz, normal)


def image_from_slices(voxels: np.ndarray, orientation: np.ndarray, first_position_mm: np.ndarray,
                      spacing_mm: tuple[float, float, float]) -> sitk.Image:
    """A SimpleITK image from slices (z, y, x) stacked along ``row × column``, starting at ``first_position_mm``."""
    row, column = orientation[:3], orientation[3:]
    normal = np.cross(row, column)
    image = sitk.GetImageFromArray(voxels)
    image.SetOrigin(tuple(float(v) for v in first_position_mm))
    image.SetSpacing(tuple(float(s) for s in spacing_mm))
    image.SetDirection(tuple(float(v) for v in np.stack([row, column, normal], axis=1).ravel()))
    return image
