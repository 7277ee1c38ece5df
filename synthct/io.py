"""Medical image I/O on SimpleITK, and geometry checks.

Arrays follow SimpleITK's numpy view: axes (z, y, x). Sizes and spacings reported by SimpleITK are (x, y, z);
the messages below say which order they use.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import SimpleITK as sitk

from synthct.atomic import atomic_path
from synthct.integrity import (
    DataLayout,
    IncompleteImageError,
    check_decoded,
    check_read,
    check_stored,
    data_layout,
)

_T = TypeVar("_T")

IMAGE_SUFFIXES = (".mha", ".mhd", ".nii.gz", ".nii", ".nrrd")
"""File types read as images (a folder is read as a DICOM series)."""


class ImageError(ValueError):
    """An input image is missing, unreadable or unusable; the message names the file and the problem."""


@dataclass(frozen=True)
class Geometry:
    """Physical geometry of an image, in SimpleITK order: size and spacing (x, y, z), origin in mm."""

    size: tuple[int, ...]
    spacing_mm: tuple[float, ...]
    origin_mm: tuple[float, ...]
    direction: tuple[float, ...]

    @classmethod
    def of(cls, image: sitk.Image | sitk.ImageFileReader) -> Geometry:
        """Geometry of an image, or of a file reader after ``ReadImageInformation`` (header only)."""
        return cls(
            tuple(int(s) for s in image.GetSize()),
            tuple(float(s) for s in image.GetSpacing()),
            tuple(float(o) for o in image.GetOrigin()),
            tuple(float(d) for d in image.GetDirection()),
        )


def strip_image_suffix(name: str) -> str:
    """``'1BA001.nii.gz'`` → ``'1BA001'``: the file name without a known image suffix."""
    lowered = name.lower()
    for suffix in IMAGE_SUFFIXES:
        if lowered.endswith(suffix):
            return name[: -len(suffix)]
    return name


def is_image_path(path: Path) -> bool:
    """True for a file with a known image suffix."""
    return path.is_file() and path.name.lower().endswith(IMAGE_SUFFIXES)


def read_image(path: str | os.PathLike[str], require_3d: bool = True) -> sitk.Image:
    """Read an image file (.mha/.mhd/.nii/.nii.gz/.nrrd) or a DICOM series folder, complete or not at all.

    A file's voxel data must fill the size its header describes and compressed data must be intact (gzip CRC and
    length, zlib Adler-32), see :mod:`synthct.integrity`: SimpleITK alone zero-fills a truncated ``.nii.gz``/``.nii``.
    Raises :class:`ImageError` naming the file if it is missing, unreadable, truncated ("truncated: N of M bytes"),
    corrupt ("corrupt compressed data: …"), or (with ``require_3d``) not a single-component 3-D image.
    """
    path = Path(path)
    if not path.exists():
        raise ImageError(f"{path}: file not found")
    layout: DataLayout | None = None
    try:
        if path.is_dir():
            reader = sitk.ImageSeriesReader()
            series = reader.GetGDCMSeriesIDs(str(path))
            if not series:
                raise ImageError(f"{path}: folder holds no DICOM series")
            reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(path), series[0]))
            image = reader.Execute()
        else:
            layout = _checked_layout(path)
            image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        if layout is not None:
            _raise_incomplete(path, check_decoded, layout)
        first_line = str(exc).strip().splitlines()[-1] if str(exc).strip() else "unknown error"
        raise ImageError(f"{path}: cannot be read as an image ({first_line})") from exc
    if layout is not None:
        _raise_incomplete(path, check_read, layout, image)
    if require_3d:
        _check_3d(path, image.GetDimension(), image.GetNumberOfComponentsPerPixel(), image.GetSize())
    return image


def _checked_layout(path: Path, trailer: bool = False) -> DataLayout | None:
    """The file's data layout after the checks that need no decoding (:func:`synthct.integrity.check_stored`);
    None for a file whose layout is not checked. Raises :class:`ImageError` naming the file."""
    if not path.is_file():
        return None
    layout: DataLayout | None = _raise_incomplete(path, data_layout)
    if layout is not None:
        _raise_incomplete(path, check_stored, layout, trailer)
    return layout


def _raise_incomplete(path: Path, check: Callable[..., _T], *args: Any) -> _T:
    """``check(path, *args)`` (a :mod:`synthct.integrity` function); its :class:`IncompleteImageError` or I/O error
    becomes an :class:`ImageError` naming the file."""
    try:
        return check(path, *args)
    except IncompleteImageError as exc:
        raise ImageError(str(exc)) from exc
    except OSError as exc:
        raise ImageError(f"{path}: cannot be read ({exc.strerror or exc})") from exc


def _check_3d(path: Path, dimension: int, components: int, size: tuple[int, ...]) -> None:
    """Raise :class:`ImageError` unless the image is a non-empty, single-component 3-D image."""
    if dimension != 3:
        raise ImageError(f"{path}: expected a 3-D image, got {dimension}-D of size {size}")
    if components != 1:
        raise ImageError(f"{path}: expected one component per voxel, got {components}")
    if min(size) < 1:
        raise ImageError(f"{path}: image is empty (size {size})")


def read_header_geometry(path: str | os.PathLike[str]) -> Geometry:
    """Geometry from the image header only (no voxels decoded). Raises :class:`ImageError` naming the file.

    Also checks what needs no decoding (:func:`synthct.integrity.check_stored`): raw data length, a compressed
    MetaImage's ``CompressedDataSize``, a gzip stream's length trailer. Damage inside a compressed stream is found
    only by :func:`read_image`.
    """
    path = Path(path)
    layout = _checked_layout(path, trailer=True)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        if layout is not None:  # SimpleITK's reason can mislead ("Unable to determine ImageIO reader"): decode
            _raise_incomplete(path, check_decoded, layout)
        text = str(exc).strip()
        reason = text.splitlines()[-1] if text else "unknown error"
        raise ImageError(f"{path}: cannot be read as an image ({reason})") from exc
    _check_3d(path, reader.GetDimension(), reader.GetNumberOfComponents(), reader.GetSize())
    return Geometry.of(reader)


def read_array(path: str | os.PathLike[str], dtype: type = np.float32) -> tuple[np.ndarray, sitk.Image]:
    """Read an image and return ``(array (z, y, x) as dtype, image)``; the image carries the geometry."""
    image = read_image(path)
    return sitk.GetArrayFromImage(image).astype(dtype, copy=False), image


def array_to_image(array: np.ndarray, reference: sitk.Image | Geometry) -> sitk.Image:
    """A (z, y, x) array as an image with the geometry of ``reference``."""
    image = sitk.GetImageFromArray(array)
    if isinstance(reference, Geometry):
        image.SetSpacing(reference.spacing_mm)
        image.SetOrigin(reference.origin_mm)
        image.SetDirection(reference.direction)
    else:
        image.CopyInformation(reference)
    return image


def write_image(image: sitk.Image, path: str | os.PathLike[str], compress: bool = True) -> Path:
    """Write ``image`` atomically (temporary file, then rename); compressed by default. Returns the path."""
    path = Path(path)
    with atomic_path(path) as tmp:
        sitk.WriteImage(image, str(tmp), useCompression=compress)
    return path


def geometry_differences(
    reference: sitk.Image | Geometry,
    other: sitk.Image | Geometry,
    spacing_tol: float = 1e-3,
    origin_tol_mm: float = 1e-2,
    direction_tol: float = 1e-4,
) -> list[str]:
    """Human-readable differences between two geometries (empty when they match within tolerance).

    Tolerances: spacing relative, origin absolute in mm, direction cosines absolute.
    """
    ref = reference if isinstance(reference, Geometry) else Geometry.of(reference)
    oth = other if isinstance(other, Geometry) else Geometry.of(other)
    problems: list[str] = []
    if ref.size != oth.size:
        problems.append(f"size (x, y, z) {oth.size} != {ref.size}")
        return problems
    spacing_rel = np.abs(np.subtract(oth.spacing_mm, ref.spacing_mm)) / np.maximum(np.abs(ref.spacing_mm), 1e-12)
    if np.any(spacing_rel > spacing_tol):
        problems.append(
            f"spacing (x, y, z) {_fmt(oth.spacing_mm)} mm != {_fmt(ref.spacing_mm)} mm "
            f"(relative difference up to {spacing_rel.max():.2e}, tolerance {spacing_tol:g})"
        )
    origin_diff = np.abs(np.subtract(oth.origin_mm, ref.origin_mm))
    if np.any(origin_diff > origin_tol_mm):
        problems.append(
            f"origin {_fmt(oth.origin_mm)} mm != {_fmt(ref.origin_mm)} mm "
            f"(off by up to {origin_diff.max():.4g} mm, tolerance {origin_tol_mm:g} mm)"
        )
    direction_diff = np.abs(np.subtract(oth.direction, ref.direction))
    if np.any(direction_diff > direction_tol):
        problems.append(
            f"direction {_fmt(oth.direction)} != {_fmt(ref.direction)} "
            f"(off by up to {direction_diff.max():.3g}, tolerance {direction_tol:g})"
        )
    return problems


def check_same_geometry(
    reference: sitk.Image | Geometry,
    other: sitk.Image | Geometry,
    reference_name: str = "reference",
    other_name: str = "image",
    **tolerances: float,
) -> None:
    """Raise :class:`ImageError` naming both images and each differing property if geometries differ."""
    problems = geometry_differences(reference, other, **tolerances)
    if problems:
        raise ImageError(f"{other_name}: geometry differs from {reference_name}: " + "; ".join(problems))


def _fmt(values: tuple[float, ...] | tuple[int, ...]) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"
