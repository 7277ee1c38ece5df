"""Building and writing single-frame DICOM image files (Explicit VR Little Endian, one file per slice)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID, ExplicitVRLittleEndian

import synthct
from synthct.dicom.folder import atomic_folder
from synthct.dicom.geometry import SliceStack, ds_text

MANUFACTURER = "synthct"
LO_MAX = 64
"""Longest Long String (LO) value, e.g. SeriesDescription."""


def text_value(text: str, max_length: int | None = None) -> str:
    """``text`` as one DICOM string value: no backslash (the value separator), no control characters, clipped."""
    cleaned = re.sub(r"[\x00-\x1f\x7f]", " ", text.replace("\\", "/")).strip()
    return cleaned[:max_length] if max_length is not None else cleaned


def new_file_dataset(sop_class_uid: str, sop_instance_uid: str) -> FileDataset:
    """An empty dataset with a file meta header for Explicit VR Little Endian and the SOP Common attributes."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class_uid)
    meta.MediaStorageSOPInstanceUID = UID(sop_instance_uid)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = f"SYNTHCT_{synthct.__version__}"[:16]
    dataset = FileDataset("", {}, file_meta=meta, preamble=b"\0" * 128)
    dataset.SOPClassUID = sop_class_uid
    dataset.SOPInstanceUID = sop_instance_uid
    return dataset


def set_character_set(dataset: FileDataset, values: Iterable[str]) -> None:
    """SpecificCharacterSet: UTF-8 (ISO_IR 192) when any value is not ASCII; absent (default repertoire) otherwise."""
    if any(not value.isascii() for value in values):
        dataset.SpecificCharacterSet = "ISO_IR 192"


def set_identity(dataset: FileDataset, identity: Mapping[str, str], study_moment: datetime) -> None:
    """Patient, study and frame-of-reference attributes (the Type 2 ones present even when empty)."""
    dataset.PatientName = identity.get("PatientName", "")
    dataset.PatientID = identity.get("PatientID", "")
    dataset.PatientBirthDate = identity.get("PatientBirthDate", "")
    dataset.PatientSex = identity.get("PatientSex", "")
    dataset.StudyInstanceUID = identity["StudyInstanceUID"]
    dataset.StudyID = identity.get("StudyID", "")
    dataset.StudyDate = identity.get("StudyDate", study_moment.strftime("%Y%m%d"))
    dataset.StudyTime = identity.get("StudyTime", study_moment.strftime("%H%M%S"))
    dataset.AccessionNumber = identity.get("AccessionNumber", "")
    dataset.ReferringPhysicianName = identity.get("ReferringPhysicianName", "")
    dataset.FrameOfReferenceUID = identity["FrameOfReferenceUID"]
    dataset.PositionReferenceIndicator = identity.get("PositionReferenceIndicator", "")
    dataset.PatientPosition = identity.get("PatientPosition", "") or "HFS"
    for keyword in ("IssuerOfPatientID", "PatientAge", "StudyDescription", "BodyPartExamined"):
        if identity.get(keyword):
            setattr(dataset, keyword, identity[keyword])


def set_moments(dataset: FileDataset, moment: datetime) -> None:
    """Series, content and instance-creation date/time."""
    date, time = moment.strftime("%Y%m%d"), moment.strftime("%H%M%S")
    dataset.SeriesDate, dataset.SeriesTime = date, time
    dataset.ContentDate, dataset.ContentTime = date, time
    dataset.InstanceCreationDate, dataset.InstanceCreationTime = date, time


def set_equipment(dataset: FileDataset) -> None:
    """General Equipment: this software as the manufacturer."""
    dataset.Manufacturer = MANUFACTURER
    dataset.ManufacturerModelName = MANUFACTURER
    dataset.SoftwareVersions = synthct.__version__


def set_plane(dataset: FileDataset, stack: SliceStack, index: int) -> None:
    """Image Plane attributes of slice ``index`` (0-based, in stack order)."""
    dataset.ImageOrientationPatient = [ds_text(v) for v in stack.orientation]
    dataset.ImagePositionPatient = [ds_text(v) for v in stack.positions_mm[index]]
    dataset.PixelSpacing = stack.pixel_spacing
    dataset.SliceThickness = ds_text(stack.spacing_mm[2])
    dataset.SpacingBetweenSlices = ds_text(stack.spacing_mm[2])
    dataset.SliceLocation = ds_text(stack.slice_location(index))


def set_pixels(dataset: FileDataset, stored: np.ndarray) -> None:
    """Image Pixel attributes and pixel data of one greyscale slice (y, x), int16 or uint16."""
    if stored.dtype not in (np.int16, np.uint16) or stored.ndim != 2:
        raise TypeError(f"need a 2-D int16 or uint16 slice, got {stored.dtype} {stored.shape}")
    dataset.SamplesPerPixel = 1
    dataset.PhotometricInterpretation = "MONOCHROME2"
    dataset.Rows, dataset.Columns = (int(n) for n in stored.shape)
    dataset.BitsAllocated = 16
    dataset.BitsStored = 16
    dataset.HighBit = 15
    dataset.PixelRepresentation = 1 if stored.dtype == np.int16 else 0
    dataset.PixelData = np.ascontiguousarray(stored.astype(stored.dtype.newbyteorder("<"))).tobytes()


def save(dataset: FileDataset, path: Path) -> None:
    """Write ``dataset`` as a DICOM file (preamble, file meta, Explicit VR Little Endian)."""
    pydicom.dcmwrite(path, dataset, enforce_file_format=True)


def write_series_files(folder: Path, datasets: Iterable[tuple[str, FileDataset]]) -> list[Path]:
    """Write ``(file name, dataset)`` pairs into ``folder`` atomically (temporary folder renamed into place)."""
    folder = Path(folder)
    names = []
    with atomic_folder(folder) as tmp:
        for name, dataset in datasets:
            save(dataset, tmp / name)
            names.append(name)
    return [folder / name for name in names]
