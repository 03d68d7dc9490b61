"""What the receiver acknowledges, input by input: every ordinary encoding is stored (undefined
lengths, implicit and explicit VR, encapsulated pixel data, objects without pixels), and
whatever does not parse to its end, nests too deep, is too large, or breaks negotiation is
refused with a precise status, leaving no file and no row, and the node serves on. Real
associations on 127.0.0.1; senders are pynetdicom, dcmtk and raw PDUs encoded by hand."""

from __future__ import annotations

import logging
import random
import re
import struct
import time
import warnings
import zlib
from copy import deepcopy
from io import BytesIO
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    RLELossless,
    generate_uid,
)
from pynetdicom import AE
from pynetdicom.dsutils import encode
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    BasicTextSRStorage,
    CTImageStorage,
    EnhancedSRStorage,
    Verification,
)

from apolo_node.catalog.engine import engine_for
from apolo_node.catalog.records import list_studies
from apolo_node.config import Config
from apolo_node.pipeline.ingest import ingest
from apolo_node.receive.dimse import MalformedCommand, decode_command, part10_header
from apolo_node.receive.store import Limits, UnreadableDataset, read_identifiers
from tests.conftest import make_config
from tests.deep_nesting import deep_content_file
from tests.nodes import running_node
from tests.peers import echoscu
from tests.synthetic import write_study
from tests.test_receive import raw_sender  # noqa: F401 (a fixture: files sent undecoded)
from tests.test_receive_protocol import associated, catalogued, connection, expect_abort, p_data, read_pdu

pytestmark = pytest.mark.usefixtures("need_dcmtk")
SEQUENCE_DELIMITER = b"\xfe\xff\xdd\xe0"
ITEM_DELIMITER = b"\xfe\xff\x0d\xe0"


# -- senders --------------------------------------------------------------------------------------


def send(port: int, items: list[Dataset | Path], sop_class: str, syntax: str) -> list[tuple[int, str]]:
    """(status, error comment) of a C-STORE of each item over one pynetdicom association."""
    ae = AE(ae_title="INPUTSCU")
    ae.add_requested_context(sop_class, [syntax])
    assoc = ae.associate("127.0.0.1", port, ae_title="APOLO")
    assert assoc.is_established, "association was not established"
    try:
        answers = []
        for item in items:
            rsp = assoc.send_c_store(item)
            answers.append((int(rsp.Status), str(rsp.get("ErrorComment", ""))))
        return answers
    finally:
        assoc.release()


def part10(path: Path, ds: Dataset, syntax: str, body: bytes | None = None) -> Path:
    """``ds`` (or ``body``, its data set bytes as given) behind a file meta saying ``syntax``."""
    if body is None:
        body = encode(ds, syntax == ImplicitVRLittleEndian, True)
        assert body is not None
    path.write_bytes(part10_header(ds.SOPClassUID, ds.SOPInstanceUID, syntax) + body)
    return path


def one_ct(tmp_path: Path) -> Dataset:
    return dcmread(write_study(tmp_path / "in", series=1, per_series=1).files[0])


def with_undefined_lengths(ds: Dataset) -> Dataset:
    """``ds`` with two levels of sequences whose sequences and items all have undefined length."""
    inner = Dataset()
    inner.CodeValue, inner.CodingSchemeDesignator, inner.CodeMeaning = "113691", "DCM", "IHE Profile"
    outer = Dataset()
    outer.ReferencedSOPClassUID, outer.ReferencedSOPInstanceUID = CTImageStorage, generate_uid()
    outer.PurposeOfReferenceCodeSequence = Sequence([inner])
    ds.ReferencedImageSequence = Sequence([outer, deepcopy(outer)])
    sequences = [(ds, "ReferencedImageSequence")]
    sequences += [(item, "PurposeOfReferenceCodeSequence") for item in ds.ReferencedImageSequence]
    for parent, keyword in sequences:
        parent[keyword].is_undefined_length = True  # pydicom's writer reads it from the element
        for item in parent[keyword].value:
            item.is_undefined_length_sequence_item = True
    return ds


