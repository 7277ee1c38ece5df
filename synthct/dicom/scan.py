"""Finding DICOM files and the image series in a folder (headers only)."""

from __future__ import annotations

import warnings
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import SupportsFloat, SupportsIndex

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import UID

from synthct.dicom.errors import DicomError

NON_IMAGE_MODALITIES = frozenset(
    {"RTSTRUCT", "RTPLAN", "RTDOSE", "RTIMAGE", "RTRECORD", "SEG", "REG", "PR", "KO", "SR"}
)
"""Objects ignored even when they carry pixel data (doses, portal images, segmentations): not a patient volume."""

_HEADERLESS_GROUPS = (b"\x02\x00", b"\x08\x00")  # a file without preamble starts with group 0002 or 0008 (LE)


@dataclass(frozen=True)
class SeriesSummary:
    """One image series (its files may lie in several folders): identification, size and geometry from the headers.

    ``n_slices`` counts files, and frames for a multi-frame object (NumberOfFrames). ``orientations``: the distinct
    ImageOrientationPatient values (rounded to 3 decimals) of its slices/frames; several mean a multi-plane localizer.
    ``spacing_mm``: (column, row, slice) spacing, the slice spacing being the median gap between slice positions
    (None when unknown).
    """

    series_uid: str
    description: str
    modality: str
    n_slices: int
    files: tuple[Path, ...]
    series_number: int | None = None
    image_type: tuple[str, ...] = ()
    orientations: tuple[tuple[float, ...], ...] = ()
    spacing_mm: tuple[float, float, float | None] | None = None
    study_uid: str = ""
    patient_id: str = ""
    multi_frame: bool = False
    """Frames of multi-frame (Enhanced) objects: their stacks may differ in orientation."""
    slices_per_orientation: tuple[int, ...] = ()
    """Slices/frames in each of ``orientations``."""

    @property
    def is_localizer(self) -> bool:
        """ImageType contains LOCALIZER (scouts, survey scans)."""
        return "LOCALIZER" in self.image_type

    @property
    def plane(self) -> str:
        """axial, sagittal, coronal or oblique (normal more than 10° from every axis); 'N orientations'; '?'."""
        if len(self.orientations) > 1:
            return f"{len(self.orientations)} orientations"
        if not self.orientations:
            return "orientation ?"
        return plane_name(self.orientations[0])

    def describe(self) -> str:
        """One line for messages: number, description, modality, slices, plane, spacing, localizer, UID."""
        number = "?" if self.series_number is None else str(self.series_number)
        slices = f"{self.n_slices} slice{'s' if self.n_slices != 1 else ''}"
        parts = [f"[{number}] '{self.description}'", self.modality or "?", slices, self.plane]
        if self.spacing_mm is not None:
            parts.append(" × ".join("?" if v is None else f"{v:.3g}" for v in self.spacing_mm) + " mm")
        if self.is_localizer:
            parts.append("localizer")
        parts.append(f"UID {self.series_uid}")
        return "  ".join(parts)


def plane_name(orientation: tuple[float, ...]) -> str:
    """The plane of an ImageOrientationPatient: the axis its normal is within 10° of, else oblique."""
    row, column = np.asarray(orientation[:3], float), np.asarray(orientation[3:6], float)
    normal = np.cross(row, column)
    length = float(np.linalg.norm(normal))
    if length < 1e-6:
        return "orientation ?"
    normal = np.abs(normal) / length
    axis = int(np.argmax(normal))
    if normal[axis] < _PLANE_COS:
        return "oblique"
    return ("sagittal", "coronal", "axial")[axis]


_PLANE_COS = float(np.cos(np.radians(10.0)))


@dataclass(frozen=True)
class FileRecord:
    """What a scan keeps of one DICOM file's header (the pixel data is never read)."""

    path: Path
    kind: str
    """Modality, else the SOP class name (see :func:`object_kind`)."""
    image: bool
    """An image object that can be part of a patient volume (:func:`is_image_object`)."""
    patient_id: str
    study_uid: str
    series_uid: str
    series_number: int | None
    description: str
    modality: str
    image_type: tuple[str, ...]
    frames: int
    orientations: tuple[tuple[float, ...], ...]
    """ImageOrientationPatient per frame (one for a single-frame file); empty when absent."""
    positions: tuple[tuple[float, ...], ...]
    """ImagePositionPatient per frame; empty when absent."""
    pixel_spacing: tuple[float, ...] | None
    slice_thickness: float | None


