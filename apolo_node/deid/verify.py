"""Fail-closed check that no identifying value of the original survives de-identification.

It collects every value of the original's PHI attributes (any element whose resolved action is
not "keep", at any depth, private ones and file meta included) and looks for each, as whole
tokens (:mod:`apolo_node.deid.tokens`), in every element value of the output at any depth and in
the encoded bytes outside Pixel Data (preamble and file meta too). Its error names the attribute
and where it sits, never the value. No setting turns it off.

What is a leak, and what is only a coincidence (the rules, each tested both ways):

* A leak is an identifying value of the original found as whole token(s) in an output value
  that we wrote or changed, or in bytes that belong to no value (preamble, headers). "Mary" in
  "PRIMARY" or "Ali" in "Confidentiality" is not a token match and never counts; "MARY" as a
  value of Image Type, "Smith, John" or "SMITH01" in Image Comments does.
* Our own values are not leaks, and each is recognised by its value, not only its place: the
  de-identification marks (Patient Identity Removed, De-identification Method and its Code
  Sequence, Longitudinal Temporal Information Modified) only when they hold exactly what we
  write; the patient pseudonyms only in their ``ANON`` form; a date at a shifted place only when
  it equals the original date at that same place moved by the patient's shift (``days``; when the
  caller does not give it, it is inferred from the file and accepted only if every shifted
  element agrees on one shift within the allowed range). So a shifted date that happens to equal
  another original date passes, and an original date left unshifted is caught. Pseudonymous
  UIDs (``2.25.`` and 39 digits) need no exemption: digit-bounded matching cannot find an
  original value inside them, and an ID planted inside a UID is still caught.
* A value the profile keeps by design (action K) that the output holds exactly as the original
  held it at the same place is the original's own kept value, not something our actions put
  there: "Toshiba" (Institution Name) inside Manufacturer "TOSHIBA_MEC", a private value equal
  to Manufacturer Model Name, a Study Description equal to Position Reference Indicator, a name
  that is also a coding scheme. A match only inside such values is a coincidence of the source.
  The same value at a kept place where the original held something else (our bug copied it
  there) is a leak.
* Except for the patient's strongest identifiers: a whole Patient's Name of two or more
  components (also Other Patient Names, Birth Name, Mother's Birth Name) and a Patient ID, Other
  Patient ID, Medical Record Locator or Accession Number of six characters or more are caught
  even inside kept values: there they are the source's leak, not chance, and we refuse to pass
  them on.
* Standard UIDs, trivial values (dummies, "YES", "NONE"), values of fewer than three
  characters, bare numbers shorter than six digits and values of only punctuation and zeros
  are too common to mean anything and are not searched. A name word of two letters (Li, Wu, Ng)
  is searched in text values only, not in binary values or raw bytes, where two random letters
  between non-letters are common.

Known limits, each on the side of a refusal or of a leak the element search already covers: an
inferred shift (``days`` not given) would excuse a bug that writes, into a file's only shifted
date, another original date one to ten years earlier, so callers should pass ``days``; in the
raw bytes a letter or digit byte of a tag or length right next to a value can join its last
token (the bytes are read both as Latin-1 and as UTF-8 to limit this, the element search is not
affected); large binary values kept exactly as the original had them are searched as elements
and not again as bytes.
"""

from __future__ import annotations

import datetime as dt
import io
import itertools
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterable, Iterator

from pydicom import __version__ as pydicom_version
from pydicom import dcmread
from pydicom.datadict import keyword_for_tag
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.filewriter import dcmwrite
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID

from apolo_node.deid.actions import (
    DUMMY_BY_VR,
    creator_of,
    element_vr,
    is_standard_uid,
    private_creators,
    writes_as_is,
)
from apolo_node.deid.dates import MAX_SHIFT_DAYS, MIN_SHIFT_DAYS, shift_da, shift_dt
from apolo_node.deid.patient import PSEUDONYM_PREFIX
from apolo_node.deid.profile import BASIC_PROFILE_CODE, Action, Option, Profile
from apolo_node.deid.tokens import TokenText, canonical, tokens

