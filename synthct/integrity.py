"""Is an image file complete? The voxel data its header promises are all there, and compressed data are intact.

Why: SimpleITK 2.5 (ITK 5.4) fills what it cannot read with zeros, without an error, for a truncated ``.nii.gz``
or ``.nii`` (half the file → about half the voxels 0), and returns silently wrong voxels for a ``.nii.gz``, a
compressed ``.mha`` or a gzip ``.nrrd`` whose compressed bytes are damaged (the gzip CRC / zlib Adler-32 is never
checked). A truncated ``.mha``/``.mhd`` is refused, with a misleading reason ("No such file or directory"); a
truncated ``.nrrd`` is refused with teem's message. :func:`synthct.io.read_image` uses this module so that every
read is complete or an error saying "truncated: N of M bytes" or "corrupt compressed data: …".

How each format is checked (M = voxels × components × bytes per component, from the header):

- raw data (``.nii``; ``.mha``/``.mhd`` without compression, data local or in ``ElementDataFile``; ``.nrrd``
  ``encoding: raw``, attached or ``data file``): the data file's byte length must equal offset + M (header bytes,
  ``HeaderSize``, ``byte skip``/``line skip``), a ``stat``, before SimpleITK reads anything.
- gzip (``.nii.gz``; ``.nrrd`` ``encoding: gzip``) and zlib (``.mha``/``.mhd`` ``CompressedData = True``):
  after SimpleITK has decoded the voxels, the CRC-32 (gzip) or Adler-32 (zlib) of its buffer (plus the NIfTI
  header bytes) is compared with the stream's trailer, and the gzip length (ISIZE) with the header's: one checksum
  pass over memory, no second decode. Where that fast path does not apply (byte-swapped or rescaled data, several
  gzip members, padding) or disagrees, the stream is decoded once more, in chunks, by :mod:`zlib`, which checks the
  trailer itself and tells how many bytes came out before it ended (the error message). A compressed MetaImage's
  ``CompressedDataSize`` bytes must be present (a ``stat``, before reading).
- header only (:func:`check_stored`, for ``synthct data check --headers-only``): raw lengths, ``CompressedDataSize``
  and the gzip trailer's ISIZE (mod 2³²); a damaged middle of a compressed stream is found only by a full read.

Not checked (read as SimpleITK reads them): MetaImage ``ElementDataFile = LIST`` or file patterns, NRRD multi-file
data, text/hex/bzip2 encodings, unrecognised headers.
"""

from __future__ import annotations

import math
import struct
import sys
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

CHUNK = 1 << 20
"""Bytes of compressed data fed to zlib at a time."""
OUT_CHUNK = 16 << 20
"""Most decoded bytes held at a time while checking a stream (a hostile stream cannot blow up memory)."""
HEADER_LIMIT = 1 << 20
"""Most bytes searched for the end of a MetaImage/NRRD text header."""
GZIP_MAGIC = b"\x1f\x8b"

_MET_TYPES = {
    "MET_CHAR": 1, "MET_UCHAR": 1, "MET_SHORT": 2, "MET_USHORT": 2, "MET_INT": 4, "MET_UINT": 4, "MET_LONG": 4,
    "MET_ULONG": 4, "MET_LONG_LONG": 8, "MET_ULONG_LONG": 8, "MET_FLOAT": 4, "MET_DOUBLE": 8,
}  # fmt: skip
"""MetaImage ElementType → bytes per component (MetaIO's MET_ValueTypeSize)."""
_NRRD_TYPES = {
    1: ("signed char", "int8", "int8_t", "uchar", "unsigned char", "uint8", "uint8_t"),
    2: ("short", "short int", "signed short", "signed short int", "int16", "int16_t", "ushort", "unsigned short",
        "unsigned short int", "uint16", "uint16_t"),
    4: ("int", "signed int", "int32", "int32_t", "uint", "unsigned int", "uint32", "uint32_t", "float"),
    8: ("longlong", "long long", "long long int", "signed long long", "signed long long int", "int64", "int64_t",
        "ulonglong", "unsigned long long", "unsigned long long int", "uint64", "uint64_t", "double"),
}  # fmt: skip
_NRRD_TYPE_BYTES = {name: size for size, names in _NRRD_TYPES.items() for name in names}