def stored_files(node) -> list[Path]:  # type: ignore[no-untyped-def]
    return [node.spool.root / rel for rel in node.spool.incoming_files()]


def nothing_kept(node) -> bool:  # type: ignore[no-untyped-def]
    spool = node.spool
    return catalogued(node) == 0 and spool.incoming_files() == [] and list(spool.tmp.iterdir()) == []


# -- 1. undefined lengths -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "syntax", [ImplicitVRLittleEndian, ExplicitVRLittleEndian], ids=["implicit", "explicit"]
)
def test_undefined_length_sequences_from_pynetdicom_are_stored_byte_for_byte(
    cfg: Config, tmp_path: Path, syntax: str
) -> None:
    ds = with_undefined_lengths(one_ct(tmp_path))
    sent = encode(ds, syntax == ImplicitVRLittleEndian, True)
    assert sent is not None and sent.count(SEQUENCE_DELIMITER) == 3 and sent.count(ITEM_DELIMITER) == 4
    with running_node(cfg) as node:
        assert send(cfg.receive.port, [ds], CTImageStorage, syntax) == [(0, "")]
        [kept] = stored_files(node)
        raw = kept.read_bytes()
        assert raw.endswith(sent), "the data set is kept exactly as it was sent"
        back = dcmread(kept)
        assert back.file_meta.TransferSyntaxUID == syntax
        assert back == ds
        assert back.ReferencedImageSequence[1].PurposeOfReferenceCodeSequence[0].CodeValue == "113691"


def test_ingest_takes_a_file_with_undefined_length_sequences(cfg: Config, tmp_path: Path) -> None:
    ds = with_undefined_lengths(one_ct(tmp_path))
    folder = tmp_path / "files"
    folder.mkdir()
    part10(folder / "undefined.dcm", ds, ExplicitVRLittleEndian)
    with running_node(cfg):  # migrates the catalog; ingest runs beside it, as an operator would
        pass
    summary = ingest(cfg, [folder])
    assert (summary.stored, summary.refused) == (1, [])
    engine = engine_for(cfg)
    try:
        [study] = list_studies(engine)
        assert study.status == "reported", "de-identified and described, not quarantined"
    finally:
        engine.dispose()


# -- 2. a full parse of what we acknowledge ------------------------------------------------------


def header_cut(tmp_path: Path, ds: Dataset, into: int) -> Path:
    """The file cut ``into`` bytes into the Pixel Data element header."""
    path = part10(tmp_path / f"cut{into}.dcm", ds, ExplicitVRLittleEndian)
    raw = path.read_bytes()
    at = raw.rindex(b"\xe0\x7f\x10\x00OW")
    path.write_bytes(raw[: at + into])
    return path


def test_data_sets_that_do_not_parse_whole_are_refused_precisely(
    cfg: Config, tmp_path: Path, raw_sender: None
) -> None:
    ds = one_ct(tmp_path)
    cuts = [header_cut(tmp_path, ds, n) for n in range(1, 8)]
    implicit_body = encode(ds, True, True)
    mislabelled = part10(tmp_path / "implicit-as-explicit.dcm", ds, ExplicitVRLittleEndian, implicit_body)
    short = deepcopy(ds)
    short.PixelData = ds.PixelData[:-2]
    short_pixels = part10(tmp_path / "short.dcm", short, ExplicitVRLittleEndian)
    with running_node(cfg) as node:
        files = [*cuts, mislabelled, short_pixels]
        answers = send(cfg.receive.port, files, CTImageStorage, ExplicitVRLittleEndian)
        assert answers[:7] == [(0xC000, "the data set ends inside an element header")] * 7
        assert answers[7] == (0xC000, "element (0008,0008) has no valid VR: not explicit VR data")
        assert answers[8][0] == 0xC000
        assert answers[8][1].startswith("Pixel Data is shorter than Rows x Columns")
        assert nothing_kept(node)
        assert echoscu(cfg.receive.port).returncode == 0


