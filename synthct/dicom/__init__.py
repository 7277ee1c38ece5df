"""DICOM in the core: reading an MR image series into a volume, writing a synthetic CT (and test MR) series.

- :func:`find_series` / :func:`read_dicom_series`: the image series directly in a folder (any file names),
  ordered by position along the slice normal (row × column of ImageOrientationPatient), never by file name or
  InstanceNumber, and checked: one series (else a list of them, to choose with ``--series UID``), one orientation
  and matrix, even spacing (a missing slice is named with its neighbours and the expected spacing), at least two
  slices, single-frame. Rescale slope/intercept applied. Non-image objects (RTSTRUCT, RTPLAN, RTDOSE,
  presentation states, anything without pixel data) and non-DICOM files are ignored with a note. Uncompressed
  and, through GDCM, JPEG / JPEG 2000 / RLE compressed files are read.
- :func:`write_ct_series`: CT Image Storage, one Explicit VR Little Endian file per slice (``CT0001.dcm`` ...),
  int16 stored value = HU + 1024 (RescaleSlope 1, RescaleIntercept -1024, RescaleType HU), the image's geometry
  (oblique kept; a left-handed image is written with its slices reversed: the same voxels in space), ImageType
  DERIVED\\SECONDARY\\AXIAL, SeriesNumber 901, SeriesDescription ``Synthetic CT <model>`` (64 characters at most),
  ImageComments with the model's name and full sha256, windows soft tissue 40/400 and bone 300/1500 HU.
  Patient, study, FrameOfReferenceUID, PatientPosition and BodyPartExamined are copied from the MR's identity;
  series and instance UIDs are always new. Without a source identity: new study and frame-of-reference UIDs,
  PatientName ``SYNTHCT^NO SOURCE IDENTITY``, PatientID ``SYNTHCT-<8 hex digits>``, PatientPosition HFS.
  Written atomically: a temporary folder beside the target, renamed into place (replacing an older series).
- :func:`write_mr_series`: a realistic MR Image Storage series (shuffled files and instance numbers, optional
  suffix) for tests and demos.

Errors are :class:`DicomError` (an :class:`synthct.io.ImageError`) naming the folder or file and the problem.
"""

from synthct.dicom.ct import CT_IMAGE_STORAGE, write_ct_series
from synthct.dicom.errors import DicomError
from synthct.dicom.identity import IDENTITY_KEYWORDS
from synthct.dicom.mr import MR_IMAGE_STORAGE, write_mr_series
from synthct.dicom.read import DicomVolume, read_dicom_series
from synthct.dicom.scan import SeriesSummary, contains_dicom, find_series, is_dicom_file

__all__ = [
    "CT_IMAGE_STORAGE",
    "IDENTITY_KEYWORDS",
    "MR_IMAGE_STORAGE",
    "DicomError",
    "DicomVolume",
    "SeriesSummary",
    "contains_dicom",
    "find_series",
    "is_dicom_file",
    "read_dicom_series",
    "write_ct_series",
    "write_mr_series",
]
