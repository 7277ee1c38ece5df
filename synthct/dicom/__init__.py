"""DICOM in the core: reading an MR image series into a volume, writing a synthetic CT (and test MR) series.

- :func:`find_series` / :func:`read_dicom_series`: the image series in a folder, ordered by position along the
  slice normal and checked (one series, even spacing, one orientation); non-image objects ignored with a note;
- :func:`write_ct_series`: CT Image Storage, one int16 file per slice, identity copied from the MR;
- :func:`write_mr_series`: a realistic MR series (shuffled files, no suffix) for tests and demos.

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