_ZLIB_MEANINGS = {
    "incorrect data check": "the checksum (gzip CRC-32 / zlib Adler-32) does not match the data",
    "incorrect length check": "the gzip length trailer does not match the data",
}
"""zlib's messages for a damaged stream → what they mean."""


class IncompleteImageError(ValueError):
    """An image file is truncated, or its compressed data are corrupt; the message names the file."""


@dataclass(frozen=True)
class DataLayout:
    """Where an image file's voxel data lie and how many bytes its header promises.

    ``offset`` is the byte offset of the data (raw) or of the compressed stream in ``data_file``; -1: raw data at
    the end of the file (MetaImage ``HeaderSize = -1``, NRRD ``byte skip: -1``).
    """

    data_file: Path
    encoding: str
    """``raw``, ``gzip`` (a gzip stream) or ``zlib`` (MetaImage: a zlib stream, or gzip by its magic)."""
    offset: int
    data_bytes: int
    """Voxels × components × bytes per component, as the header describes them (decoded)."""
    prefix: bytes = b""
    """Decoded bytes before the voxels inside the stream (a ``.nii.gz``'s NIfTI header and extensions)."""
    skip_bytes: int = 0
    """Decoded bytes skipped before the voxels inside the stream whose content is not in ``prefix`` (NRRD)."""
    compressed_bytes: int | None = None
    """MetaImage ``CompressedDataSize``: bytes of the compressed stream (None: to the end of the file)."""
    native: bool = True
    """SimpleITK's buffer holds the decoded voxel bytes unchanged (file byte order = this machine's, no rescaling):
    the stream's checksum can be computed from it."""

    @property
    def decoded_bytes(self) -> int:
        """Decoded bytes the stream must hold: prefix / skipped bytes + voxel data."""
        return len(self.prefix) + self.skip_bytes + self.data_bytes


def data_layout(path: Path) -> DataLayout | None:
    """The data layout of an image file from its header, or None for a layout this module does not check (see the
    module docstring). Raises :class:`IncompleteImageError` for a file that ends inside its header."""
    name = path.name.lower()
    if name.endswith(".nii.gz"):
        return _nifti_gz_layout(path)
    if name.endswith(".nii"):
        return _nifti_layout(path)
    if name.endswith((".mha", ".mhd")):
        return _metaimage_layout(path)
    if name.endswith(".nrrd"):
        return _nrrd_layout(path)
    return None


def check_stored(path: Path, layout: DataLayout, trailer: bool = False) -> None:
    """Check what a ``stat`` (and, with ``trailer``, the gzip length trailer) can tell, without decoding: raw data
    length equal to the header's, a compressed MetaImage's ``CompressedDataSize`` present. A gzip trailer that
    does not match is settled by decoding the stream (several gzip members have several trailers).

    Raises :class:`IncompleteImageError` naming the file: "truncated: N of M bytes".
    """
    where = _where(path, layout)
    size = _file_size(path, layout)
    if layout.encoding == "raw":
        if layout.offset < 0:
            if size < layout.data_bytes:
                raise IncompleteImageError(f"{where}: truncated: {size} of {layout.data_bytes} bytes of voxel data")
            return
        expected = layout.offset + layout.data_bytes
        if size < expected:
            raise IncompleteImageError(f"{where}: truncated: {size} of {expected} bytes")
        if size > expected:
            raise IncompleteImageError(f"{where}: {size} bytes where the header describes {expected}: the file does "
                                       "not match its header")
        return
    if layout.compressed_bytes is not None:
        expected = layout.offset + layout.compressed_bytes
        if size < expected:
            raise IncompleteImageError(f"{where}: truncated: {size} of {expected} bytes (CompressedDataSize "
                                       f"{layout.compressed_bytes})")
        if size > expected:
            raise IncompleteImageError(f"{where}: {size} bytes where the header describes {expected} "
                                       f"(CompressedDataSize {layout.compressed_bytes}): the file does not match "
                                       "its header")
    if trailer and layout.encoding == "gzip":
        with open(layout.data_file, "rb") as handle:
            handle.seek(max(size - 4, 0))
            tail = handle.read(4)
        if len(tail) < 4 or struct.unpack("<I", tail)[0] != layout.decoded_bytes % 2**32:
            check_decoded(path, layout)


