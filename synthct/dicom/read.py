"""Reading one DICOM image series into a SimpleITK volume, checked slice by slice."""

from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from synthct.dicom.errors import DicomError
from synthct.dicom.geometry import image_from_slices
from synthct.dicom.identity import identity_of
from synthct.dicom.study import DicomStudy, choose_series, scan_study

ORIENTATION_TOL = 1e-4
"""Largest difference between direction cosines of slices in one series."""
SPACING_REL_TOL = 0.01
SPACING_ABS_TOL_MM = 0.005
"""A gap between neighbouring slices may differ from the series' spacing by 1 % + 0.005 mm."""
IN_PLANE_TOL_MM = 0.02
"""Slices may be offset in-plane from the first by 0.02 mm + 10 % of a pixel (rounded positions), not more."""


@dataclass
class DicomVolume:
    """A DICOM image series as a volume.

    ``image`` is float32 with rescale slope/intercept applied, 3-D, geometry (origin, spacing, direction) from
    ImagePositionPatient / ImageOrientationPatient; ``identity`` holds the attributes a derived series copies
    (see :data:`synthct.dicom.identity.IDENTITY_KEYWORDS`); ``notes`` says what was ignored.
    """

    image: sitk.Image
    series_uid: str
    identity: dict[str, str]
    notes: list[str] = field(default_factory=list)
    slice_thickness_mm: float | None = None
    """SliceThickness of the first slice (mm), when present: with the slice spacing it tells a stack with gaps."""


def slice_thickness_mm(dataset: Dataset) -> float | None:
    """A slice's SliceThickness in mm, None when absent, unreadable or not positive."""
    try:
        value = float(dataset.get("SliceThickness", None) or 0.0)
    except (TypeError, ValueError):
        return None
    return value if value > 0 else None


@dataclass(frozen=True)
class _Slice:
    path: Path
    dataset: Dataset  # a single-frame file's dataset, or a frame's attributes from the functional groups
    orientation: np.ndarray  # row direction, column direction (unit vectors)
    position_mm: np.ndarray
    frame: int | None = None  # 1-based frame number in a multi-frame file

    @property
    def label(self) -> str:
        """The slice in messages: the file name, with the frame number for a frame of a multi-frame file."""
        return self.path.name if self.frame is None else f"{self.path.name} frame {self.frame}"


