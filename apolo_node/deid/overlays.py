"""Overlays embedded in Pixel Data (retired since 2004, still found in old archives) are cleared.

Removing the 60xx group (the profile does) removes the overlay's attributes, not its bits: an
overlay declared with Overlay Bits Allocated > 1 and an Overlay Bit Position, and no Overlay
Data, lives in unused high bits of each pixel, where a scanner may have burned text. Those bits
are set to zero in native Pixel Data; the stored image bits are left as they are. Compressed
Pixel Data with such an overlay, or a declared bit position inside the stored bits, cannot be
cleared safely and is refused (fail closed).
"""

from __future__ import annotations

import copy

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRBigEndian

OVERLAY_GROUPS = range(0x6000, 0x6020, 2)


class EmbeddedOverlayError(ValueError):
    """An embedded overlay that cannot be cleared; the message names attributes, never values."""


def embedded_bit_positions(ds: Dataset) -> list[int]:
    """The pixel bit positions of overlays embedded in Pixel Data (none for separate overlays)."""
    positions = []
    for group in OVERLAY_GROUPS:
        bits_allocated = ds.get((group, 0x0100))
        position = ds.get((group, 0x0102))
        if bits_allocated is None or position is None or (group, 0x3000) in ds:
            continue
        if int(bits_allocated.value or 1) > 1:
            positions.append(int(position.value or 0))
    return sorted(set(positions))


def clear_embedded_overlays(ds: Dataset) -> Dataset:
    """``ds`` itself if it has no embedded overlay, else a copy with the overlay bits cleared."""
    positions = embedded_bit_positions(ds)
    if not positions:
        return ds
    if "PixelData" not in ds:
        return ds
    if ds.file_meta.TransferSyntaxUID.is_compressed:
        raise EmbeddedOverlayError("an overlay embedded in compressed Pixel Data cannot be cleared")
    allocated = int(ds.BitsAllocated)
    high = int(ds.get("HighBit", int(ds.BitsStored) - 1))
    low = high - int(ds.BitsStored) + 1
    if allocated not in (8, 16, 32):
        raise EmbeddedOverlayError(f"an embedded overlay with BitsAllocated {allocated} is not supported")
    for position in positions:
        if low <= position <= high or not 0 <= position < allocated:
            raise EmbeddedOverlayError(
                f"OverlayBitPosition {position} is not an unused bit (stored bits {low}-{high} of {allocated})"
            )
    order = ">" if ds.file_meta.TransferSyntaxUID == ExplicitVRBigEndian else "<"
    dtype = np.dtype(f"{order}u{allocated // 8}")
    raw = bytes(ds.PixelData)
    usable = len(raw) - len(raw) % dtype.itemsize
    values = np.frombuffer(raw[:usable], dtype=dtype).copy()
    mask = np.array(~sum(1 << p for p in positions) & (2**allocated - 1), dtype=dtype)
    values &= mask
    out = copy.deepcopy(ds)
    out.PixelData = values.tobytes() + raw[usable:]
    return out
