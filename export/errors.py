"""The export's one error type."""

from __future__ import annotations


class ExportError(RuntimeError):
    """The export cannot produce a trustworthy package; the message names the file and the problem."""