def check_read(path: Path, layout: DataLayout, image: sitk.Image) -> None:
    """After SimpleITK has read ``image`` from ``path``: check that the compressed stream is complete and intact.

    Fast path: the stream's trailer checksum (gzip CRC-32 + ISIZE, zlib Adler-32) against SimpleITK's decoded
    buffer. Otherwise (or if they disagree): :func:`check_decoded`. Raw layouts need nothing here
    (:func:`check_stored` has run). Raises :class:`IncompleteImageError` naming the file.
    """
    if layout.encoding == "raw":
        return
    if not _trailer_matches(layout, image):
        check_decoded(path, layout)


def check_decoded(path: Path, layout: DataLayout) -> None:
    """Decode the compressed stream in chunks (nothing kept) and check it ends properly, with a good checksum, after
    exactly the decoded bytes the header promises. Raises :class:`IncompleteImageError` naming the file:
    "truncated: N of M bytes" or "corrupt compressed data: …"."""
    if layout.encoding == "raw":
        check_stored(path, layout)
        return
    where = _where(path, layout)
    expected = layout.decoded_bytes
    with open(layout.data_file, "rb") as handle:
        handle.seek(layout.offset)
        remaining = layout.compressed_bytes

        def read(count: int) -> bytes:
            nonlocal remaining
            if remaining is None:
                return handle.read(count)
            block = handle.read(min(count, remaining))
            remaining -= len(block)
            return block

        decoded, problem = _inflate(read, 31 if layout.encoding == "gzip" else 47, expected,
                                    multi_member=layout.encoding == "gzip")
    if problem == "early end":
        if decoded >= expected:
            raise IncompleteImageError(f"{where}: truncated: the compressed stream ends after all {expected} bytes "
                                       "but before its checksum trailer")
        raise IncompleteImageError(f"{where}: truncated: {decoded} of {expected} bytes (the compressed stream ends "
                                   "early)")
    if problem == "too long":
        raise IncompleteImageError(f"{where}: more than {expected} bytes of decoded data where the header describes "
                                   f"{expected}: the file does not match its header")
    if problem is not None:
        meaning = next((text for key, text in _ZLIB_MEANINGS.items() if key in problem), None)
        raise IncompleteImageError(f"{where}: corrupt compressed data: "
                                   + (f"{meaning} ({problem})" if meaning else problem))
    if decoded < expected:
        raise IncompleteImageError(f"{where}: truncated: {decoded} of {expected} bytes (the compressed stream is "
                                   "complete but holds fewer bytes than the header describes)")