MIN_LENGTH = 3  # shorter values (sex, flags, small numbers) are too common to test
MIN_NAME_WORD = 2  # a name word this short (Li, Wu) is still searched, in text values only
MIN_NUMBER_LENGTH = 6  # a bare number shorter than this turns up everywhere by chance
MIN_STRONG_ID = 6  # an ID at least this long is caught even inside a kept value
MIN_BINARY_RUN = 6  # printable runs at least this long are taken from binary values
PREAMBLE = 128  # bytes before "DICM": a NUL is put after them, so "DICM" ends no word
MIN_BLOB = 1024  # a kept binary value this large is searched as an element, not again as bytes
PIXEL_TAGS = frozenset({0x7FE00008, 0x7FE00009, 0x7FE00010})
TEXT_VRS = frozenset(
    {"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UI", "UR", "UT"}
)
BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
TRIVIAL = frozenset(
    {str(v).upper() for v in DUMMY_BY_VR.values() if isinstance(v, str)}
    | {PSEUDONYM_PREFIX, "ANONYMOUS", "NONE", "UNKNOWN", "N/A", "NULL", "YES", "NO", "REMOVED", "OTHER"}
)
# The patient's own names and IDs: caught even inside kept values (see the module docstring).
STRONG_NAMES = frozenset({0x00100010, 0x00101001, 0x00101005, 0x00101060})
STRONG_IDS = frozenset({0x00100020, 0x00101000, 0x00101090, 0x00080050})
_NUMBER = re.compile(r"[+-]?[0-9][0-9.]*([eE][+-]?[0-9]+)?")
_FILLER = re.compile(r"[\s0.:^\\/,;_+-]*")
_PRINTABLE_RUN = re.compile(rb"[\x20-\x7e]{%d,}" % MIN_BINARY_RUN)
_PSEUDONYMS = {
    "PatientName(0010,0010)": re.compile(rf"{PSEUDONYM_PREFIX}\^[BCDFGHJKLMNPQRSTVWXZ]{{10}}"),
    "PatientID(0010,0020)": re.compile(rf"{PSEUDONYM_PREFIX}[BCDFGHJKLMNPQRSTVWXZ]{{16}}"),
}
_CODES = [BASIC_PROFILE_CODE] + [o.code for o in Option]
_MARKS: dict[str, frozenset[str]] = {
    "PatientIdentityRemoved(0012,0062)": frozenset({"YES"}),
    "DeidentificationMethod(0012,0063)": frozenset(
        {f"apolo-node {BASIC_PROFILE_CODE.meaning}"[:64]} | {c.meaning[:64] for c in _CODES}
    ),
    "LongitudinalTemporalInformationModified(0028,0303)": frozenset({"MODIFIED", "UNMODIFIED", "REMOVED"}),
    "file meta.ImplementationClassUID(0002,0012)": frozenset({PYDICOM_IMPLEMENTATION_UID}),
    "file meta.ImplementationVersionName(0002,0013)": frozenset({f"PYDICOM {pydicom_version}"[:16]}),
}
_CODE_ITEM = "DeidentificationMethodCodeSequence(0012,0064)["
_CODE_TEXTS = frozenset(t for c in _CODES for t in (c.value, c.scheme_designator, c.meaning))

Creators = dict[tuple[int, int], str]
Value = str | bytes | tuple[str, ...]


class PHILeakError(ValueError):
    """An original identifying value is still in the de-identified output (value not shown)."""


@dataclass(frozen=True)
class _Phi:
    """One identifying value of the original, as a token pattern, and where it came from."""

    needle: str  # the value's tokens, as :func:`canonical` writes them
    key: str  # its longest token: a text without this token cannot hold the value
    where: str  # attribute and path, no value
    text_only: bool  # a short name word: not searched in binary values or raw bytes
    strong: bool  # the patient's own name or ID: no kept value excuses it


@dataclass(frozen=True)
class _Element:
    """One element's place and value, in the original or the output."""

    where: str
    tag: BaseTag
    vr: str
    action: Action
    value: Value | None


def _walk(ds: Dataset, path: str = "") -> Iterator[tuple[str, Dataset, Creators, BaseTag, str]]:
    """(path, dataset, its private creators, tag, vr) for every element at every depth."""
    creators = private_creators(ds)
    for tag in list(ds.keys()):
        vr = element_vr(ds, tag)
        yield path, ds, creators, tag, vr
        if vr == "SQ":
            for i, item in enumerate(ds[tag].value or []):
                yield from _walk(item, f"{path}{_label(tag)}[{i}].")


@lru_cache(maxsize=4096)
def _label(tag: BaseTag) -> str:
    name = keyword_for_tag(tag) or ("private" if tag.is_private else "unknown")
    return f"{name}({tag.group:04X},{tag.element:04X})"