def test_odd_but_valid_data_sets_are_stored(cfg: Config, tmp_path: Path, raw_sender: None) -> None:
    padded = one_ct(tmp_path / "a")
    padded.PixelData = padded.PixelData + b"\0\0"
    compressed = one_ct(tmp_path / "b")
    compressed.compress(RLELossless, generate_instance_uid=False)  # undefined-length fragments
    report = Dataset()
    report.SOPClassUID, report.SOPInstanceUID = BasicTextSRStorage, generate_uid()
    report.StudyInstanceUID, report.SeriesInstanceUID, report.Modality = generate_uid(), generate_uid(), "SR"
    report.ValueType = "CONTAINER"
    report.ContentSequence = Sequence([Dataset()])
    report.ContentSequence[0].ValueType, report.ContentSequence[0].TextValue = "TEXT", "no pixels here"
    with running_node(cfg) as node:
        assert send(
            cfg.receive.port, [part10(tmp_path / "padded.dcm", padded, ExplicitVRLittleEndian)],
            CTImageStorage, ExplicitVRLittleEndian,
        ) == [(0, "")]
        rle = tmp_path / "rle.dcm"
        compressed.save_as(rle, enforce_file_format=True)
        assert SEQUENCE_DELIMITER in rle.read_bytes()
        assert send(cfg.receive.port, [rle], CTImageStorage, RLELossless) == [(0, "")]
        assert send(
            cfg.receive.port, [part10(tmp_path / "sr.dcm", report, ImplicitVRLittleEndian)],
            BasicTextSRStorage, ImplicitVRLittleEndian,
        ) == [(0, "")]
        assert catalogued(node) == 3


# The walk's rules one by one, on bytes in memory: what each must catch, what it must let through.

def ct_bytes(  # type: ignore[no-untyped-def]
    mutate=None, syntax: str = ExplicitVRLittleEndian, meta: str = ""
) -> bytes:
    """A small CT as a Part 10 stream in ``syntax``, after ``mutate(ds)``; its file meta says
    ``meta`` if given (a lie, or a private syntax), else ``syntax``."""
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = CTImageStorage, "1.2.3.4", "CT"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = "1.2.3", "1.2.3.1"
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns, ds.BitsAllocated, ds.BitsStored, ds.HighBit = 4, 4, 16, 16, 15
    ds.PixelRepresentation = 0
    ds.PixelData = bytes(32)
    if mutate is not None:
        mutate(ds)
    body = encode(ds, syntax == ImplicitVRLittleEndian, syntax != "1.2.840.10008.1.2.2")
    assert body is not None
    return part10_header(CTImageStorage, "1.2.3.4", meta or syntax) + body


def _set(**values: object):  # type: ignore[no-untyped-def]
    def mutate(ds: Dataset) -> None:
        for keyword, value in values.items():
            if value is None:
                delattr(ds, keyword)
            else:
                setattr(ds, keyword, value)
    return mutate


def _element(group: int, element: int, vr: bytes, length: int) -> bytes:
    return struct.pack("<HH2sHI", group, element, vr, 0, length)


ITEM = struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF)
ITEM_END = struct.pack("<HHI", 0xFFFE, 0xE00D, 0)
SEQ_END = struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
IMPLICIT_TEXT = struct.pack("<HHI", 0x0040, 0xA160, 4) + b"text"


def _deep(depth: int, undefined: bool, tmp: Path) -> bytes:
    return deep_content_file(tmp / f"d{depth}{undefined}.dcm", depth, undefined=undefined).read_bytes()


def _item_past_its_sequence(tmp: Path) -> bytes:
    raw = bytearray(_deep(2, False, tmp))
    at = raw.index(b"\xfe\xff\x00\xe0")
    struct.pack_into("<I", raw, at + 4, struct.unpack_from("<I", raw, at + 4)[0] + 100)
    return bytes(raw)


def _rle(syntax: str) -> bytes:
    ds = dcmread(BytesIO(ct_bytes()))
    ds.compress(RLELossless, generate_instance_uid=False)
    body = encode(ds, False, True)
    assert body is not None
    return part10_header(CTImageStorage, "1.2.3.4", syntax) + body


def _deflated(cut: int) -> bytes:
    body = encode(dcmread(BytesIO(ct_bytes())), False, True)
    assert body is not None
    squeezer = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    deflated = squeezer.compress(body) + squeezer.flush()
    header = part10_header(CTImageStorage, "1.2.3.4", DeflatedExplicitVRLittleEndian)
    return header + deflated[: len(deflated) - cut]


