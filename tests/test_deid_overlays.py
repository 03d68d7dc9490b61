"""Overlays embedded in unused high bits of Pixel Data are cleared; what cannot be is refused."""

from __future__ import annotations

import io
import secrets

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.uid import RLELossless, generate_uid

from apolo_node.deid import DeidError, Deidentifier, clean_instance
from tests.synthetic import ct_slice, new_marker


def with_embedded_overlay(position: int = 12) -> tuple:
    """A 12-bit CT whose bit ``position`` carries an overlay (a block of 'burned' bits)."""
    ds = ct_slice(study_uid=generate_uid(), series_uid=generate_uid(), sop_uid=generate_uid(),
                  number=1, marker=new_marker(), rows=32, columns=32)
    ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 12, 11, 0
    image = (np.arange(32 * 32, dtype=np.uint16).reshape(32, 32) * 3) & 0x0FFF
    overlay = np.zeros((32, 32), dtype=bool)
    overlay[4:10, 2:30] = True  # where a scanner drew its text
    ds.PixelData = (image | (overlay.astype(np.uint16) << position)).tobytes()
    ds.add_new(0x60000010, "US", 32)
    ds.add_new(0x60000011, "US", 32)
    ds.add_new(0x60000100, "US", 16)  # Overlay Bits Allocated = Bits Allocated: embedded
    ds.add_new(0x60000102, "US", position)
    return ds, image


def deidentifier() -> Deidentifier:
    return Deidentifier(secrets.token_bytes(16), ["clean_pixel_data"])


def test_the_overlay_bits_are_cleared_and_the_image_bits_kept() -> None:
    ds, image = with_embedded_overlay()
    assert (np.frombuffer(ds.PixelData, "<u2") >> 12).any(), "the overlay is in the input"
    out = dcmread(io.BytesIO(clean_instance(ds, deidentifier()).encoded))
    stored = np.frombuffer(out.PixelData, "<u2").reshape(32, 32)
    assert not (stored >> 12).any(), "no overlay bit is left"
    assert np.array_equal(stored, image), "every stored image bit is unchanged"
    assert not any(0x6000 <= tag.group < 0x6020 for tag in out.keys())
    assert (np.frombuffer(ds.PixelData, "<u2") >> 12).any(), "the input is not changed"


def test_an_overlay_in_compressed_pixels_or_inside_the_stored_bits_is_refused() -> None:
    ds, _ = with_embedded_overlay()
    ds.compress(RLELossless, generate_instance_uid=False)
    with pytest.raises(DeidError, match="overlay embedded in compressed Pixel Data"):
        clean_instance(ds, deidentifier())
    inside, _ = with_embedded_overlay(position=12)
    inside[0x60000102].value = 5
    with pytest.raises(DeidError, match=r"OverlayBitPosition 5 is not an unused bit \(stored bits 0-11 of 16\)"):
        clean_instance(inside, deidentifier())


def test_a_separate_overlay_leaves_the_pixels_alone() -> None:
    ds, _ = with_embedded_overlay()
    ds[0x60000100].value = 1
    ds.add_new(0x60003000, "OW", b"\x00" * 128)
    before = bytes(ds.PixelData)
    out = dcmread(io.BytesIO(clean_instance(ds, deidentifier()).encoded))
    assert bytes(out.PixelData) == before
