"""DICOM in the core: reading an MR image series into a volume, writing a synthetic CT (and test MR) series.

- :mod:`synthct.dicom.study` (:func:`discover_cases`, :func:`choose_series`): study folders, trees of series
  folders and DICOMDIR exports, grouped into cases by StudyInstanceUID; the planning MR chosen by a documented rule
  (``--series`` a SeriesInstanceUID, SeriesNumber or SeriesDescription substring); the case-id rule.
- :func:`find_series` (the image series directly in a folder) / :func:`read_dicom_series` (one series of a folder's
  tree, a DICOMDIR or a scanned study; any file names), slices
  ordered by position along the slice normal (row × column of ImageOrientationPatient), never by file name or
  InstanceNumber, and checked: one series (else a list of them, to choose with ``--series``), one orientation
  and matrix, even spacing (a missing slice is named with its neighbours and the expected spacing), at least two
  slices. Rescale slope/intercept applied. Non-image objects (RTSTRUCT, RTPLAN, RTDOSE,
  presentation states, anything without pixel data) and non-DICOM files are ignored with a note. Uncompressed
  and, through GDCM, JPEG / JPEG 2000 / RLE compressed files are read; files without preamble and file meta (old
  archives) as implicit VR little endian, with a note.
- :mod:`synthct.dicom.enhanced`: Enhanced / Legacy Converted Enhanced MR (geometry from the functional groups),
  frames split into stacks (echoes, Dixon images, orientations, StackIDs), one chosen with ``--series SERIES#STACK``.
- :func:`write_ct_series`: CT Image Storage, one Explicit VR Little Endian file per slice (``CT0001.dcm`` ...),
  int16 stored value = HU + 1024 (RescaleSlope 1, RescaleIntercept -1024, RescaleType HU), the image's geometry
  (oblique kept; a left-handed image is written with its slices reversed: the same voxels in space), ImageType
  DERIVED\\SECONDARY\\AXIAL (value 3 SAGITTAL / CORONAL / OBLIQUE for slices more than 10° from transverse),
  SliceThickness = slice spacing, SeriesNumber 901, SeriesDescription ``Synthetic CT <model>`` (64 characters at most),
  ImageComments with the model's name and full sha256, windows soft tissue 40/400 and bone 300/1500 HU.
  Patient, study, FrameOfReferenceUID, PatientPosition and BodyPartExamined are copied from the MR's identity;
  series and instance UIDs are always new. Without a source identity: new study and frame-of-reference UIDs,
  PatientName ``SYNTHCT^NO SOURCE IDENTITY``, PatientID ``SYNTHCT-<8 hex digits>``, PatientPosition HFS.
  Written atomically: a temporary folder beside the target, renamed into place (replacing an older series).
- :mod:`synthct.dicom.transverse`: the transverse, axis-aligned planning-CT grid for an sCT predicted on a sagittal,
  coronal or oblique MR (``--ct-grid``, ``--ct-slice-mm``).
- :func:`write_mr_series`: a realistic MR Image Storage series (shuffled files and instance numbers, optional
  suffix) for tests and demos; :func:`write_enhanced_mr` the same MR as an Enhanced MR object (stacks, echoes).

Errors are :class:`DicomError` (an :class:`synthct.io.ImageError`) naming the folder or file and the problem.
"""

from synthct.dicom.ct import CT_IMAGE_STORAGE, write_ct_series
from synthct.dicom.errors import DicomError
from synthct.dicom.identity import IDENTITY_KEYWORDS
from synthct.dicom.mr import ENHANCED_MR_IMAGE_STORAGE, MR_IMAGE_STORAGE, write_enhanced_mr, write_mr_series
from synthct.dicom.read import DicomVolume, read_dicom_series
from synthct.dicom.scan import SeriesSummary, contains_dicom, find_series, is_dicom_file
from synthct.dicom.study import DicomStudy, choose_series, discover_cases, scan_study

__all__ = [
    "CT_IMAGE_STORAGE",
    "ENHANCED_MR_IMAGE_STORAGE",
    "IDENTITY_KEYWORDS",
    "MR_IMAGE_STORAGE",
    "DicomError",
    "DicomStudy",
    "DicomVolume",
    "SeriesSummary",
    "choose_series",
    "contains_dicom",
    "discover_cases",
    "find_series",
    "is_dicom_file",
    "read_dicom_series",
    "scan_study",
    "write_ct_series",
    "write_enhanced_mr",
    "write_mr_series",
]