def _inflate(read: Callable[[int], bytes], wbits: int, limit: int, multi_member: bool) -> tuple[int, str | None]:
    """Decode a zlib/gzip stream from ``read``; (decoded bytes, problem or None). Problems: "early end", "too long"
    (more than ``limit`` bytes), or zlib's message (bad checksum, invalid data, bytes after the stream)."""
    total = 0
    decoder = zlib.decompressobj(wbits)
    data = read(CHUNK)
    while True:
        if not data:
            return total, "early end"
        try:
            total += len(decoder.decompress(data, OUT_CHUNK))
            while decoder.unconsumed_tail and total <= limit:
                total += len(decoder.decompress(decoder.unconsumed_tail, OUT_CHUNK))
        except zlib.error as exc:
            return total, str(exc)
        if total > limit:
            return total, "too long"
        if not decoder.eof:
            data = read(CHUNK)
            continue
        rest = decoder.unused_data or read(CHUNK)
        while rest and not rest.strip(b"\0") and multi_member:  # gzip allows zero padding after the last member
            rest = read(CHUNK)
        if not rest:
            return total, None
        if multi_member and rest[:2] == GZIP_MAGIC:
            decoder = zlib.decompressobj(wbits)
            data = rest
            continue
        return total, "unexpected bytes after the end of the compressed stream"


def _trailer_matches(layout: DataLayout, image: sitk.Image) -> bool:
    """True if the stream's trailer checksum equals that of SimpleITK's decoded buffer (plus the known prefix)."""
    if not layout.native or layout.skip_bytes or sys.byteorder != "little":
        return False
    voxels = sitk.GetArrayViewFromImage(image)
    if voxels.nbytes != layout.data_bytes or not voxels.flags["C_CONTIGUOUS"]:
        return False
    size = _file_size(layout.data_file, layout)
    if layout.encoding == "gzip":
        if size - layout.offset < 18:
            return False
        with open(layout.data_file, "rb") as handle:
            handle.seek(size - 8)
            crc, isize = struct.unpack("<II", handle.read(8))
        if isize != layout.decoded_bytes % 2**32:
            return False
        return zlib.crc32(np.ascontiguousarray(voxels).data, zlib.crc32(layout.prefix)) == crc
    end = layout.offset + (layout.compressed_bytes if layout.compressed_bytes is not None else size - layout.offset)
    with open(layout.data_file, "rb") as handle:
        handle.seek(layout.offset)
        head = handle.read(2)
        handle.seek(max(end - 4, 0))
        tail = handle.read(4)
    if len(head) < 2 or len(tail) < 4 or head[0] & 0x0F != 8 or (head[0] * 256 + head[1]) % 31:
        return False  # not a zlib stream (gzip by its magic): decode it
    return zlib.adler32(np.ascontiguousarray(voxels).data) == struct.unpack(">I", tail)[0]


def _file_size(path: Path, layout: DataLayout) -> int:
    try:
        return layout.data_file.stat().st_size
    except OSError as exc:
        raise IncompleteImageError(f"{path}: data file {layout.data_file} cannot be read ({exc.strerror})") from exc


def _where(path: Path, layout: DataLayout) -> str:
    return str(path) if layout.data_file == path else f"{layout.data_file} (the data of {path})"


# --- NIfTI --------------------------------------------------------------------------------------------------------


def _nifti_header(head: bytes, path: Path, total_hint: str) -> tuple[int, int, bool, int] | None:
    """(header size, voxel offset, native byte order and no rescaling, voxel data bytes) of a NIfTI-1/2 header, or
    None if ``head`` is no NIfTI header."""
    if len(head) < 4:
        raise IncompleteImageError(f"{path}: truncated: {len(head)} of 348 bytes (inside the NIfTI header"
                                   f"{total_hint})")
    for order in "<>":
        sizeof_hdr = struct.unpack(order + "i", head[:4])[0]
        if sizeof_hdr in (348, 540):
            break
    else:
        return None
    if len(head) < sizeof_hdr:
        raise IncompleteImageError(f"{path}: truncated: {len(head)} of {sizeof_hdr} bytes (inside the NIfTI header"
                                   f"{total_hint})")
    if sizeof_hdr == 348:
        dims = struct.unpack(order + "8h", head[40:56])
        bitpix = struct.unpack(order + "h", head[72:74])[0]
        vox_offset = struct.unpack(order + "f", head[108:112])[0]
        slope, inter = struct.unpack(order + "2f", head[112:120])
        single = head[344:347] == b"n+1"
    else:
        bitpix = struct.unpack(order + "h", head[14:16])[0]
        dims = struct.unpack(order + "8q", head[16:80])
        vox_offset = struct.unpack(order + "q", head[168:176])[0]
        slope, inter = struct.unpack(order + "2d", head[176:192])
        single = head[4:7] == b"n+2"
    ndim = dims[0]
    if not single or not 1 <= ndim <= 7 or bitpix <= 0 or bitpix % 8 or not math.isfinite(vox_offset):
        return None
    extents = dims[1 : ndim + 1]
    if min(extents) < 1:
        return None
    rescaled = (math.isfinite(slope) and slope not in (0.0, 1.0)) or (math.isfinite(inter) and inter != 0.0)
    same_order = order == ("<" if sys.byteorder == "little" else ">") or bitpix == 8
    offset = max(int(vox_offset), sizeof_hdr)
    return sizeof_hdr, offset, same_order and not rescaled, math.prod(extents) * bitpix // 8