Seen = dict[str, tuple[object, "Value | None"]]  # where -> (the element as stored, its value)


def _elements(
    ds: Dataset, profile: Profile, known: Seen | None = None, seen: Seen | None = None
) -> Iterator[_Element]:
    """Every non-sequence element of ``ds`` and its file meta outside Pixel Data, with its action.

    Values are read without converting the dataset's raw elements for good (see :func:`_peek`).
    A raw element that is still the very object ``known`` holds for its place has that value
    (the original's snapshot, for the elements an in-place clean left alone; a converted element
    may have been changed in place, so it is read again); each element read is put in ``seen``.
    """
    meta = getattr(ds, "file_meta", None)
    walks = [_walk(meta, "file meta.")] if meta is not None else []
    for path, item, creators, tag, vr in itertools.chain(*walks, _walk(ds)):
        if vr == "SQ" or int(tag) in PIXEL_TAGS:
            continue
        action = profile.action_for(tag, vr, creator_of(creators, tag))
        where = f"{path}{_label(tag)}"
        stored = item.get_item(tag)
        before = known.get(where) if known is not None else None
        if before is not None and before[0] is stored and isinstance(stored, RawDataElement):
            value = before[1]  # a raw element is immutable: the same object, the same bytes
        else:
            value = _value(_peek(item, tag, stored))
        if seen is not None:
            seen[where] = (stored, value)
        yield _Element(where, tag, vr, action, value)


# Text VRs decoded here as pydicom 3.0's converters do (values.py), without its per-element
# machinery: how each is split and stripped, and whether it uses the dataset's character set.
# tests/test_deid_verify.py compares the two on every text element of pydicom's own files.
_SPLIT_STRIP_DEFAULT = frozenset({"AS", "CS", "DA", "DT", "TM", "UI"})  # multi_string, iso8859
_SPLIT_STRIP_EACH = frozenset({"LO", "SH", "UC"})  # convert_text, the dataset's charset
_SINGLE = frozenset({"LT", "ST", "UT"})  # convert_single_string, the dataset's charset
_SIMPLE_CODECS = {"iso8859": "latin-1", "latin_1": "latin-1", "UTF8": "utf-8"}
_NOT_FAST = object()


def fast_value(item: Dataset, raw: RawDataElement) -> Value | object:
    """What ``_value(item[tag].value)`` gives for a raw text element, computed straight from its
    bytes; :data:`_NOT_FAST` where this shortcut does not apply (other VRs, implicit VR,
    multi-byte or unknown character sets, undecodable bytes), and pydicom decodes it."""
    vr, data = raw.VR, raw.value
    if data is None or not isinstance(data, bytes):
        return _NOT_FAST
    try:
        if vr in _SPLIT_STRIP_DEFAULT:
            items = data.decode("latin-1").rstrip(" \x00").split("\\")
        elif vr == "AE":
            items = [v.strip() for v in data.decode("latin-1").split("\\")]
        elif vr in _SPLIT_STRIP_EACH or vr in _SINGLE:
            charset = item._character_set  # noqa: SLF001 - pydicom's resolved codec names
            codec = _SIMPLE_CODECS.get(charset[0]) if len(charset) == 1 else None
            if codec is None:
                return _NOT_FAST
            text = data.decode(codec)
            if vr in _SINGLE:
                return text.rstrip("\x00 ")
            items = [v.rstrip("\x00 ") for v in text.split("\\")]
        else:
            return _NOT_FAST
    except UnicodeDecodeError:
        return _NOT_FAST
    return items[0] if len(items) == 1 else tuple(items)


def _peek(item: Dataset, tag: BaseTag, stored: object) -> object:
    """An element's value, leaving a raw (undecoded) element raw in ``item``.

    pydicom converts a raw element for good when it is read; a converted element is encoded
    again on writing, which is most of the cost of writing a file. Left raw, an element no
    action changes is written back as its own bytes.
    """
    if isinstance(stored, RawDataElement):
        fast = fast_value(item, stored)
        if fast is not _NOT_FAST:
            return fast
    value = item[tag].value
    if writes_as_is(stored) and stored.value is not None:  # type: ignore[attr-defined]
        item._dict[tag] = stored  # noqa: SLF001 - pydicom has no public way to keep it raw
    return value


def _value(value: object) -> Value | None:
    """A comparable form of an element value: bytes, one string, or a tuple of strings."""
    if value is None:
        return None
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, (list, tuple, MultiValue)):
        return tuple(str(v) for v in value)
    return str(value)