WALK_CASES = [
    # (id, bytes from tmp_path, the error's start or None for accepted)
    ("plain", lambda t: ct_bytes(), None),
    ("implicit", lambda t: ct_bytes(syntax=ImplicitVRLittleEndian), None),
    ("big-endian", lambda t: ct_bytes(syntax="1.2.840.10008.1.2.2"), None),
    ("private-syntax-explicit", lambda t: ct_bytes(meta="1.2.3.4.5.6"), None),
    ("private-syntax-implicit", lambda t: ct_bytes(syntax=ImplicitVRLittleEndian, meta="1.2.3.4.5.6"), None),
    ("trailing-padding", lambda t: ct_bytes() + _element(0xFFFC, 0xFFFC, b"OB", 4) + bytes(4), None),
    ("padded-pixels", lambda t: ct_bytes(_set(PixelData=bytes(34))), None),
    ("no-pixels", lambda t: ct_bytes(_set(PixelData=None, Rows=None)), None),
    ("one-bit-pixels", lambda t: ct_bytes(_set(Rows=8, Columns=8, BitsAllocated=1, PixelData=bytes(8))),
     None),
    ("one-bit-pixels-short", lambda t: ct_bytes(_set(Rows=8, Columns=8, BitsAllocated=1, PixelData=bytes(6))),
     "Pixel Data is shorter"),
    ("ybr-422", lambda t: ct_bytes(_set(SamplesPerPixel=3, BitsAllocated=8,
                                      PhotometricInterpretation="YBR_FULL_422", PixelData=bytes(32))),
     None),
    ("ybr-422-short", lambda t: ct_bytes(_set(SamplesPerPixel=3, BitsAllocated=8,
                                            PhotometricInterpretation="YBR_FULL_422", PixelData=bytes(30))),
     "Pixel Data is shorter"),
    ("frames-short", lambda t: ct_bytes(_set(NumberOfFrames=2)), "Pixel Data is shorter"),
    ("frames-whole", lambda t: ct_bytes(_set(NumberOfFrames=2, PixelData=bytes(64))), None),
    ("pixels-without-rows", lambda t: ct_bytes(_set(Rows=None)), "Pixel Data without Rows"),
    ("rle", lambda t: _rle(RLELossless), None),
    ("rle-labelled-native", lambda t: _rle(ExplicitVRLittleEndian), "Pixel Data is encapsulated in a native"),
    ("deflated", lambda t: _deflated(0), None),
    ("deflated-truncated", lambda t: _deflated(8), "deflated data set is truncated"),
    ("deflated-garbage", lambda t: ct_bytes(meta=DeflatedExplicitVRLittleEndian),
     "deflated data set cannot be inflated"),
    ("sequence-never-closed", lambda t: _deep(3, True, t)[:-16],
     "the data set ends inside an undefined-length"),
    ("item-past-its-sequence", _item_past_its_sequence, "a sequence item runs past its sequence"),
    ("stray-item-delimiter", lambda t: ct_bytes() + ITEM_END, "an item delimiter outside"),
    ("undefined-text", lambda t: ct_bytes() + _element(0x7FE1, 0x0010, b"UT", 0xFFFFFFFF),
     "element (7FE1,0010) has undefined length but is not a sequence"),
    ("undefined-un-holds-implicit-items", lambda t: ct_bytes()
     + _element(0x7FE1, 0x0011, b"UN", 0xFFFFFFFF) + ITEM + IMPLICIT_TEXT + ITEM_END + SEQ_END, None),
    ("value-past-the-end", lambda t: ct_bytes()[:-3],
     "element (7FE0,0010) runs past its item or the data set"),
    ("no-dicm", lambda t: ct_bytes()[:128] + b"DICN" + ct_bytes()[132:], "not a DICOM Part 10 stream"),
    ("no-transfer-syntax", lambda t: ct_bytes().replace(b"\x02\x00\x10\x00UI", b"\x02\x00\x11\x00UI"),
     "file meta has no TransferSyntaxUID"),
]