def _nifti_layout(path: Path) -> DataLayout | None:
    with open(path, "rb") as handle:
        head = handle.read(540)
    parsed = _nifti_header(head, path, "")
    if parsed is None:
        return None
    _, offset, native, data_bytes = parsed
    return DataLayout(path, "raw", offset, data_bytes, native=native)


def _nifti_gz_layout(path: Path) -> DataLayout | None:
    """The NIfTI header is decoded from the start of the gzip stream; it becomes the stream's known prefix."""
    decoder = zlib.decompressobj(31)
    head = b""
    with open(path, "rb") as handle:
        if handle.read(2) != GZIP_MAGIC:
            return None
        handle.seek(0)

        def decode_to(wanted: int) -> None:
            nonlocal head
            while len(head) < wanted and not decoder.eof:
                block = decoder.unconsumed_tail or handle.read(64 << 10)
                if not block:
                    return
                try:
                    head += decoder.decompress(block, wanted - len(head))
                except zlib.error as exc:
                    raise IncompleteImageError(f"{path}: corrupt compressed data: {exc} (in the NIfTI header)"
                                               ) from exc

        decode_to(540)
        parsed = _nifti_header(head, path, ", decompressed; the compressed stream ends early")
        if parsed is None:
            return None
        _, offset, native, data_bytes = parsed
        if offset > OUT_CHUNK:
            return None
        decode_to(offset)
    if len(head) < offset:
        raise IncompleteImageError(f"{path}: truncated: {len(head)} of {offset + data_bytes} bytes (the compressed "
                                   "stream ends early, inside the NIfTI header)")
    return DataLayout(path, "gzip", 0, data_bytes, prefix=head[:offset], native=native)


# --- MetaImage ----------------------------------------------------------------------------------------------------


def _text_header(path: Path) -> bytes:
    with open(path, "rb") as handle:
        return handle.read(HEADER_LIMIT)