def _strings(value: Value | None) -> list[str]:
    if value is None:
        return []
    if isinstance(value, tuple):
        return list(value)
    return [value] if isinstance(value, str) else [value.decode("latin-1")]


# -- the original's identifying values ----------------------------------------------------


def _needles(elem: _Element) -> Iterator[tuple[str, bool, bool]]:
    """(text, text_only, strong) for each value worth searching for in one PHI element."""
    value = elem.value
    if isinstance(value, bytes):
        if elem.vr in TEXT_VRS:
            value = value.decode("latin-1")
        elif elem.vr in BINARY_VRS:
            for run in _PRINTABLE_RUN.findall(value):
                if _significant(run.decode("ascii")):
                    yield run.decode("ascii"), False, False
            return
        else:
            return
    if elem.vr not in TEXT_VRS:
        return
    for text in _strings(value):
        text = text.strip().strip("\x00").strip()
        if _significant(text):
            strong = (int(elem.tag) in STRONG_IDS and len("".join(tokens(text))) >= MIN_STRONG_ID) or (
                int(elem.tag) in STRONG_NAMES and len([c for c in text.split("^") if c.strip()]) >= 2
            )
            yield text, False, strong
        if elem.vr == "PN":
            for part in re.split(r"[\^=]", text):
                if _significant(part.strip()):
                    yield part.strip(), False, False
                for word in tokens(part):
                    if len(word) >= MIN_NAME_WORD and not word.isdigit() and word.upper() not in TRIVIAL:
                        yield word, len(word) < MIN_LENGTH, False


def _significant(text: str) -> bool:
    """Whether a value is worth searching for: at least three letters or digits, not trivial."""
    if len("".join(tokens(text))) < MIN_LENGTH or text.upper() in TRIVIAL or _FILLER.fullmatch(text):
        return False
    if is_standard_uid(text):
        return False
    return not (_NUMBER.fullmatch(text) and len(text) < MIN_NUMBER_LENGTH)


def phi_values(original: Dataset, profile: Profile) -> list[_Phi]:
    """Every identifying value of ``original`` under ``profile``, each with where it came from."""
    return _phis(_elements(original, profile))


def _phis(elements: Iterable[_Element]) -> list[_Phi]:
    found: dict[str, _Phi] = {}
    for elem in elements:
        if elem.action in (Action.KEEP, Action.SAFE_PRIVATE):
            continue
        for text, text_only, strong in _needles(elem):
            needle = canonical(text)
            old = found.get(needle)
            if old is not None:  # the same tokens seen before: keep the strictest search
                text_only, strong = old.text_only and text_only, old.strong or strong
                found[needle] = _Phi(needle, old.key, old.where, text_only, strong)
            elif needle:
                key = max(needle.split(), key=len)
                found[needle] = _Phi(needle, key, elem.where, text_only, strong)
    return list(found.values())


# -- which output values are ours, or the original's kept ones ---------------------------------

OURS = "ours"
KEPT = "kept"


def _date(text: str) -> dt.date | None:
    digits = text.strip().replace(".", "")[:8]
    try:
        return dt.datetime.strptime(digits, "%Y%m%d").date()
    except ValueError:
        return None


def _shifted(value: Value | None, days: int, vr: str) -> Value | None:
    """``value`` moved by ``days`` as our date shift writes it."""
    shift = shift_da if vr == "DA" else shift_dt
    if isinstance(value, tuple):
        return tuple(str(shift(v, days)) if v else v for v in value)
    return shift(value, days) if isinstance(value, str) and value else value


def infer_shift(original: dict[str, _Element], output: list[_Element]) -> int | None:
    """The one shift every shifted date of ``output`` shows against ``original``; None if none.

    Accepted only inside our shift's range and only when every shifted element agrees.
    """
    deltas = set()
    for elem in output:
        source = original.get(elem.where)
        if elem.action is not Action.SHIFT_DATE or source is None:
            continue
        for old, new in zip(_strings(source.value), _strings(elem.value)):
            a, b = _date(old), _date(new)
            if a is not None and b is not None:
                deltas.add((b - a).days)
    if len(deltas) != 1:
        return None
    days = deltas.pop()
    return days if MIN_SHIFT_DAYS <= -days <= MAX_SHIFT_DAYS else None