def read_dicom_series(folder: Path | DicomStudy, series_uid: str | None = None,
                      modality: str | None = None) -> DicomVolume:
    """Read one image series of ``folder`` as a float32 volume.

    ``folder``: a folder (its whole tree, files in any sub-folder) or a DICOMDIR file, read as one study, or a
    :class:`~synthct.dicom.study.DicomStudy` already scanned (``synthct predict``'s cases). The series is chosen by
    :func:`synthct.dicom.study.choose_series`: ``series_uid`` (``--series``: a SeriesInstanceUID, a SeriesNumber or
    a SeriesDescription substring), else the only 3-D series of ``modality`` (None: any; then a study holding a
    single image series is read whatever it is). What was skipped goes to the volume's notes.

    A multi-frame series (Enhanced / Legacy Converted Enhanced MR) is read by :mod:`synthct.dicom.enhanced`;
    ``series_uid`` may then end in ``#STACK`` to choose one of several stacks (echoes, Dixon images, orientations).
    Files without preamble and file meta are read as implicit VR little endian, with a note.
    Raises :class:`DicomError` naming the folder or file for: no image series, several series and none chosen,
    a corrupt file, multi-frame images without functional groups, missing geometry, mixed orientations or matrix
    sizes, a single slice, duplicated positions, missing slices or uneven spacing.
    """
    from synthct.dicom import enhanced  # imports this module: imported here, not at the top

    study = folder if isinstance(folder, DicomStudy) else scan_study(Path(folder))
    study.check()
    folder = study.root
    series_selector, stack_selector = enhanced.split_selector(series_uid)
    chosen, choice_notes = choose_series(study, series_selector, modality)
    notes = [*study.notes, *choice_notes]
    files = [(path, *_read_dataset(path)) for path in chosen.files]
    without_meta = Counter(note for _, _, note in files if note is not None)
    notes.extend(f"{n} file{'s' if n > 1 else ''} in {folder} {note}" for note, n in without_meta.items())
    multi_frame = [path for path, dataset, _ in files if enhanced.is_multi_frame(dataset)]
    if multi_frame:
        if len(multi_frame) != len(files):
            single = [path.name for path, dataset, _ in files if not enhanced.is_multi_frame(dataset)]
            raise DicomError(f"{folder}: series {chosen.series_uid} mixes {len(multi_frame)} multi-frame file(s) "
                             f"({multi_frame[0].name}, ...) and {len(single)} single-frame file(s) ({single[0]}, ...)")
        return enhanced.read_enhanced(folder, [(path, dataset) for path, dataset, _ in files], chosen.series_uid,
                                      stack_selector, notes)
    if stack_selector is not None:
        raise DicomError(f"{folder}: stack '{enhanced.STACK_SEPARATOR}{stack_selector}' chosen, but series "
                         f"{chosen.series_uid} is not a multi-frame (enhanced) object; drop the "
                         f"'{enhanced.STACK_SEPARATOR}...' part of --series")
    slices = [_slice_of(path, dataset) for path, dataset, _ in files]
    try:
        slices = _ordered(folder, slices)
        spacing_z = _slice_spacing(folder, slices)
    except DicomError as exc:
        if not notes:
            raise
        raise DicomError(f"{exc} (also {'; '.join(notes)})") from exc
    first = slices[0].dataset
    row_spacing, column_spacing = (float(v) for v in first.PixelSpacing)
    voxels = np.stack([_pixels(s) for s in slices])
    image = image_from_slices(voxels, np.concatenate(slices[0].orientation), slices[0].position_mm,
                              (column_spacing, row_spacing, spacing_z))
    return DicomVolume(image, chosen.series_uid, identity_of(first), notes, slice_thickness_mm(first))


def _read_dataset(path: Path) -> tuple[Dataset, str | None]:
    """The whole file, and a note when it had no file meta (the transfer syntax is then the one pydicom detected:
    implicit VR little endian, the standard's default, for old archives)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dataset = pydicom.dcmread(path, force=True)
    except Exception as exc:  # pydicom raises many types on damaged files
        raise DicomError(f"{path}: corrupt or unreadable DICOM file ({type(exc).__name__}: {exc})") from exc
    meta = getattr(dataset, "file_meta", None)
    if meta is not None and meta.get("TransferSyntaxUID"):
        return dataset, None
    implicit, little = getattr(dataset, "original_encoding", (True, True))
    if implicit is None:  # nothing was decoded that tells: the standard's default
        implicit, little = True, True
    if not little:
        syntax, said = ExplicitVRBigEndian, "explicit VR big endian detected"
    elif implicit:
        syntax, said = ImplicitVRLittleEndian, "implicit VR little endian assumed"
    else:
        syntax, said = ExplicitVRLittleEndian, "explicit VR little endian detected"
    dataset.file_meta = meta if meta is not None else FileMetaDataset()
    dataset.file_meta.TransferSyntaxUID = syntax
    return dataset, f"read without file meta: {said}"


def _slice_of(path: Path, dataset: Dataset, frame: int | None = None) -> _Slice:
    """``dataset`` (a single-frame file, or one frame's flattened attributes) as a slice with checked geometry."""
    where = f"{path}" if frame is None else f"{path} frame {frame}"
    frames = int(dataset.get("NumberOfFrames", 1) or 1)
    if frame is None and frames > 1:
        raise DicomError(f"{path}: multi-frame image ({frames} frames) without functional groups (SOP class "
                         f"{dataset.get('SOPClassUID', '?')}) is not supported; export the series from the scanner "
                         "or PACS as single-frame (classic) images or as Enhanced MR")
    missing = [k for k in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "Rows", "Columns")
               if k not in dataset or dataset[k].value in (None, "", [])]
    if missing:
        raise DicomError(f"{where}: missing {', '.join(missing)}; cannot place the slice in space")
    if int(dataset.get("SamplesPerPixel", 1) or 1) != 1:
        raise DicomError(f"{where}: colour image (SamplesPerPixel {dataset.SamplesPerPixel}); need greyscale")
    try:
        orientation = np.asarray([float(v) for v in dataset.ImageOrientationPatient], dtype=np.float64)
        position = np.asarray([float(v) for v in dataset.ImagePositionPatient], dtype=np.float64)
        spacing = [float(v) for v in dataset.PixelSpacing]
    except (TypeError, ValueError) as exc:
        raise DicomError(f"{where}: unreadable geometry attributes ({exc})") from exc
    if orientation.shape != (6,) or position.shape != (3,) or len(spacing) != 2:
        raise DicomError(f"{where}: ImageOrientationPatient needs 6 values, ImagePositionPatient 3, PixelSpacing 2")
    if not all(np.isfinite(orientation)) or not all(np.isfinite(position)) or min(spacing) <= 0:
        raise DicomError(f"{where}: geometry not finite or PixelSpacing not positive")
    row, column = orientation[:3], orientation[3:]
    lengths = np.linalg.norm(row), np.linalg.norm(column)
    if min(lengths) < 1e-6 or abs(row @ column) > 1e-3 * lengths[0] * lengths[1]:
        raise DicomError(f"{where}: ImageOrientationPatient {list(orientation)} is not two orthogonal directions")
    row = row / np.linalg.norm(row)
    column = column - (column @ row) * row  # scanners round the cosines: make the pair exactly orthonormal
    return _Slice(path, dataset, np.stack([row, column / np.linalg.norm(column)]), position, frame)