@pytest.mark.parametrize(("make", "error"), [pytest.param(m, e, id=i) for i, m, e in WALK_CASES])
def test_the_walk_refuses_each_broken_rule_and_takes_each_valid_encoding(  # type: ignore[no-untyped-def]
    make, error, tmp_path: Path
) -> None:
    raw = make(tmp_path)
    if error is None:
        assert read_identifiers(raw).sop_instance_uid
    else:
        with pytest.raises(UnreadableDataset, match=re.escape(error)):
            read_identifiers(raw)


def test_a_sequence_nested_in_an_undefined_length_un_counts_toward_the_depth() -> None:
    nested = _element(0x7FE1, 0x0011, b"UN", 0xFFFFFFFF) + ITEM
    inner = struct.pack("<HHI", 0x0040, 0xA730, 0xFFFFFFFF) + ITEM  # implicit VR inside the UN
    closing = ITEM_END + SEQ_END
    raw = ct_bytes() + nested + inner * 2 + IMPLICIT_TEXT + closing * 3
    assert read_identifiers(raw, Limits(max_depth=3, max_size=1 << 20)).sop_instance_uid == "1.2.3.4"
    with pytest.raises(UnreadableDataset, match=re.escape("sequence nesting deeper than 2")):
        read_identifiers(raw, Limits(max_depth=2, max_size=1 << 20))


def test_a_refused_uid_is_named_never_logged_or_warned(caplog: pytest.LogCaptureFixture) -> None:
    """pydicom's UID() logs and warns an invalid value; the walk checks UIDs without it."""
    marker = "PHI" + generate_uid()[-12:]
    bad_meta = ct_bytes(meta=f"1.2.840.10008.1.2.1.{marker}")
    short = f"1.{marker}"[:8]  # as long as the UID it stands in for
    bad_instance = ct_bytes().replace(b"1.2.3.4\0", short.encode())
    caplog.clear()
    caplog.set_level(logging.DEBUG)
    with warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always")
        with pytest.raises(UnreadableDataset, match="^file meta TransferSyntaxUID is not a valid UID$"):
            read_identifiers(bad_meta)
        with pytest.raises(UnreadableDataset, match="^SOPInstanceUID is not a valid UID$"):
            read_identifiers(bad_instance)
    for leak in (marker, short):
        assert leak not in caplog.text and not [w for w in warned if leak in str(w.message)]


def test_a_thousand_mutated_data_sets_are_read_or_refused_never_raised(tmp_path: Path) -> None:
    """Seeded: bytes flipped, cut out or put in, anywhere after the preamble, in each encoding."""
    bases = [
        ct_bytes(), ct_bytes(syntax=ImplicitVRLittleEndian), _rle(RLELossless), _deflated(0),
        _deep(5, True, tmp_path), _deep(5, False, tmp_path),
    ]
    rng = random.Random(11)
    outcomes = {"read": 0, "refused": 0}
    for _ in range(1_000):
        raw = bytearray(rng.choice(bases))
        for _ in range(rng.randint(1, 3)):
            at, roll = rng.randrange(128, len(raw)), rng.random()
            if roll < 0.5:
                raw[at] = rng.randrange(256)
            elif roll < 0.75:
                del raw[at : at + rng.randint(1, 8)]
            else:
                raw[at:at] = rng.randbytes(rng.randint(1, 8))
        try:
            read_identifiers(bytes(raw), Limits(max_depth=32, max_size=1 << 20))
            outcomes["read"] += 1
        except UnreadableDataset:
            outcomes["refused"] += 1
    assert outcomes["read"] > 50 and outcomes["refused"] > 500, outcomes


# -- 3. nesting depth and size ------------------------------------------------------------------