def _exemption(elem: _Element, source: _Element | None, days: int | None) -> str | None:
    """OURS, KEPT or None (every match counts) for one output element."""
    strings = _strings(elem.value)
    marks = _MARKS.get(elem.where)
    if marks is not None and strings and all(s in marks for s in strings):
        return OURS
    if elem.where.startswith(_CODE_ITEM) and "." in elem.where and all(s in _CODE_TEXTS for s in strings):
        return OURS
    pseudonym = _PSEUDONYMS.get(elem.where)
    if pseudonym is not None and isinstance(elem.value, str) and pseudonym.fullmatch(elem.value):
        return OURS
    if source is None:
        return None
    if elem.action is Action.SHIFT_DATE and days is not None and elem.vr in ("DA", "DT"):
        return OURS if elem.value == _shifted(source.value, days, elem.vr) else None
    if elem.action in (Action.KEEP, Action.SAFE_PRIVATE) and source.value == elem.value:
        return KEPT
    return None


class _Texts:
    """The output's element values of one kind; a quick look at all of them, then at each."""

    def __init__(self, entries: list[tuple[str, TokenText]]) -> None:
        self.entries = entries
        self._all = TokenText("\x00".join(t.text for _, t in entries))

    def where(self, phi: _Phi) -> str | None:
        if not self._all.may_hold(phi.key):
            return None
        return next((w for w, t in self.entries if t.holds(phi.needle, phi.key)), None)


def _output_texts(
    output: Dataset, profile: Profile, original: dict[str, _Element], days: int | None,
    known: Seen | None = None,
) -> tuple[dict[tuple[str | None, bool], _Texts], list[tuple[str, TokenText]], list[bytes]]:
    """Output values grouped by (exemption, binary); the exempt values with their exemption; the
    large binary values kept as they were."""
    groups: dict[tuple[str | None, bool], list[tuple[str, TokenText]]] = {}
    exempt: list[tuple[str, TokenText]] = []
    blobs: list[bytes] = []
    out = list(_elements(output, profile, known))
    if days is None and profile.shifts_dates:
        days = infer_shift(original, out)
    for elem in out:
        binary = isinstance(elem.value, bytes) and elem.vr not in TEXT_VRS
        if elem.value is None or (elem.vr not in TEXT_VRS and not binary):
            continue
        text = TokenText("\\".join(_strings(elem.value)))
        kind = _exemption(elem, original.get(elem.where), days)
        groups.setdefault((kind, binary), []).append((elem.where, text))
        if kind is not None:
            exempt.append((kind, text))
        if kind == KEPT and binary and len(elem.value) >= MIN_BLOB:
            blobs.append(elem.value)
    return {k: _Texts(v) for k, v in groups.items()}, exempt, blobs


# -- the encoded bytes ------------------------------------------------------------------------


def encode(ds: Dataset) -> bytes:
    """The Part 10 bytes pydicom writes for ``ds``."""
    buf = io.BytesIO()
    dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()


def _pixel_value_span(encoded: bytes, output: Dataset | None) -> tuple[int, int] | None:
    """(offset, length) of Pixel Data's value in ``encoded``, the file ``output`` encodes to.

    The quick answer holds when Pixel Data is the output's last element, of defined length, and
    the file ends with its value: then the value is exactly the file's tail. Otherwise the file
    is read again to find it (encapsulated pixels, trailing padding, a big-endian swap).
    """
    if output is not None and 0x7FE00010 in output and max(output.keys()) == 0x7FE00010:
        value = output.get_item(0x7FE00010).value
        if isinstance(value, bytes) and value and len(value) % 2 == 0 and encoded.endswith(value):
            return len(encoded) - len(value), len(value)
    raw = dcmread(io.BytesIO(encoded), force=True).get_item(0x7FE00010)
    start = getattr(raw, "value_tell", None)
    if raw is not None and start is not None and raw.value is not None:
        return start, len(raw.value)
    return None