def _ordered(folder: Path | str, slices: list[_Slice]) -> list[_Slice]:
    """Slices sorted by position along the slice normal, after checking they share one plane geometry."""
    reference = slices[0]
    for other in slices[1:]:
        if np.abs(other.orientation - reference.orientation).max() > ORIENTATION_TOL:
            raise DicomError(
                f"{folder}: mixed orientations in one series: {reference.label} has ImageOrientationPatient "
                f"{_fmt(reference.orientation.ravel())}, {other.label} has {_fmt(other.orientation.ravel())}"
            )
        for keyword in ("Rows", "Columns", "PixelSpacing"):
            ref_value, other_value = reference.dataset[keyword].value, other.dataset[keyword].value
            if keyword == "PixelSpacing":
                same = np.allclose([float(v) for v in ref_value], [float(v) for v in other_value], rtol=1e-4)
            else:
                same = int(ref_value) == int(other_value)
            if not same:
                raise DicomError(f"{folder}: {keyword} differs between slices: {reference.label} has "
                                 f"{_plain(ref_value)}, {other.label} has {_plain(other_value)}")
    if len(slices) < 2:
        raise DicomError(f"{folder}: the series has a single slice ({reference.label}); a 3-D volume is needed")
    normal = np.cross(*reference.orientation)
    ordered = sorted(slices, key=lambda s: float(s.position_mm @ normal))
    locations = [float(s.position_mm @ normal) for s in ordered]
    for previous, current, a, b in zip(ordered, ordered[1:], locations, locations[1:], strict=False):
        if b - a < SPACING_ABS_TOL_MM:
            raise DicomError(f"{folder}: {previous.label} and {current.label} are at the same position "
                             f"({a:.3f} mm along the slice normal; several echoes or phases in one series?)")
    in_plane = np.stack([s.position_mm - (s.position_mm @ normal) * normal for s in ordered])
    shift = np.linalg.norm(in_plane - in_plane[0], axis=1)
    worst = int(np.argmax(shift))
    pixel = min(float(v) for v in reference.dataset.PixelSpacing)
    if shift[worst] > IN_PLANE_TOL_MM + 0.1 * pixel:
        raise DicomError(f"{folder}: slices are not stacked along the slice normal (gantry tilt or shear): "
                         f"{ordered[worst].label} is offset {shift[worst]:.3f} mm in-plane from "
                         f"{ordered[0].label}")
    return ordered


