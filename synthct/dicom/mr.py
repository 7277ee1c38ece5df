"""Writing a realistic MR Image Storage series (for tests and demos): scanner-like tags, optional shuffling."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import datetime
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from pydicom.dataset import FileDataset
from pydicom.uid import generate_uid

from synthct.dicom.errors import DicomError
from synthct.dicom.geometry import SliceStack, ds_text, slice_stack
from synthct.dicom.identity import checked_identity
from synthct.dicom.write import (
    LO_MAX,
    new_file_dataset,
    set_character_set,
    set_equipment,
    set_identity,
    set_moments,
    set_pixels,
    set_plane,
    text_value,
    write_series_files,
)

MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
UINT16_MAX = 65535


def write_mr_series(image: sitk.Image, folder: Path, *, identity: Mapping[str, str] | None = None,
                    suffix: str = ".dcm", shuffle_seed: int | None = None,
                    series_description: str = "T1 MPRAGE") -> list[Path]:
    """Write ``image`` (3-D MR, any pixel type) as an MR series into ``folder``; returns the files sorted by name.

    Values are stored as uint16: as they are for integer images within 0..65535, else with RescaleSlope and
    RescaleIntercept (within half a slope). Files are named ``IM0001`` + ``suffix`` (``""`` for none). With
    ``shuffle_seed``, file names and InstanceNumbers are two random permutations of the slice order, so a reader
    must order by ImagePositionPatient. ``identity`` overrides the fresh phantom patient / study / frame of
    reference attributes. The folder is written atomically.
    """
    folder = Path(folder)
    stack = slice_stack(image, str(folder))
    values = stack.voxels.astype(np.float64)
    if values.size == 0 or not np.isfinite(values).all():
        raise DicomError(f"{folder}: the MR is empty or has non-finite (NaN/inf) voxels")
    slope, intercept = _rescale(values)
    stored = np.clip(np.rint((values - intercept) / slope), 0, UINT16_MAX).astype(np.uint16)
    ids = _phantom_identity()
    if identity is not None:
        ids.update(checked_identity(identity))
    n_slices = len(stored)
    file_order, instance_order = np.arange(n_slices), np.arange(n_slices)
    if shuffle_seed is not None:
        rng = np.random.default_rng(shuffle_seed)
        file_order, instance_order = _shuffled(rng, n_slices), _shuffled(rng, n_slices)
    names = [f"IM{int(k) + 1:0{max(4, len(str(n_slices)))}d}{suffix}" for k in file_order]
    datasets = _mr_datasets(stack, stored, (slope, intercept), ids, series_description, instance_order)
    paths = write_series_files(folder, ((names[i], ds) for i, ds in enumerate(datasets)))
    return sorted(paths)


def _shuffled(rng: np.random.Generator, n: int) -> np.ndarray:
    """A random permutation of 0..n-1 that is not the identity (for n > 1)."""
    order = rng.permutation(n)
    if n > 1 and np.array_equal(order, np.arange(n)):
        order = np.roll(order, 1)
    return order


def _rescale(values: np.ndarray) -> tuple[float, float]:
    """(slope, intercept) mapping the values onto uint16; both exactly representable as DS text."""
    low, high = float(values.min()), float(values.max())
    if np.array_equal(values, np.rint(values)) and low >= 0 and high <= UINT16_MAX:
        return 1.0, 0.0
    intercept = float(ds_text(low))
    slope = float(ds_text(max(high - intercept, 1e-6) / (UINT16_MAX - 1)))
    return slope, intercept


def _phantom_identity() -> dict[str, str]:
    study_uid = generate_uid()
    return {
        "PatientName": "PHANTOM^MR",
        "PatientID": f"PHANTOM-{study_uid[-8:]}",
        "PatientBirthDate": "19700101",
        "PatientSex": "O",
        "StudyInstanceUID": study_uid,
        "StudyID": "1",
        "StudyDescription": "MR for radiotherapy planning",
        "AccessionNumber": "",
        "ReferringPhysicianName": "",
        "FrameOfReferenceUID": generate_uid(),
        "PositionReferenceIndicator": "",
        "PatientPosition": "HFS",
        "BodyPartExamined": "HEAD",
    }


def _mr_datasets(stack: SliceStack, stored: np.ndarray, rescale: tuple[float, float], identity: dict[str, str],
                 series_description: str, instance_order: np.ndarray) -> Iterator[FileDataset]:
    moment = datetime.now()
    series_uid = generate_uid()
    description = text_value(series_description, LO_MAX)
    low, high = float(stored.min()) * rescale[0] + rescale[1], float(stored.max()) * rescale[0] + rescale[1]
    for index, slice_values in enumerate(stored):
        dataset = new_file_dataset(MR_IMAGE_STORAGE, generate_uid())
        set_character_set(dataset, [*identity.values(), description])
        set_identity(dataset, identity, moment)
        set_moments(dataset, moment)
        dataset.AcquisitionDate, dataset.AcquisitionTime = dataset.SeriesDate, dataset.SeriesTime
        set_equipment(dataset)
        dataset.Modality = "MR"
        dataset.SeriesInstanceUID = series_uid
        dataset.SeriesNumber = 3
        dataset.SeriesDescription = description
        dataset.ProtocolName = description
        dataset.ImageType = ["ORIGINAL", "PRIMARY", "OTHER"]
        dataset.InstanceNumber = int(instance_order[index]) + 1
        dataset.AcquisitionNumber = 1
        dataset.PatientOrientation = ""
        dataset.ScanningSequence = ["GR", "IR"]
        dataset.SequenceVariant = ["SP", "MP"]
        dataset.ScanOptions = ""
        dataset.MRAcquisitionType = "3D"
        dataset.SequenceName = "*tfl3d1_16ns"
        dataset.AngioFlag = "N"
        dataset.RepetitionTime = "2300"
        dataset.EchoTime = "2.98"
        dataset.InversionTime = "900"
        dataset.FlipAngle = "9"
        dataset.EchoTrainLength = 1
        dataset.EchoNumbers = [1]
        dataset.NumberOfAverages = "1"
        dataset.ImagingFrequency = "123.2"
        dataset.ImagedNucleus = "1H"
        dataset.MagneticFieldStrength = "3"
        dataset.PixelBandwidth = "240"
        dataset.ReceiveCoilName = "HeadNeck_20"
        set_plane(dataset, stack, index)
        set_pixels(dataset, slice_values)
        if rescale != (1.0, 0.0):  # as some scanners do; not part of the standard MR IOD (dciodvfy warns)
            dataset.RescaleIntercept = ds_text(rescale[1])
            dataset.RescaleSlope = ds_text(rescale[0])
        dataset.WindowCenter = ds_text((low + high) / 2)
        dataset.WindowWidth = ds_text(max(high - low, 1.0))
        yield dataset