def file_record(path: Path) -> FileRecord:
    """The header facts of a DICOM file (:func:`read_header`, so a damaged file raises DicomError naming it).

    Geometry comes from the top level of a single-frame file, or from the per-frame and shared functional groups of
    a multi-frame (Enhanced) object.
    """
    header = read_header(path)
    try:
        return _record_of(path, header)
    except DicomError:
        raise
    except Exception as exc:  # a garbled value that pydicom cannot convert
        raise DicomError(f"{path}: unreadable header value ({type(exc).__name__}: {exc})") from exc


def _record_of(path: Path, header: Dataset) -> FileRecord:
    image = is_image_object(header)
    series_uid = _text(header, "SeriesInstanceUID")
    if image and not series_uid:
        raise DicomError(f"{path}: image without SeriesInstanceUID")
    try:
        number: int | None = int(str(header.get("SeriesNumber", "")).strip())
    except ValueError:
        number = None
    image_type = tuple(str(v).strip().upper() for v in _values(header.get("ImageType")))
    frames = max(1, int(header.get("NumberOfFrames", 1) or 1))
    orientations, positions, pixel_spacing = _geometry(header) if image else ((), (), None)
    thickness = _floats(header.get("SliceThickness"))
    return FileRecord(path, object_kind(header), image, _text(header, "PatientID"), _text(header, "StudyInstanceUID"),
                      series_uid, number, _text(header, "SeriesDescription"), _text(header, "Modality"), image_type,
                      frames, orientations, positions, pixel_spacing, thickness[0] if thickness else None)


def _geometry(header: Dataset) -> tuple[tuple[tuple[float, ...], ...], tuple[tuple[float, ...], ...],
                                        tuple[float, ...] | None]:
    """(orientation per frame, position per frame, pixel spacing) of a header; missing values are left out."""
    per_frame = header.get("PerFrameFunctionalGroupsSequence") or []
    shared_sequence = header.get("SharedFunctionalGroupsSequence") or []
    shared = shared_sequence[0] if len(shared_sequence) else Dataset()
    if not per_frame:
        orientation = _floats(header.get("ImageOrientationPatient"))
        position = _floats(header.get("ImagePositionPatient"))
        pixel_spacing = _floats(header.get("PixelSpacing"))
        return ((orientation,) if len(orientation) == 6 else (), (position,) if len(position) == 3 else (),
                pixel_spacing if len(pixel_spacing) == 2 else None)
    orientations, positions = [], []
    spacing: tuple[float, ...] | None = None
    for item in per_frame:
        orientation = _floats(_group_value(item, shared, "PlaneOrientationSequence", "ImageOrientationPatient"))
        position = _floats(_group_value(item, shared, "PlanePositionSequence", "ImagePositionPatient"))
        if len(orientation) == 6:
            orientations.append(orientation)
        if len(position) == 3:
            positions.append(position)
        if spacing is None:
            values = _floats(_group_value(item, shared, "PixelMeasuresSequence", "PixelSpacing"))
            spacing = values if len(values) == 2 else None
    return tuple(orientations), tuple(positions), spacing


def _group_value(item: Dataset, shared: Dataset, sequence: str, keyword: str) -> object:
    """A functional group attribute: the frame's own, else the shared one."""
    for source in (item, shared):
        groups = source.get(sequence)
        if groups and keyword in groups[0]:
            return groups[0][keyword].value
    return None


def _text(header: Dataset, keyword: str) -> str:
    return str(header.get(keyword, "") or "").strip()


def _values(value: object) -> list[object]:
    if value is None or value == "":
        return []
    if isinstance(value, str | bytes) or not hasattr(value, "__iter__"):
        return [value]
    return list(value)


def _floats(value: object) -> tuple[float, ...]:
    try:
        return tuple(_float(v) for v in _values(value))
    except (TypeError, ValueError):
        return ()


def _float(value: object) -> float:
    """``float(value)`` for what float() accepts (numbers, DS/IS values, text, bytes); TypeError otherwise."""
    if isinstance(value, str | bytes | SupportsFloat | SupportsIndex):
        return float(value)
    raise TypeError(f"not a number: {value!r}")


