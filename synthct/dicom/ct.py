"""Writing a synthetic CT as a DICOM CT Image Storage series for treatment planning systems."""

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
from synthct.dicom.identity import derived_identity
from synthct.dicom.transverse import slice_plane
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

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
RESCALE_INTERCEPT_HU = -1024
"""Stored value = HU + 1024 in int16 (RescaleSlope 1): air is 0, HU from -33792 to 31743 representable."""
WINDOWS = (("SOFT TISSUE", 40, 400), ("BONE", 300, 1500))
"""Display windows (name, centre HU, width HU); the first is the default."""


def write_ct_series(sct: sitk.Image, folder: Path, *, identity: Mapping[str, str] | None, model_name: str,
                    model_sha256: str, series_number: int = 901) -> list[Path]:
    """Write ``sct`` (HU, any pixel type, 3-D) as a CT series into ``folder``, one file per slice; returns the files.

    HU are rounded to integers and stored as int16 with RescaleSlope 1, RescaleIntercept -1024. The geometry
    (oblique included) comes from the image; SliceThickness = the written slice spacing; ImageType value 3 is AXIAL
    for transverse slices and SAGITTAL / CORONAL / OBLIQUE otherwise (:func:`~synthct.dicom.transverse.slice_plane`;
    :func:`~synthct.dicom.transverse.dicom_ct_grid` resamples a non-transverse sCT for planning). With
    ``identity`` (from :class:`~synthct.dicom.DicomVolume`), patient, study and FrameOfReferenceUID are copied, so
    the sCT lies in the MR's frame; without it (or with one lacking StudyInstanceUID, e.g.
    ``{"BodyPartExamined": "HEAD"}`` for a non-DICOM MR), fresh UIDs and PatientName ``SYNTHCT^NO SOURCE IDENTITY``
    / PatientID ``SYNTHCT-<hex>`` mark it as synthetic. Series and instance UIDs are always new. The folder is
    written atomically and replaces an existing one.
    """
    folder = Path(folder)
    stack = slice_stack(sct, str(folder))
    hu = stack.voxels.astype(np.float64)
    if hu.size == 0 or not np.isfinite(hu).all():
        raise DicomError(f"{folder}: the synthetic CT is empty or has non-finite (NaN/inf) voxels")
    stored = np.clip(np.rint(hu - RESCALE_INTERCEPT_HU), -32768, 32767).astype(np.int16)
    ids = derived_identity(identity)
    if not 0 <= int(series_number) <= 2**31 - 1:
        raise DicomError(f"{folder}: series number {series_number} out of range")
    return write_series_files(folder, _ct_datasets(stack, stored, ids, model_name, model_sha256, int(series_number)))


def _ct_datasets(stack: SliceStack, stored: np.ndarray, identity: dict[str, str], model_name: str,
                 model_sha256: str, series_number: int) -> Iterator[tuple[str, FileDataset]]:
    moment = datetime.now()
    series_uid = generate_uid()
    name = text_value(model_name)
    description = text_value(f"Synthetic CT {name}", LO_MAX)
    comments = text_value(f"Synthetic CT computed from MR by synthct, model {name}, sha256 {model_sha256}. "
                          "Not an acquired CT.", 10240)
    derivation = text_value(f"Synthetic CT predicted from MR series by model {name} (sha256 {model_sha256})", 1024)
    width = max(4, len(str(len(stored))))
    plane = slice_plane(stack.normal)
    for index, slice_values in enumerate(stored):
        dataset = new_file_dataset(CT_IMAGE_STORAGE, generate_uid())
        set_character_set(dataset, [*identity.values(), description, comments])
        set_identity(dataset, identity, moment)
        set_moments(dataset, moment)
        set_equipment(dataset)
        dataset.Modality = "CT"
        dataset.SeriesInstanceUID = series_uid
        dataset.SeriesNumber = series_number
        dataset.SeriesDescription = description
        dataset.ImageType = ["DERIVED", "SECONDARY", plane]  # value 3 required in CT; AXIAL only if transverse
        dataset.ImageComments = comments
        dataset.DerivationDescription = derivation
        dataset.InstanceNumber = index + 1
        dataset.AcquisitionNumber = 1
        dataset.KVP = ""
        dataset.PatientOrientation = ""
        if not identity.get("BodyPartExamined"):  # unknown body part: laterality unknown too (Type 2C, empty)
            dataset.Laterality = ""
        dataset.BurnedInAnnotation = "NO"
        set_plane(dataset, stack, index)
        set_pixels(dataset, slice_values)
        dataset.RescaleIntercept = ds_text(RESCALE_INTERCEPT_HU)
        dataset.RescaleSlope = "1"
        dataset.RescaleType = "HU"
        dataset.WindowCenter = [ds_text(centre) for _, centre, _ in WINDOWS]
        dataset.WindowWidth = [ds_text(w) for _, _, w in WINDOWS]
        dataset.WindowCenterWidthExplanation = [label for label, _, _ in WINDOWS]
        yield f"CT{index + 1:0{width}d}.dcm", dataset
