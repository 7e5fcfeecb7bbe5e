"""Instance masks: COCO's compressed RLE in, a full-image 0/1 PNG out, touching only the rows the
instance covers.

pycocotools rasterizes polygons into a run-length encoding (RLE) cheaply; what costs is
`mask_utils.decode`, which writes every pixel of the image column by column (Fortran order), and
the transpose PNG's rows then need. Here the run lengths are read from the RLE itself and turned
into the instance's band of rows, already packed 8 pixels a byte as a 1-bit PNG stores them; the
rows above and below are all zero and never built. The RLE is the one pycocotools made from the
polygons at full image size, so the pixels are exactly pycocotools' pixels.

Rasterizing only the band (polygons shifted up by the band's top, then frPyObjects at the band's
height) would save the full-image RLE too, but is not exact: pycocotools rounds 5*y+0.5 and sums
its line steps in doubles, and a shifted y rounds differently. Of random polygons, two in three
with 1-decimal coordinates (120.1) then differ from the full-image mask, one in eight with two
decimals, one in 400 with integers (test_masks.py shows one).
"""

from __future__ import annotations

import functools
import struct
import zlib
from typing import NamedTuple

import numpy as np

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_PALETTE_COLOUR = 3
PNG_PALETTE_0_1 = bytes([0, 0, 0, 1, 1, 1])  # index 0 -> value 0, index 1 -> value 1
MASK_ZLIB_LEVEL = 1  # masks are ~1 KB either way; level 6 would make them 1/3 smaller, slower
ZLIB_HEADER = b"\x78\x01"  # deflate, 32 KiB window, no dictionary; a multiple of 31
DEFLATE_LAST_EMPTY_BLOCK = b"\x03\x00"  # final bit, fixed Huffman codes, end of block
ADLER_MODULUS = 65521

# The compressed RLE: each count, minus the count two before it from the fourth on, as 5-bit
# groups (least significant first) in characters 48 + (group | 0x20 if more follow); the last
# group's 0x10 bit is the sign.
RLE_CHAR_OFFSET = 48
RLE_MORE = 0x20
RLE_SIGN = 0x10
RLE_BITS = 0x1F
RLE_MAX_CHARS = 12  # 60 bits: more than any image has pixels


class MaskRows(NamedTuple):
    """The rows [top, top + len(packed)) of a 0/1 mask, 8 pixels a byte, first pixel in the high
    bit (PNG's 1-bit order); the mask is 0 in every other row."""

    top: int
    packed: np.ndarray  # uint8, (rows, ceil(width / 8))


def rle_counts(counts: bytes, num_pixels: int) -> np.ndarray:
    """The run lengths of a compressed RLE (pycocotools' `counts` string), as int64.

    Raises ValueError for a string pycocotools did not write: characters out of range, a last
    count cut short, a negative run, or runs that do not add up to `num_pixels`.
    """
    chars = np.frombuffer(counts, dtype=np.uint8) - np.uint8(RLE_CHAR_OFFSET)  # wraps below '0'
    if chars.size == 0 or chars.max() > RLE_MORE | RLE_BITS:
        raise ValueError("RLE counts string is empty or holds characters outside '0'..'o'")
    last = np.flatnonzero(chars < RLE_MORE)  # each count's last character
    if last.size == 0 or last[-1] != chars.size - 1:
        raise ValueError("RLE counts string ends inside a count")
    first = np.concatenate(([0], last[:-1] + 1))
    lengths = last - first + 1
    if lengths.max() > RLE_MAX_CHARS:
        raise ValueError(f"RLE counts string holds a count of over {RLE_MAX_CHARS} characters")
    shifts = 5 * (np.arange(chars.size) - np.repeat(first, lengths))
    values = np.add.reduceat((chars & RLE_BITS).astype(np.int64) << shifts, first)
    values -= (chars[last] & RLE_SIGN).astype(np.int64) << (5 * lengths - 4)  # two's complement
    # From the fourth count on, each is stored as its difference to the count two before it.
    values[3::2] = np.cumsum(values[1::2])[1:]
    values[4::2] = np.cumsum(values[2::2])[1:]
    if values.min() < 0 or values.sum() != num_pixels:
        raise ValueError(
            f"RLE runs must be non-negative and cover the {num_pixels} pixels of the image; "
            f"they cover {values.sum()}"
        )
    return values


