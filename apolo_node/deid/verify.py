"""Fail-closed check that no identifying value of the original survives de-identification.

It collects every value of the original's PHI attributes (any element whose resolved action is
not "keep", at any depth, private ones included) and looks for each in every element value of the
output, at any depth, and in the encoded bytes outside Pixel Data (preamble and file meta too).
Its error names the attribute and where it sits, never the value.
"""

from __future__ import annotations

import io
import itertools
import re
from dataclasses import dataclass
from typing import Iterator

from pydicom import dcmread
from pydicom.datadict import keyword_for_tag
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.filewriter import dcmwrite
from pydicom.tag import BaseTag

from apolo_node.deid.actions import (
    DUMMY_BY_VR,
    creator_of,
    element_vr,
    is_standard_uid,
    private_creators,
)
from apolo_node.deid.patient import PSEUDONYM_PREFIX
from apolo_node.deid.profile import Action, Profile

MIN_LENGTH = 3  # shorter values (sex, flags, small numbers) are too common to test
MIN_NUMBER_LENGTH = 6  # a bare number shorter than this turns up everywhere by chance
MIN_BINARY_RUN = 6  # printable runs at least this long are taken from binary values
PIXEL_TAGS = frozenset({0x7FE00008, 0x7FE00009, 0x7FE00010})
TEXT_VRS = frozenset(
    {"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UI", "UR", "UT"}
)
# Kept values of these VRs are codes, dates, times and numbers: a PHI value equal to one of them
# as a whole (a newborn's birth date equal to a kept study date) proves nothing when it shows up.
CODED_VRS = frozenset({"AS", "CS", "DA", "DS", "DT", "IS", "TM"})
BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
TRIVIAL = frozenset(
    {str(v).upper() for v in DUMMY_BY_VR.values() if isinstance(v, str)}
    | {PSEUDONYM_PREFIX, "ANONYMOUS", "NONE", "UNKNOWN", "N/A", "NULL", "YES", "NO", "REMOVED", "OTHER"}
)
_NUMBER = re.compile(r"[+-]?[0-9][0-9.]*([eE][+-]?[0-9]+)?")
_FILLER = re.compile(r"[\s0.:^\\/,;_+-]*")
_PRINTABLE_RUN = re.compile(rb"[\x20-\x7e]{%d,}" % MIN_BINARY_RUN)


class PHILeakError(ValueError):
    """An original identifying value is still in the de-identified output (value not shown)."""


@dataclass(frozen=True)
class _Phi:
    text: str  # lower case
    pattern: re.Pattern[str] | None  # digit-bounded match for numbers and UIDs
    needles: tuple[bytes, ...]  # the value as encoded bytes (utf-8, latin-1), ASCII lower case
    where: str  # attribute and path, no value

    @classmethod
    def of(cls, text: str, where: str) -> _Phi:
        pattern = None
        if _NUMBER.fullmatch(text):
            pattern = re.compile(r"(?<![0-9])" + re.escape(text.lower()) + r"(?![0-9])")
        needles = {text.encode("utf-8").lower()}
        try:
            needles.add(text.encode("latin-1").lower())
        except UnicodeEncodeError:
            pass
        return cls(text.lower(), pattern, tuple(needles), where)

    def in_text(self, haystack: str) -> bool:
        """Whether the value occurs in a lower-cased text."""
        if self.pattern is not None:
            return self.pattern.search(haystack) is not None
        return self.text in haystack

    def in_bytes(self, haystack: bytes) -> int:
        """Offset of the value in ASCII-lower-cased bytes, or -1."""
        if self.pattern is not None:
            hit = re.search(self.pattern.pattern.encode("ascii"), haystack)
            return hit.start() if hit else -1
        return max(haystack.find(n) for n in self.needles)


Creators = dict[tuple[int, int], str]


def _walk(ds: Dataset, path: str = "") -> Iterator[tuple[str, Dataset, Creators, BaseTag, str]]:
    """(path, dataset, its private creators, tag, vr) for every element at every depth."""
    creators = private_creators(ds)
    for tag in list(ds.keys()):
        vr = element_vr(ds, tag)
        yield path, ds, creators, tag, vr
        if vr == "SQ":
            for i, item in enumerate(ds[tag].value or []):
                yield from _walk(item, f"{path}{_label(tag, creators)}[{i}].")


def _label(tag: BaseTag, creators: Creators) -> str:
    name = keyword_for_tag(tag) or ("private" if tag.is_private else "unknown")
    return f"{name}({tag.group:04X},{tag.element:04X})"


