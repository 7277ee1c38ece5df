"""Patient, study and frame-of-reference attributes carried from a DICOM MR into a derived series."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from synthct.dicom.errors import DicomError

IDENTITY_KEYWORDS: tuple[str, ...] = (
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "PatientBirthDate",
    "PatientSex",
    "PatientAge",
    "StudyInstanceUID",
    "StudyID",
    "StudyDate",
    "StudyTime",
    "StudyDescription",
    "AccessionNumber",
    "ReferringPhysicianName",
    "FrameOfReferenceUID",
    "PositionReferenceIndicator",
    "PatientPosition",
    "BodyPartExamined",
)
"""Keywords a derived series copies from its source: patient, study, frame of reference, and the series-level
patient position and body part (the derived series shows the same anatomy in the same frame)."""

SYNTHETIC_PATIENT_NAME = "SYNTHCT^NO SOURCE IDENTITY"
"""PatientName of a series written without a source identity (the input was not DICOM)."""


def identity_of(dataset: Dataset) -> dict[str, str]:
    """The identity attributes present in ``dataset`` as keyword → text (character set already decoded)."""
    return {keyword: _text(dataset[keyword].value) for keyword in IDENTITY_KEYWORDS if keyword in dataset}


def _text(value: object) -> str:
    return "" if value is None else str(value)


def checked_identity(identity: Mapping[str, str]) -> dict[str, str]:
    """``identity`` as a plain dict, after rejecting unknown keywords and non-text values."""
    unknown = sorted(set(identity) - set(IDENTITY_KEYWORDS))
    if unknown:
        raise DicomError(f"identity: unknown attribute(s) {', '.join(unknown)}; known: {', '.join(IDENTITY_KEYWORDS)}")
    not_text = sorted(keyword for keyword, value in identity.items() if not isinstance(value, str))
    if not_text:
        raise DicomError(f"identity: values must be text, not for {', '.join(not_text)}")
    return dict(identity)


def derived_identity(identity: Mapping[str, str] | None) -> dict[str, str]:
    """Identity for a derived series: the source's, completed; or a fresh one marked as synthetic.

    Without a source study (``identity`` None, or without StudyInstanceUID, e.g. only ``BodyPartExamined``):
    new StudyInstanceUID and FrameOfReferenceUID, PatientName ``SYNTHCT^NO SOURCE IDENTITY``, PatientID
    ``SYNTHCT-<8 hex digits of the study UID>``, StudyID ``SYNTHCT``; given attributes override these. With a
    source study, everything is copied as it is, and the attributes that must not be empty (PatientID,
    FrameOfReferenceUID) are filled in when the source lacks them.
    """
    given = {keyword: value for keyword, value in checked_identity(identity or {}).items() if value}
    if given.get("StudyInstanceUID"):
        result = checked_identity(identity or {})
    else:
        result = {
            "PatientName": SYNTHETIC_PATIENT_NAME,
            "StudyInstanceUID": generate_uid(),
            "StudyID": "SYNTHCT",
            "StudyDescription": "Synthetic CT (no DICOM source)",
            **given,
        }
    if not result.get("FrameOfReferenceUID"):
        result["FrameOfReferenceUID"] = generate_uid()
    if not result.get("PatientID"):
        digest = hashlib.sha256(result["StudyInstanceUID"].encode("ascii")).hexdigest()[:8].upper()
        result["PatientID"] = f"SYNTHCT-{digest}"
    return result
