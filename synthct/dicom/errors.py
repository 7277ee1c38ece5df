"""The error raised for unusable DICOM input or output."""

from __future__ import annotations

from synthct.io import ImageError


class DicomError(ImageError):
    """A DICOM folder or file cannot be used; the message names the folder or file and the problem."""