def summarize(records: list[FileRecord]) -> list[SeriesSummary]:
    """The image series of ``records`` (non-image records are left out), sorted by SeriesNumber, then UID."""
    by_series: dict[str, list[FileRecord]] = defaultdict(list)
    for record in sorted(records, key=lambda r: str(r.path)):
        if record.image:
            by_series[record.series_uid].append(record)
    summaries = [_summary(uid, members) for uid, members in by_series.items()]
    return sorted(summaries, key=lambda s: (s.series_number is None, s.series_number or 0, s.series_uid))


def _summary(series_uid: str, members: list[FileRecord]) -> SeriesSummary:
    first = members[0]
    distinct: list[tuple[float, ...]] = []
    counts: list[int] = []
    for record in members:
        for orientation in record.orientations:
            for index, known in enumerate(distinct):
                if max(abs(a - b) for a, b in zip(orientation, known, strict=True)) <= _ORIENTATION_SAME:
                    counts[index] += 1
                    break
            else:
                distinct.append(tuple(round(v, 3) + 0.0 for v in orientation))
                counts.append(1)
    spacing = None
    if first.pixel_spacing is not None:
        slice_gap = _slice_gap(members, distinct[0]) if len(distinct) == 1 else None
        if slice_gap is None and len(distinct) <= 1:
            slice_gap = first.slice_thickness
        spacing = (first.pixel_spacing[1], first.pixel_spacing[0], slice_gap)
    return SeriesSummary(series_uid, first.description, first.modality, sum(r.frames for r in members),
                         tuple(r.path for r in members), first.series_number, first.image_type, tuple(distinct),
                         spacing, first.study_uid, first.patient_id, any(r.frames > 1 for r in members),
                         tuple(counts))


_ORIENTATION_SAME = 1e-3
"""Direction cosines closer than this count as one orientation in a summary."""


def _slice_gap(members: list[FileRecord], orientation: tuple[float, ...]) -> float | None:
    """Median gap (mm) between the distinct slice positions along the normal; None with fewer than two."""
    normal = np.cross(orientation[:3], orientation[3:6])
    locations = sorted({round(float(np.dot(position, normal)), 3) for r in members for position in r.positions})
    if len(locations) < 2:
        return None
    return float(np.median(np.diff(locations)))