def mask_rows(rle: dict) -> MaskRows | None:
    """The rows a compressed RLE covers, packed; None when it covers no pixel."""
    height, width = rle["size"]
    counts = rle_counts(rle["counts"], height * width)
    if (counts[1:] == 0).any():
        counts = _without_empty_runs(counts)
    ends = np.cumsum(counts)
    # Runs alternate 0s and 1s, 0s first, in column-major order: the k-th run of 1s covers the
    # flat indices [ends[2k], ends[2k + 1]).
    stops = ends[1::2]
    if stops.size == 0:
        return None
    columns, row_starts, row_stops = _column_pieces(ends[0::2][: stops.size], stops, height)
    top, bottom = int(row_starts.min()), int(row_stops.max())

    # Mark where each column switches on or off inside the band, pack the marks 8 columns a byte,
    # and xor-accumulate down the rows: each row is then the mask (runs neither empty nor
    # touching, so no two marks fall on one place). Rows are padded to whole uint64s so the
    # accumulation runs 64 columns at a time; the padding columns stay 0.
    padded_width = -(-width // 64) * 64
    switches = np.zeros((bottom - top + 1, padded_width), dtype=np.uint8)
    switches[np.concatenate([row_starts, row_stops]) - top, np.concatenate([columns, columns])] = 1
    packed = np.packbits(switches, axis=1)
    rows = np.bitwise_xor.accumulate(packed.view(np.uint64), axis=0).view(np.uint8)
    return MaskRows(top, rows[:-1, : -(-width // 8)])


def _without_empty_runs(counts: np.ndarray) -> np.ndarray:
    """The same mask's runs with none empty but maybe the first (0s before the first 1): the
    runs either side of an empty one, of one value, join. pycocotools writes no empty run; a
    hand-made uncompressed RLE may hold some."""
    kept = np.flatnonzero(counts)
    if kept.size == 0 or kept[0] != 0:
        kept = np.r_[0, kept]
    value = kept % 2  # runs at even positions are 0s, at odd ones 1s
    first_of_value = np.flatnonzero(np.r_[True, value[1:] != value[:-1]])
    return np.add.reduceat(counts[kept], first_of_value)


def _column_pieces(starts: np.ndarray, stops: np.ndarray, height: int):
    """The runs [starts, stops) of column-major flat indices, cut at column ends, as
    (column, first row, row after the last) arrays.

    A run crosses into the next column only when the mask covers the bottom of one column and
    the top of the next (a box as high as the image, a full-image mask).
    """
    first_columns, last_columns = starts // height, (stops - 1) // height
    pieces = last_columns - first_columns + 1
    if pieces.max() > 1:
        piece_first = np.repeat(np.cumsum(pieces) - pieces, pieces)
        columns = np.repeat(first_columns, pieces) + np.arange(pieces.sum()) - piece_first
        column_starts = columns * height
        row_starts = np.maximum(np.repeat(starts, pieces) - column_starts, 0)
        row_stops = np.minimum(np.repeat(stops, pieces) - column_starts, height)
        return columns, row_starts, row_stops
    column_starts = first_columns * height
    return first_columns, starts - column_starts, stops - column_starts


def encode_mask_png(rows: MaskRows, height: int, width: int) -> bytes:
    """A height x width 0/1 mask, given its rows, as a 1-bit PNG whose palette colours are 0, 1.

    Every decoder reads its pixels as 0 and 1 (tf.io.decode_png with channels=1, as Model Garden
    does; PIL gives the indices 0/1), as from an 8-bit grayscale PNG, but zlib gets an eighth of
    the bytes. Written directly rather than through PIL: mask encoding is a large part of this
    stage's work.
    """
    header = struct.pack(">IIBBBBB", width, height, 1, PNG_PALETTE_COLOUR, 0, 0, 0)
    return b"".join([
        PNG_SIGNATURE,
        _png_chunk(b"IHDR", header),
        _png_chunk(b"PLTE", PNG_PALETTE_0_1),
        _png_chunk(b"IDAT", _zlib_scanlines(rows, height)),
        _png_chunk(b"IEND", b""),
    ])  # fmt: skip


def _zlib_scanlines(rows: MaskRows, height: int) -> bytes:
    """The zlib stream of the PNG's scanlines (a filter byte 0, then the row), compressing only
    the band: the all-zero rows above and below are deflated once per count and reused.

    Deflate streams ending in a sync flush (a byte boundary) concatenate, and an Adler-32
    checksum runs over zeros without reading them (a zero byte adds 0 to its sum A, A to B).
    """
    band_rows, row_bytes = rows.packed.shape
    band = np.zeros((band_rows, 1 + row_bytes), dtype=np.uint8)
    band[:, 1:] = rows.packed
    band = band.tobytes()
    compressor = zlib.compressobj(MASK_ZLIB_LEVEL, zlib.DEFLATED, -zlib.MAX_WBITS)
    above, below = rows.top * (1 + row_bytes), (height - rows.top - band_rows) * (1 + row_bytes)
    checksum = _adler32_of_zeros(zlib.adler32(band, _adler32_of_zeros(1, above)), below)
    return b"".join([
        ZLIB_HEADER,
        _deflated_zeros(above),
        compressor.compress(band) + compressor.flush(zlib.Z_SYNC_FLUSH),
        _deflated_zeros(below),
        DEFLATE_LAST_EMPTY_BLOCK,
        struct.pack(">I", checksum),
    ])  # fmt: skip


@functools.lru_cache(maxsize=4096)
def _deflated_zeros(count: int) -> bytes:
    """`count` zero bytes as raw deflate blocks ending on a byte boundary (none: no bytes)."""
    if count == 0:
        return b""
    compressor = zlib.compressobj(MASK_ZLIB_LEVEL, zlib.DEFLATED, -zlib.MAX_WBITS)
    return compressor.compress(bytes(count)) + compressor.flush(zlib.Z_SYNC_FLUSH)


def _adler32_of_zeros(checksum: int, count: int) -> int:
    """zlib.adler32(bytes(count), checksum), without the bytes."""
    a, b = checksum & 0xFFFF, checksum >> 16
    return (b + count * a) % ADLER_MODULUS << 16 | a


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data)
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)