def _metaimage_layout(path: Path) -> DataLayout | None:
    raw = _text_header(path)
    fields: dict[str, str] = {}
    position = 0
    data_file: str | None = None
    while position < len(raw):
        end = raw.find(b"\n", position)
        if end < 0:
            break
        line = raw[position:end].decode("latin-1").strip()
        position = end + 1
        key, sep, value = line.partition("=")
        if not sep:
            continue
        key, value = key.strip().lower(), value.strip()
        fields[key] = value
        if key == "elementdatafile":
            data_file = value
            break
    if data_file is None:
        if raw.startswith(b"ObjectType") or b"NDims" in raw[:4096]:
            raise IncompleteImageError(f"{path}: truncated: the {len(raw)}-byte file ends inside its MetaImage "
                                       "header (no ElementDataFile line)")
        return None
    try:
        dims = [int(v) for v in fields["dimsize"].split()]
        component = _MET_TYPES[fields["elementtype"].upper()]
        channels = int(fields.get("elementnumberofchannels", "1"))
        header_size = int(fields.get("headersize", "0"))
    except (KeyError, ValueError):
        return None
    if data_file.upper() == "LIST" or "%" in data_file or len(data_file.split()) > 1 or not dims or min(dims) < 1:
        return None
    data_bytes = math.prod(dims) * channels * component
    big_endian = (fields.get("binarydatabyteordermsb") or fields.get("elementbyteordermsb") or "false").lower() \
        == "true"
    native = component == 1 or big_endian == (sys.byteorder == "big")
    compressed = fields.get("compresseddata", "false").lower() == "true"
    compressed_bytes = int(fields["compresseddatasize"]) if compressed and "compresseddatasize" in fields else None
    if data_file.upper() == "LOCAL":
        target, offset = path, position
    else:
        target = Path(data_file) if Path(data_file).is_absolute() else path.parent / data_file
        offset = header_size
    if compressed:
        return DataLayout(target, "zlib", max(offset, 0), data_bytes, compressed_bytes=compressed_bytes,
                          native=native)
    return DataLayout(target, "raw", offset, data_bytes, native=native)


# --- NRRD ---------------------------------------------------------------------------------------------------------


def _nrrd_layout(path: Path) -> DataLayout | None:
    raw = _text_header(path)
    if not raw.startswith(b"NRRD"):
        return None
    fields: dict[str, str] = {}
    position = 0
    ended = False
    while position < len(raw):
        end = raw.find(b"\n", position)
        if end < 0:
            break
        line = raw[position:end].decode("latin-1").rstrip("\r")
        position = end + 1
        if not line:
            ended = True
            break
        if line.startswith("#") or ":=" in line:
            continue
        key, sep, value = line.partition(": ")
        if sep:
            fields[key.strip().lower().replace(" ", "")] = value.strip()
    detached = fields.get("datafile")
    if not ended and detached is None:
        raise IncompleteImageError(f"{path}: truncated: the {len(raw)}-byte file ends inside its NRRD header")
    try:
        if fields.get("type", "").lower() not in _NRRD_TYPE_BYTES:
            return None
        component = _NRRD_TYPE_BYTES[fields["type"].lower()]
        sizes = [int(v) for v in fields["sizes"].split()]
        line_skip = int(fields.get("lineskip", "0"))
        byte_skip = int(fields.get("byteskip", "0"))
    except (KeyError, ValueError):
        return None
    encoding = {"raw": "raw", "gzip": "gzip", "gz": "gzip"}.get(fields.get("encoding", "").lower())
    if encoding is None or not sizes or min(sizes) < 1:
        return None
    if detached is not None:
        if detached.upper().startswith("LIST") or len(detached.split()) > 1 or "%" in detached:
            return None
        target = Path(detached) if Path(detached).is_absolute() else path.parent / detached
        position = 0
    else:
        target = path
    if line_skip:
        position = _skip_lines(target, position, line_skip)
        if position < 0:
            raise IncompleteImageError(f"{path}: truncated: the file ends within its {line_skip} skipped lines")
    data_bytes = math.prod(sizes) * component
    big_endian = fields.get("endian", "little").lower() == "big"
    native = component == 1 or big_endian == (sys.byteorder == "big")
    if encoding == "raw":
        offset = -1 if byte_skip < 0 else position + byte_skip
        return DataLayout(target, "raw", offset, data_bytes, native=native)
    return DataLayout(target, "gzip", position, data_bytes, skip_bytes=max(byte_skip, 0), native=native)


def _skip_lines(path: Path, start: int, count: int) -> int:
    """Byte offset after ``count`` lines from ``start`` in ``path``, or -1 if the file ends first."""
    with open(path, "rb") as handle:
        handle.seek(start)
        for _ in range(count):
            if not handle.readline().endswith(b"\n"):
                return -1
        return handle.tell()