def _texts(value: object, vr: str) -> list[str]:
    """The strings a value carries: each value of a multi-valued text, each PN component."""
    if value is None:
        return []
    if isinstance(value, (bytes, bytearray)):
        if vr in TEXT_VRS:
            value = bytes(value).decode("latin-1")
        else:
            return [m.decode("ascii") for m in _PRINTABLE_RUN.findall(bytes(value))]
    if vr not in TEXT_VRS and vr not in BINARY_VRS:
        return []
    values = list(value) if isinstance(value, (list, tuple, MultiValue)) else [value]
    out: list[str] = []
    for v in values:
        text = str(v)
        out.append(text)
        if vr == "PN":
            out.extend(re.split(r"[\^=]", text))
    return out


def _significant(text: str, vr: str) -> str | None:
    text = text.strip().strip("\x00").strip()
    if len(text) < MIN_LENGTH or text.upper() in TRIVIAL or _FILLER.fullmatch(text):
        return None
    if vr == "UI" and is_standard_uid(text):
        return None
    if _NUMBER.fullmatch(text) and len(text) < MIN_NUMBER_LENGTH:
        return None
    return text


def phi_values(original: Dataset, profile: Profile) -> list[_Phi]:
    """Every identifying value of ``original`` under ``profile``, each with where it came from."""
    kept_codes = set()
    found: dict[str, _Phi] = {}
    meta = getattr(original, "file_meta", None)
    walks = [_walk(meta, "file meta.")] if meta is not None else []
    for path, ds, creators, tag, vr in itertools.chain(*walks, _walk(original)):
        if vr == "SQ" or int(tag) in PIXEL_TAGS:
            continue
        action = profile.action_for(tag, vr, creator_of(creators, tag))
        if action is Action.KEEP or action is Action.SAFE_PRIVATE:
            if vr in CODED_VRS:
                kept_codes.update(t.strip().lower() for t in _texts(ds[tag].value, vr))
            continue
        for text in _texts(ds[tag].value, vr):
            sig = _significant(text, vr)
            if sig is None or sig.lower() in found:
                continue
            found[sig.lower()] = _Phi.of(sig, f"{path}{_label(tag, creators)}")
    return [p for p in found.values() if p.text not in kept_codes]


def _output_texts(output: Dataset) -> Iterator[tuple[str, str]]:
    meta = getattr(output, "file_meta", None)
    sources = [("file meta.", meta)] if meta is not None else []
    for prefix, ds in sources + [("", output)]:
        for path, item, creators, tag, vr in _walk(ds):
            if vr == "SQ" or int(tag) in PIXEL_TAGS:
                continue
            value = item[tag].value
            if isinstance(value, (bytes, bytearray)):
                texts = [bytes(value).decode("latin-1")]
            else:
                texts = _texts(value, vr) if vr in TEXT_VRS else []
            for text in texts:
                yield f"{prefix}{path}{_label(tag, creators)}", text.lower()


def encode(ds: Dataset) -> bytes:
    """The Part 10 bytes pydicom writes for ``ds``."""
    buf = io.BytesIO()
    dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()


def _outside_pixels(encoded: bytes) -> tuple[bytes, int, int]:
    """The encoded bytes less the Pixel Data value, ASCII lower case; where it was and its length.

    The value is cut out (one NUL stands in its place, so no value can be joined across it)
    rather than blanked: searching megabytes of zeros for every identifying value is slow.
    """
    parsed = dcmread(io.BytesIO(encoded), force=True)
    raw = parsed.get_item(0x7FE00010)
    start = getattr(raw, "value_tell", None)
    if raw is None or start is None or raw.value is None:
        return encoded.lower(), len(encoded), 0
    end = start + len(raw.value)
    return encoded[:start].lower() + b"\x00" + encoded[end:].lower(), start, end - start


def verify_deidentified(
    original: Dataset, output: Dataset, profile: Profile, encoded: bytes | None = None
) -> None:
    """Raise PHILeakError if any identifying value of ``original`` is still in ``output``.

    ``encoded`` is the file as it will be written (``encode(output)`` when None): its bytes
    outside Pixel Data are searched too, so the preamble and file meta cannot leak.
    """
    phis = phi_values(original, profile)
    if not phis:
        return
    texts = list(_output_texts(output))
    joined = "\x00".join(t for _, t in texts)
    for phi in phis:
        if phi.in_text(joined):
            where = next((w for w, t in texts if phi.in_text(t)), "several elements")
            raise PHILeakError(
                f"de-identification check failed: a value of {phi.where} in the original "
                f"appears in the output at {where}"
            )
    raw, cut_at, cut_length = _outside_pixels(encode(output) if encoded is None else encoded)
    for phi in phis:
        at = phi.in_bytes(raw)
        if at > cut_at:
            at += cut_length - 1  # the offset in the file as written
        if at >= 0:
            raise PHILeakError(
                f"de-identification check failed: a value of {phi.where} in the original "
                f"appears in the encoded output at byte {at}"
            )