def _searched_bytes(
    encoded: bytes, blobs: list[bytes], output: Dataset | None = None
) -> tuple[bytes, list[tuple[int, int]]]:
    """The encoded bytes less Pixel Data and the ``blobs``; each cut's (offset, length) in the file.

    The values are cut out (one NUL stands in each place, so no value can be joined across it)
    rather than blanked: searching megabytes of zeros for every identifying value is slow. The
    blobs are large binary values the output kept exactly as the original had them (waveforms,
    LUTs): the element search has seen them. A NUL also goes between the preamble and "DICM".
    """
    cuts = [(PREAMBLE, 0)] if encoded[PREAMBLE : PREAMBLE + 4] == b"DICM" else []  # a boundary
    pixels = _pixel_value_span(encoded, output)
    if pixels is not None:
        cuts.append(pixels)
    for blob in blobs:
        at = encoded.find(blob)
        if at >= 0:
            cuts.append((at, len(blob)))
    pieces, kept, end = [], [], 0
    for at, length in sorted(cuts):
        if at >= end:
            pieces.append(encoded[end:at])
            kept.append((at, length))
            end = at + length
    pieces.append(encoded[end:])
    return b"\x00".join(pieces), kept


def _file_offset(at: int, cuts: list[tuple[int, int]]) -> int:
    """Where an offset in the cut bytes lies in the file as written."""
    for start, length in cuts:
        if at > start:
            at += length - 1
    return at


class _Decoded:
    """The raw bytes read as text two ways (Latin-1, and UTF-8 with undecodable bytes kept)."""

    def __init__(self, raw: bytes, exempt: list[tuple[str, TokenText]]) -> None:
        self.readings = [TokenText(raw.decode("latin-1"))]
        if not raw.isascii():
            self.readings.append(TokenText(raw.decode("utf-8", "surrogateescape")))
        self._exempt = exempt

    def offset(self, phi: _Phi) -> int | None:
        """Byte offset of the first match of ``phi`` outside the values it is excused in.

        A match is excused where it lies inside one of those values as written (found by its
        exact text, so binary bytes next to a value cannot hide it).
        """
        hits = [(n, r, r.find_all(phi.needle, phi.key)) for n, r in enumerate(self.readings)]
        if not any(found for _, _, found in hits):
            return None
        excuses = [
            t.text
            for kind, t in self._exempt
            if (kind == OURS or not phi.strong) and t.holds(phi.needle, phi.key)
        ]
        for n, reading, found in hits:
            for at in found:
                start, end = reading.text_span(at, phi.needle)
                if any(reading.text.find(v, max(0, end - len(v)), start + len(v)) >= 0 for v in excuses):
                    continue
                return start if n == 0 else len(reading.text[:start].encode("utf-8", "surrogateescape"))
        return None


@dataclass(frozen=True)
class Original:
    """The original's elements as values, taken before an in-place clean changes the dataset,
    and each element as stored then: one still there unchanged is not read again."""

    elements: tuple[_Element, ...]
    stored: Seen


def snapshot(original: Dataset, profile: Profile) -> Original:
    """What :func:`verify_deidentified` needs of ``original``, copied out of it."""
    stored: Seen = {}
    return Original(tuple(_elements(original, profile, seen=stored)), stored)


def verify_deidentified(
    original: Dataset | Original,
    output: Dataset,
    profile: Profile,
    encoded: bytes | None = None,
    *,
    days: int | None = None,
) -> None:
    """Raise PHILeakError if any identifying value of ``original`` is still in ``output``.

    ``original`` may be its :func:`snapshot`, taken before cleaning it in place.
    ``encoded`` is the file as it will be written (``encode(output)`` when None): its bytes
    outside Pixel Data are searched too, so the preamble and file meta cannot leak. ``days`` is
    the date shift the de-identifier applied to this patient (inferred from the file when None).
    """
    known: Seen = {}
    if isinstance(original, Original):
        elements, known = list(original.elements), original.stored
    else:
        elements = list(_elements(original, profile))
    phis = _phis(elements)
    if not phis:
        return
    sources = {e.where: e for e in elements}
    groups, exempt, blobs = _output_texts(output, profile, sources, days, known)
    for phi in phis:
        kinds = [None] + ([KEPT] if phi.strong else [])
        for kind, binary in itertools.product(kinds, (False, True)):
            texts = groups.get((kind, binary))
            if texts is None or (binary and phi.text_only):
                continue
            where = texts.where(phi)
            if where is not None:
                raise PHILeakError(
                    f"de-identification check failed: a value of {phi.where} in the original "
                    f"appears in the output at {where}"
                )
    raw, cuts = _searched_bytes(encode(output) if encoded is None else encoded, blobs, output)
    decoded = _Decoded(raw, exempt)
    for phi in phis:
        at = None if phi.text_only else decoded.offset(phi)
        if at is not None:
            raise PHILeakError(
                f"de-identification check failed: a value of {phi.where} in the original "
                f"appears in the encoded output at byte {_file_offset(at, cuts)}"
            )