@pytest.mark.parametrize("undefined", [False, True], ids=["defined", "undefined"])
def test_nesting_deeper_than_max_depth_is_refused_fast_and_the_node_serves_on(
    cfg: Config, tmp_path: Path, raw_sender: None, undefined: bool
) -> None:
    limit = cfg.receive.max_depth
    files = [
        deep_content_file(tmp_path / f"deep{n}.dcm", n, undefined=undefined)
        for n in (limit, limit + 1, 250, 5_000, 100_000)
    ]
    with running_node(cfg) as node:
        started = time.monotonic()
        answers = send(cfg.receive.port, files, EnhancedSRStorage, ExplicitVRLittleEndian)
        assert time.monotonic() - started < 20
        assert answers[0] == (0, "")
        assert answers[1:] == [(0xC000, f"sequence nesting deeper than {limit}")] * 4
        assert catalogued(node) == 1 and len(node.spool.incoming_files()) == 1
        assert echoscu(cfg.receive.port).returncode == 0


def test_a_data_set_over_max_instance_size_is_out_of_resources(tmp_path: Path, raw_sender: None) -> None:
    cfg = make_config(tmp_path, receive={"max_instance_size": 4096})
    big = one_ct(tmp_path)  # about 9 KB
    small = deep_content_file(tmp_path / "small.dcm", 2)
    bomb = deepcopy(big)
    bomb.PixelData = bytes(len(big.PixelData))
    bomb.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    bombed = tmp_path / "bomb.dcm"
    bomb.save_as(bombed, enforce_file_format=True)
    assert bombed.stat().st_size < 4096, "small on the wire, over the limit once inflated"
    with running_node(cfg) as node:
        [(status, comment)] = send(
            cfg.receive.port, [part10(tmp_path / "big.dcm", big, ExplicitVRLittleEndian)],
            CTImageStorage, ExplicitVRLittleEndian,
        )
        assert status == 0xA700 and comment.startswith("data set is larger than max_instance_size")
        [(status, comment)] = send(cfg.receive.port, [bombed], CTImageStorage, DeflatedExplicitVRLittleEndian)
        assert status == 0xA700 and comment.startswith("data set is larger than max_instance_size")
        assert nothing_kept(node)
        assert send(cfg.receive.port, [small], EnhancedSRStorage, ExplicitVRLittleEndian) == [(0, "")]
        assert echoscu(cfg.receive.port).returncode == 0


def test_a_deflated_data_set_within_the_limit_is_stored(
    cfg: Config, tmp_path: Path, raw_sender: None
) -> None:
    ds = with_undefined_lengths(one_ct(tmp_path))
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    path = tmp_path / "deflated.dcm"
    ds.save_as(path, enforce_file_format=True)
    with running_node(cfg) as node:
        assert send(cfg.receive.port, [path], CTImageStorage, DeflatedExplicitVRLittleEndian) == [(0, "")]
        [kept] = stored_files(node)
        assert dcmread(kept) == ds


# -- 4. negotiation and command sets -------------------------------------------------------------


def _item(kind: int, body: bytes) -> bytes:
    return struct.pack(">BxH", kind, len(body)) + body


def associate_rq(
    contexts: list[tuple[int, str | None, list[str]]], called: str = "APOLO", calling: str = "RAWSCU"
) -> bytes:
    """An A-ASSOCIATE-RQ encoded by hand (PS3.8 9.3.2), so that it may break the rules."""
    body = struct.pack(">HH", 1, 0) + called.encode().ljust(16) + calling.encode().ljust(16) + bytes(32)
    body += _item(0x10, b"1.2.840.10008.3.1.1.1")
    for context_id, abstract, transfers in contexts:
        sub = _item(0x30, abstract.encode()) if abstract is not None else b""
        sub += b"".join(_item(0x40, ts.encode()) for ts in transfers)
        body += _item(0x20, bytes([context_id, 0, 0, 0]) + sub)
    body += _item(0x50, _item(0x51, struct.pack(">I", 16384)))
    return struct.pack(">BxI", 0x01, len(body)) + body


ECHO_CONTEXT = (1, Verification, [ImplicitVRLittleEndian])


