"""Finding DICOM files and the image series in a folder (headers only)."""

from __future__ import annotations

import warnings
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

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
    """One image series in a folder: its UID, description, modality, and its files (sorted by name)."""

    series_uid: str
    description: str
    modality: str
    n_slices: int
    files: tuple[Path, ...]

    def describe(self) -> str:
        """One line for messages: UID, description, slice count, modality."""
        return f"{self.series_uid}  '{self.description}'  {self.n_slices} slice(s)  {self.modality or '?'}"


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
    """The image series directly in ``folder`` (sorted by UID) and notes on what was ignored.

    Non-image objects (RTSTRUCT, RTPLAN, presentation states, any object without pixel data) and non-DICOM
    files are ignored with a note. A DICOM file that cannot be parsed raises :class:`DicomError` naming it.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DicomError(f"{folder}: not a folder")
    files: dict[str, list[Path]] = defaultdict(list)
    descriptions: dict[str, str] = {}
    modalities: dict[str, str] = {}
    ignored: Counter[str] = Counter()
    not_dicom: list[str] = []
    for path in _candidate_files(folder):
        if not is_dicom_file(path):
            not_dicom.append(path.name)
            continue
        header = read_header(path)
        if not is_image_object(header):
            ignored[object_kind(header)] += 1
            continue
        series_uid = str(header.get("SeriesInstanceUID", "") or "").strip()
        if not series_uid:
            raise DicomError(f"{path}: image without SeriesInstanceUID")
        files[series_uid].append(path)
        descriptions.setdefault(series_uid, str(header.get("SeriesDescription", "") or ""))
        modalities.setdefault(series_uid, str(header.get("Modality", "") or ""))
    series = [
        SeriesSummary(uid, descriptions[uid], modalities[uid], len(paths), tuple(paths))
        for uid, paths in sorted(files.items())
    ]
    notes = []
    if ignored:
        count = sum(ignored.values())
        kinds = ", ".join(f"{n} {kind}" if n > 1 else kind for kind, n in sorted(ignored.items()))
        notes.append(f"ignored {count} non-image object{'s' if count > 1 else ''} ({kinds}) in {folder}")
    if not_dicom:
        shown = ", ".join(not_dicom[:5]) + (", ..." if len(not_dicom) > 5 else "")
        plural = "s" if len(not_dicom) > 1 else ""
        notes.append(f"ignored {len(not_dicom)} non-DICOM file{plural} ({shown}) in {folder}")
    return series, notes
