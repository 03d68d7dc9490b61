"""STOW-RS refusals against a real uvicorn: every bad body gets its PS3.18 status, the node keeps
serving, and nothing half-written is left; plus the multipart reader on its own."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from pydicom.uid import generate_uid
from sqlalchemy import Engine, func, select

from apolo_node.catalog.models import Instance
from apolo_node.config import Config
from apolo_node.pseudonym import mapper
from apolo_node.spool import Spool
from apolo_node.receive.store import InstanceStore, Limits
from apolo_node.web.auth import Access
from apolo_node.web.dicomweb import DicomWeb, router
from apolo_node.web.multipart import MultipartError, MultipartReader, TooManyParts, parse_media_type
from apolo_node.web.stow import Failure
from tests.nodes import upgraded_engine
from tests.synthetic import ct_slice, new_marker
from tests.test_dicomweb import bare_app, failures, part10, referenced, related, serving, stow

MAX_PARTS = 4
MAX_INSTANCE = 64 * 1024


@dataclass
class Stow:
    base: str
    engine: Engine
    cfg: Config
    marker: str

    def instance(self, study: str | None = None, rows: int = 16) -> bytes:
        ds = ct_slice(study_uid=study or generate_uid(), series_uid=generate_uid(), sop_uid=generate_uid(),
                      number=1, marker=self.marker, rows=rows, columns=rows)
        return part10(ds)

    def stored(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count(Instance.id))).scalar_one())


@pytest.fixture
def node(cfg: Config, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> Iterator[Stow]:
    cfg = dataclasses.replace(
        cfg,
        receive=dataclasses.replace(cfg.receive, max_instance_size=MAX_INSTANCE),
        web=dataclasses.replace(cfg.web, stow_max_body=1 << 20, stow_max_parts=MAX_PARTS),
    )
    engine = upgraded_engine(cfg)
    store = InstanceStore(Spool(cfg.spool_root), engine, mapper(cfg), Limits.from_settings(cfg.receive))
    marker = new_marker()
    try:
        with serving(bare_app(DicomWeb.from_config(cfg, engine, store))) as base:
            yield Stow(base, engine, cfg, marker)
    finally:
        engine.dispose()
    assert marker not in caplog.text  # refusals name rules, never values
    assert list((cfg.spool_root / "tmp").iterdir()) == []  # no staging file left behind


def test_a_good_body_is_stored_and_answered_200(node: Stow) -> None:
    one, two = node.instance(), node.instance()
    answer = stow(node.base, related(one, two))
    assert answer.status_code == 200 and failures(answer) == []
    assert len(referenced(answer)) == 2 and node.stored() == 2
    again = stow(node.base, related(one))  # the same instance again: kept once, still success
    assert again.status_code == 200 and node.stored() == 2


@pytest.mark.parametrize(
    ("content_type", "status"),
    [
        ("application/dicom", 415),
        ("application/json", 415),
        ('multipart/related; type="application/dicom+json"; boundary=b0undary', 415),
        ('multipart/related; type="application/dicom"', 400),
    ],
)
def test_a_body_of_the_wrong_media_type_is_refused(node: Stow, content_type: str, status: int) -> None:
    answer = stow(node.base, related(node.instance()), headers={"Content-Type": content_type})
    assert answer.status_code == status and node.stored() == 0


def test_malformed_multipart_is_400_and_stores_nothing(node: Stow) -> None:
    whole = related(node.instance())
    cut = whole[: len(whole) - 40]  # no closing boundary: the part in flight is dropped
    assert stow(node.base, cut).status_code == 400
    assert stow(node.base, b"--b0undary--\r\n").status_code == 400  # no parts at all
    assert stow(node.base, b"no boundary anywhere").status_code == 400
    bad_header = b"--b0undary\r\nno colon here\r\n\r\n" + node.instance() + b"\r\n--b0undary--"
    assert stow(node.base, bad_header).status_code == 400
    assert node.stored() == 0
    assert stow(node.base, related(node.instance())).status_code == 200  # and it keeps serving


def test_unreadable_parts_fail_0xC000_and_a_mixed_body_is_202(node: Stow) -> None:
    answer = stow(node.base, related(b"not dicom at all", node.instance()[:300]))
    assert answer.status_code == 409 and failures(answer) == [0xC000, 0xC000]
    mixed = stow(node.base, related(node.instance(), b"garbage"))
    assert mixed.status_code == 202 and failures(mixed) == [0xC000] and len(referenced(mixed)) == 1
    other = stow(node.base, related(node.instance()), headers={
        "Content-Type": 'multipart/related; type="application/dicom"; boundary=b0undary'})
    assert other.status_code == 200 and node.stored() == 2


def test_a_part_that_is_not_application_dicom_fails_0xC000(node: Stow) -> None:
    answer = stow(node.base, related(node.instance(), part_type="text/plain"))
    assert answer.status_code == 409 and failures(answer) == [0xC000] and node.stored() == 0


def test_an_instance_of_another_study_fails_0xA900(node: Stow) -> None:
    study = generate_uid()
    answer = stow(node.base, related(node.instance(study), node.instance()), study=study)
    assert answer.status_code == 202
    assert failures(answer) == [Failure.STUDY_MISMATCH] and node.stored() == 1


def test_a_sop_class_the_scp_would_not_take_fails_0x0122(node: Stow) -> None:
    raw = node.instance().replace(b"1.2.840.10008.5.1.4.1.1.2\x00", b"1.2.840.10008.5.1.4.31\x00\x00\x00\x00")
    answer = stow(node.base, related(raw))
    assert answer.status_code == 409 and failures(answer) == [Failure.SOP_CLASS_NOT_SUPPORTED]


def test_a_part_over_max_instance_size_fails_0xA700(node: Stow) -> None:
    big = node.instance(rows=256)  # 128 KiB of pixels, over the 64 KiB limit
    answer = stow(node.base, related(big, node.instance()))
    assert answer.status_code == 202 and failures(answer) == [0xA700] and node.stored() == 1


def test_a_body_over_stow_max_body_is_413(node: Stow) -> None:
    body = related(*[node.instance(rows=128)] * 1)  # 32 KiB: under the part limit
    huge = body + b" " * (1 << 20)
    assert stow(node.base, huge).status_code == 413
    chunked = httpx.post(
        f"{node.base}/dicomweb/studies",
        content=iter([body[:-20], b" " * (1 << 20)]),  # no Content-Length: counted as it streams
        headers={"Content-Type": 'multipart/related; type="application/dicom"; boundary=b0undary'},
        timeout=30,
    )
    assert chunked.status_code == 413


def test_more_parts_than_stow_max_parts_is_413_listing_what_was_stored(node: Stow) -> None:
    answer = stow(node.base, related(*[node.instance() for _ in range(MAX_PARTS + 1)]))
    assert answer.status_code == 413 and len(referenced(answer)) == MAX_PARTS
    assert node.stored() == MAX_PARTS


def test_every_dicomweb_route_requires_access(node: Stow) -> None:
    from apolo_node.web.auth import require_access

    for route in router.routes:
        assert require_access in [d.call for d in route.dependant.dependencies], route.path  # type: ignore[attr-defined]
    app = bare_app(DicomWeb.from_config(node.cfg, node.engine, None), Access(token="s3cret", loopback=False))  # type: ignore[arg-type]
    with serving(app) as base:
        assert httpx.get(f"{base}/dicomweb/studies").status_code == 401
        assert stow(base, related(node.instance())).status_code == 401
        allowed = httpx.get(f"{base}/dicomweb/studies", headers={"Authorization": "Bearer s3cret"})
        assert allowed.status_code != 401


# -- the multipart reader on its own --


def read_parts(body: bytes, step: int, boundary: str = "b0undary", max_parts: int = 10) -> list[tuple[dict[str, str], bytes]]:
    parts: list[tuple[dict[str, str], bytearray]] = []

    class Sink:
        def write(self, data: bytes | memoryview) -> None:
            parts[-1][1].extend(data)

    def begin(headers: dict[str, str]) -> Sink:
        parts.append((headers, bytearray()))
        return Sink()

    reader = MultipartReader(boundary, begin, lambda: None, max_parts)
    for i in range(0, len(body), step):
        reader.feed(body[i : i + step])
    reader.close()
    return [(h, bytes(b)) for h, b in parts]


@pytest.mark.parametrize("step", [1, 2, 3, 7, 13, 64, 1 << 20])
def test_the_reader_finds_the_same_parts_however_the_body_is_cut(step: int) -> None:
    tricky = b"\r\n--b0undar" + b"\r\n-b0undary" + b"--b0undary-- not the end \r\n--"  # near-delimiters
    body = (b"preamble\r\n--b0undary \t\r\nContent-Type: application/dicom\r\nX-A: 1\r\n\r\n" + tricky
            + b"\r\n--b0undary\r\n\r\n" + b"second" + b"\r\n--b0undary--\r\nepilogue")
    parts = read_parts(body, step)
    assert parts == [({"content-type": "application/dicom", "x-a": "1"}, tricky), ({}, b"second")]


def test_the_reader_refuses_what_is_not_multipart() -> None:
    with pytest.raises(MultipartError, match="ends before its closing boundary"):
        read_parts(b"--b0undary\r\n\r\nabc", 4)
    with pytest.raises(MultipartError, match="part headers longer than"):
        read_parts(b"--b0undary\r\nX: " + b"a" * 20_000, 1000)
    with pytest.raises(MultipartError, match="not followed by CRLF"):
        read_parts(b"--b0undaryjunk\r\n\r\n", 100)
    with pytest.raises(TooManyParts, match="more than 2 parts"):
        read_parts(related(b"1", b"2", b"3"), 100, max_parts=2)
    with pytest.raises(MultipartError, match="boundary must be 1 to 70"):
        MultipartReader("x" * 71, lambda h: None, lambda: None, 1)  # type: ignore[arg-type,return-value]


def test_media_type_parameters_quoted_or_not() -> None:
    assert parse_media_type('Multipart/Related; type="application/dicom"; boundary="a;b"') == (
        "multipart/related", {"type": "application/dicom", "boundary": "a;b"})
    assert parse_media_type("multipart/related;boundary=xyz;TYPE=application/dicom") == (
        "multipart/related", {"boundary": "xyz", "type": "application/dicom"})


def test_a_client_that_goes_away_mid_part_leaves_no_scraps(node: Stow) -> None:
    import socket
    import time

    body = related(node.instance(rows=128))
    head = (f"POST /dicomweb/studies HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
            'Content-Type: multipart/related; type="application/dicom"; boundary=b0undary\r\n\r\n').encode()
    port = int(node.base.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(head + body[: len(body) // 2])
        time.sleep(0.5)  # the part is being written to its staging file
    tmp = node.cfg.spool_root / "tmp"
    deadline = time.monotonic() + 10
    while list(tmp.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert list(tmp.iterdir()) == [] and node.stored() == 0
    assert stow(node.base, related(node.instance())).status_code == 200  # and it keeps serving


@pytest.mark.peers
@pytest.mark.usefixtures("need_dcmtk")
def test_stow_and_c_store_catalogue_instances_alike(node: Stow, tmp_path: Path) -> None:
    """One instance by dcmtk's storescu, its sibling by STOW-RS: the same kind of row (study,
    series, class, syntax, spool path); each sent again the other way is kept once."""
    from apolo_node.receive.scp import StorageSCP
    from tests.peers import storescu

    scp = StorageSCP(node.cfg.receive, InstanceStore(
        Spool(node.cfg.spool_root), node.engine, mapper(node.cfg), Limits.from_settings(node.cfg.receive)))
    scp.start()
    try:
        study, series = generate_uid(), generate_uid()
        files = []
        for n in (1, 2):
            ds = ct_slice(study_uid=study, series_uid=series, sop_uid=generate_uid(), number=n, marker=node.marker)
            ds.save_as(tmp_path / f"{n}.dcm", enforce_file_format=True)
            files.append(tmp_path / f"{n}.dcm")
        storescu(files[0], node.cfg.receive.port)
        assert stow(node.base, related(files[1].read_bytes())).status_code == 200
        with node.engine.connect() as conn:
            rows = conn.execute(select(
                Instance.study_id, Instance.series_id, Instance.sop_class_uid, Instance.transfer_syntax_uid,
                Instance.sop_instance_uid, Instance.path, Instance.state,
            ).order_by(Instance.id)).all()
        assert len(rows) == 2 and rows[0][:4] == rows[1][:4] and {r.state for r in rows} == {"received"}
        pseudo = mapper(node.cfg)
        assert [r.path for r in rows] == [f"incoming/{pseudo(study)}/{r.sop_instance_uid}.dcm" for r in rows]
        storescu(files[1], node.cfg.receive.port)
        again = stow(node.base, related(files[0].read_bytes()))
        assert again.status_code == 200 and node.stored() == 2
    finally:
        scp.stop()


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("APOLO_TEST_SLOW") != "1", reason="slow (168 requests): set APOLO_TEST_SLOW=1")
def test_pydicom_test_files_get_the_same_verdict_by_stow_as_by_the_store(tmp_path: Path) -> None:
    import pydicom.data

    from tests.conftest import make_config

    stows, direct = make_config(tmp_path / "a"), make_config(tmp_path / "b")
    engines = [upgraded_engine(c) for c in (stows, direct)]
    stores = [InstanceStore(Spool(c.spool_root), e, mapper(c), Limits.from_settings(c.receive))
              for c, e in zip((stows, direct), engines)]
    folder = Path(pydicom.data.__file__).parent / "test_files"
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in (".dcm", ""))
    assert len(files) > 100
    try:
        with serving(bare_app(DicomWeb.from_config(stows, engines[0], stores[0]))) as base:
            for path in files:
                raw = path.read_bytes()
                assert (stow(base, related(raw)).status_code == 200) == stores[1].store(raw).ok, path.name
    finally:
        for e in engines:
            e.dispose()