@pytest.mark.parametrize(
    "contexts",
    [
        pytest.param([ECHO_CONTEXT, (3, None, [ExplicitVRLittleEndian])], id="no-abstract-syntax"),
        pytest.param([ECHO_CONTEXT, (3, CTImageStorage, [])], id="no-transfer-syntax"),
    ],
)
def test_a_malformed_presentation_context_is_rejected_not_crashed_on(
    node_cfg: Config, contexts: list[tuple[int, str | None, list[str]]]
) -> None:
    with running_node(node_cfg), connection(node_cfg.receive.port) as sock:
        sock.sendall(associate_rq(contexts))
        kind, body = read_pdu(sock)
        assert kind == 0x03, "A-ASSOCIATE-RJ expected"
        assert tuple(body[1:4]) == (1, 2, 1)  # permanent, service provider (ACSE), no reason given
        assert echoscu(node_cfg.receive.port).returncode == 0


def command_set(field: int, sop_class: bytes, sop_instance: bytes | None = None) -> bytes:
    """A command set encoded by hand (implicit VR little endian), UIDs of any length."""
    elements = [(0x0002, sop_class), (0x0100, struct.pack("<H", field)), (0x0110, b"\x07\x00")]
    elements.append((0x0800, struct.pack("<H", 0x0101 if sop_instance is None else 0x0001)))
    if sop_instance is not None:
        elements += [(0x0700, b"\x00\x00"), (0x1000, sop_instance)]
    body = b"".join(struct.pack("<HHI", 0, tag, len(value)) + value for tag, value in elements)
    return struct.pack("<HHII", 0, 0, 4, len(body)) + body


LONG_UID = b"1." + b"2" * 65_534  # 65,536 bytes
UID_65 = b"1." + b"3" * 63  # one character over
CT = CTImageStorage.encode()


@pytest.mark.parametrize(
    ("context", "cmd"),
    [
        pytest.param(1, command_set(0x0030, LONG_UID), id="echo-sop-class-65536"),
        pytest.param(3, command_set(0x0001, LONG_UID, b"1.2.3.4"), id="store-sop-class-65536"),
        pytest.param(3, command_set(0x0001, CT, LONG_UID), id="store-sop-instance-65536"),
        pytest.param(3, command_set(0x0001, CT, UID_65), id="store-sop-instance-65-chars"),
    ],
)
def test_a_command_with_an_overlong_uid_is_aborted_and_the_node_serves_on(
    node_cfg: Config, context: int, cmd: bytes
) -> None:
    """The 65,536-byte UIDs once raised struct.error writing the file meta; PS3.7 lets us abort."""
    with running_node(node_cfg) as node, associated(node_cfg.receive.port) as sock:
        sock.sendall(p_data(context, 0x03, cmd))
        expect_abort(sock)
        assert echoscu(node_cfg.receive.port).returncode == 0
        assert catalogued(node) == 0


def test_command_uids_longer_than_64_characters_are_malformed() -> None:
    with pytest.raises(MalformedCommand, match="Affected SOP Instance UID is longer than 64 characters"):
        decode_command(command_set(0x0001, CT, UID_65))
    with pytest.raises(MalformedCommand, match="Affected SOP Class UID is longer than 64 characters"):
        decode_command(command_set(0x0030, LONG_UID))
    sixty_four = b"1." + b"4" * 62
    command = decode_command(command_set(0x0001, CT, sixty_four))
    assert command.sop_instance_uid == sixty_four.decode()


# -- 5. the called AE title ----------------------------------------------------------------------


def test_a_called_ae_title_other_than_ours_is_rejected(node_cfg: Config) -> None:
    with running_node(node_cfg), connection(node_cfg.receive.port) as sock:
        sock.sendall(associate_rq([ECHO_CONTEXT], called="SOMEONEELSE"))
        kind, body = read_pdu(sock)
        assert kind == 0x03, "A-ASSOCIATE-RJ expected"
        assert tuple(body[1:4]) == (1, 1, 7)  # permanent, service user, called AE title not recognized
        assert echoscu(node_cfg.receive.port, called_aet="SOMEONEELSE").returncode != 0
        assert echoscu(node_cfg.receive.port).returncode == 0


def test_any_called_ae_title_is_taken_when_the_check_is_off(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, receive={"check_called_aet": False})
    with running_node(cfg):
        assert echoscu(cfg.receive.port, called_aet="SOMEONEELSE").returncode == 0


@pytest.fixture
def node_cfg(tmp_path: Path) -> Config:
    return make_config(tmp_path, receive={"max_pdu": 16384})