def _slice_spacing(folder: Path | str, ordered: list[_Slice]) -> float:
    """The even slice spacing (mm) of an ordered series, or DicomError naming a missing slice or uneven gap."""
    normal = np.cross(*ordered[0].orientation)
    locations = np.asarray([float(s.position_mm @ normal) for s in ordered])
    gaps = np.diff(locations)
    expected = float(np.sort(gaps)[(len(gaps) - 1) // 2])  # lower median: robust to a few missing slices
    tolerance = SPACING_REL_TOL * expected + SPACING_ABS_TOL_MM
    for index, gap in enumerate(gaps):
        if abs(gap - expected) <= tolerance:
            continue
        between = (f"between {ordered[index].label} at {locations[index]:.3f} mm and "
                   f"{ordered[index + 1].label} at {locations[index + 1]:.3f} mm along the slice normal")
        ratio = gap / expected
        if round(ratio) >= 2 and abs(gap - round(ratio) * expected) <= tolerance * round(ratio):
            missing = round(ratio) - 1
            raise DicomError(f"{folder}: missing slice{'s' if missing > 1 else ''}: gap of {gap:.3f} mm {between} "
                             f"(expected spacing {expected:.3f} mm; {missing} slice{'s' if missing > 1 else ''} "
                             "missing)")
        raise DicomError(f"{folder}: uneven slice spacing: gap of {gap:.3f} mm {between} "
                         f"(expected spacing {expected:.3f} mm)")
    return float((locations[-1] - locations[0]) / (len(locations) - 1))


def _pixels(item: _Slice) -> np.ndarray:
    """The slice's values (y, x) as float32 with RescaleSlope / RescaleIntercept applied."""
    dataset = item.dataset
    syntax = getattr(getattr(dataset, "file_meta", None), "TransferSyntaxUID", None)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            stored = np.asarray(dataset.pixel_array)
    except Exception as exc:  # damaged pixel data, or a compressed syntax without a pydicom decoder
        if syntax is not None and syntax.is_compressed:
            return _pixels_by_gdcm(item.path, exc)
        raise DicomError(f"{item.path}: pixel data cannot be read ({type(exc).__name__}: {exc})") from exc
    if stored.shape != (int(dataset.Rows), int(dataset.Columns)):
        raise DicomError(f"{item.path}: pixel data has shape {stored.shape}, expected "
                         f"({dataset.Rows}, {dataset.Columns})")
    slope = float(dataset.get("RescaleSlope", 1) or 1)
    intercept = float(dataset.get("RescaleIntercept", 0) or 0)
    return (stored.astype(np.float64) * slope + intercept).astype(np.float32)


def _pixels_by_gdcm(path: Path, pydicom_error: Exception) -> np.ndarray:
    """Decode one slice with SimpleITK (GDCM: JPEG, JPEG 2000, RLE), rescale applied; DicomError if that fails too."""
    try:
        image = sitk.ReadImage(str(path), sitk.sitkFloat32)
    except RuntimeError as exc:
        raise DicomError(f"{path}: pixel data cannot be decoded ({type(pydicom_error).__name__}: "
                         f"{pydicom_error})") from exc
    array = sitk.GetArrayFromImage(image)
    if array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 2:
        raise DicomError(f"{path}: expected one 2-D slice, decoded shape {array.shape}")
    return array


def _fmt(values: np.ndarray) -> str:
    return "[" + ", ".join(f"{v:.4f}" for v in values) + "]"


def _plain(value: object) -> str:
    if not isinstance(value, str | bytes) and hasattr(value, "__iter__"):
        return "[" + ", ".join(str(v) for v in value) + "]"
    return str(value)