def is_dicom_file(path: Path) -> bool:
    """True for a DICOM file, whatever its name: a 'DICM' preamble, or a parseable header without one."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            head = handle.read(132)
    except OSError:
        return False
    if len(head) == 132 and head[128:132] == b"DICM":
        return True
    if len(head) < 8 or head[:2] not in _HEADERLESS_GROUPS:
        return False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dataset = pydicom.dcmread(path, force=True, stop_before_pixels=True, specific_tags=["SOPClassUID"])
        return bool(str(dataset.get("SOPClassUID", "")).strip())
    except Exception:  # any parse failure means "not DICOM" for this cheap test
        return False


def _candidate_files(folder: Path) -> list[Path]:
    """Regular files directly in ``folder``, sorted by name; hidden files (``.name``) are skipped."""
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


def contains_dicom(folder: Path) -> bool:
    """True if ``folder`` directly holds at least one DICOM file."""
    folder = Path(folder)
    if not folder.is_dir():
        return False
    return any(is_dicom_file(path) for path in _candidate_files(folder))


def read_header(path: Path) -> Dataset:
    """The header of a DICOM file (large values such as pixel data are not loaded), checked for damage.

    pydicom stops quietly at a truncated or garbled header, so the header must also be a plausible object: a
    SOPClassUID (matching the file meta's), and pixel data in an image storage object. DicomError names the file.
    """
    with warnings.catch_warnings():  # values are decoded lazily: keep pydicom's warnings on damaged values quiet
        warnings.simplefilter("ignore")
        try:
            header = pydicom.dcmread(path, defer_size=1024, force=not _has_preamble(path))
        except Exception as exc:  # pydicom raises many types on damaged files; all mean "corrupt" here
            raise DicomError(f"{path}: corrupt or unreadable DICOM file ({type(exc).__name__}: {exc})") from exc
        _check_plausible(path, header)
    return header


def _check_plausible(path: Path, header: Dataset) -> None:
    try:
        sop_class = str(header.get("SOPClassUID", "") or "").strip()
        meta_class = str(getattr(header, "file_meta", Dataset()).get("MediaStorageSOPClassUID", "") or "").strip()
    except Exception as exc:  # a garbled value that cannot even be decoded
        raise DicomError(f"{path}: corrupt DICOM file ({type(exc).__name__}: {exc})") from exc
    if not sop_class:
        raise DicomError(f"{path}: corrupt DICOM file (no SOPClassUID: truncated or damaged header)")
    if meta_class and meta_class != sop_class:
        raise DicomError(f"{path}: corrupt DICOM file (SOPClassUID {sop_class} differs from the file meta's "
                         f"{meta_class})")
    if "Image Storage" in UID(sop_class).name and "PixelData" not in header:
        raise DicomError(f"{path}: corrupt DICOM file ({UID(sop_class).name} without pixel data: truncated?)")


def _has_preamble(path: Path) -> bool:
    with open(path, "rb") as handle:
        head = handle.read(132)
    return len(head) == 132 and head[128:132] == b"DICM"


def object_kind(dataset: Dataset) -> str:
    """A short name for a DICOM object: its modality, else its SOP class name."""
    modality = str(dataset.get("Modality", "") or "").strip()
    if modality:
        return modality
    sop_class = str(dataset.get("SOPClassUID", "") or "").strip()
    return UID(sop_class).name if sop_class else "unknown object"


def is_image_object(dataset: Dataset) -> bool:
    """True for an object with pixel data that can be part of a patient image volume."""
    return "PixelData" in dataset and object_kind(dataset) not in NON_IMAGE_MODALITIES


def find_series(folder: Path) -> tuple[list[SeriesSummary], list[str]]:
    """The image series directly in ``folder`` (sorted by SeriesNumber, then UID) and notes on what was ignored.

    Non-image objects (RTSTRUCT, RTPLAN, presentation states, any object without pixel data), DICOMDIR files and
    non-DICOM files are ignored with a note. A DICOM file that cannot be parsed raises :class:`DicomError` naming it.
    (:mod:`synthct.dicom.study` scans whole trees and DICOMDIR exports.)
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DicomError(f"{folder}: not a folder")
    records, notes, errors = scan_files(folder, _candidate_files(folder))
    if errors:
        raise DicomError(errors[0])
    return summarize(records), notes


def scan_files(folder: Path, paths: list[Path]) -> tuple[list[FileRecord], list[str], list[str]]:
    """Header records of the DICOM files among ``paths`` (files of ``folder``), notes on what was ignored there
    (non-image objects, DICOMDIR files, non-DICOM files), and errors (a damaged file, named)."""
    records: list[FileRecord] = []
    errors: list[str] = []
    not_dicom: list[str] = []
    directories: list[str] = []
    for path in paths:
        if not is_dicom_file(path):
            not_dicom.append(path.name)
            continue
        try:
            records.append(file_record(path))
        except DicomError as exc:
            if is_dicomdir(path):
                directories.append(path.name)
            else:
                errors.append(str(exc))
    return records, ignored_notes(folder, records, not_dicom, directories), errors


def ignored_notes(folder: Path, records: Sequence[FileRecord], not_dicom: Sequence[str] = (),
                  directories: Sequence[str] = ()) -> list[str]:
    """Notes on the non-image objects among ``records``, and on DICOMDIR and non-DICOM files, in ``folder``."""
    ignored = Counter(r.kind for r in records if not r.image)
    notes = []
    if ignored:
        count = sum(ignored.values())
        kinds = ", ".join(f"{n} {kind}" if n > 1 else kind for kind, n in sorted(ignored.items()))
        notes.append(f"ignored {count} non-image object{'s' if count > 1 else ''} ({kinds}) in {folder}")
    if directories:
        notes.append(f"ignored DICOMDIR file{'s' if len(directories) > 1 else ''} ({', '.join(directories)}) in "
                     f"{folder}")
    if not_dicom:
        shown = ", ".join(not_dicom[:5]) + (", ..." if len(not_dicom) > 5 else "")
        plural = "s" if len(not_dicom) > 1 else ""
        notes.append(f"ignored {len(not_dicom)} non-DICOM file{plural} ({shown}) in {folder}")
    return notes


MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"
"""The SOP class of a DICOMDIR (Media Storage Directory Storage)."""


def is_dicomdir(path: Path) -> bool:
    """True for a DICOMDIR file (file meta's MediaStorageSOPClassUID is Media Storage Directory), whatever its name."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            meta = pydicom.filereader.read_file_meta_info(path)
    except Exception:  # not DICOM, or no file meta: not a DICOMDIR
        return False
    return str(meta.get("MediaStorageSOPClassUID", "") or "").strip() == MEDIA_STORAGE_DIRECTORY
