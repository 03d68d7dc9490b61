"""DICOMweb against a real uvicorn on 127.0.0.1: STOW-RS in through the C-STORE store path,
QIDO-RS / WADO-RS over the node's de-identified outputs only, with dicomweb-client as the peer."""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn
from cryptography.fernet import Fernet
from dicomweb_client.api import DICOMwebClient
from fastapi import FastAPI
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from sqlalchemy import update

from apolo_node.catalog.models import Instance
from apolo_node.catalog.records import list_studies
from apolo_node.catalog.search import Filters
from apolo_node.config import Config
from apolo_node.pipeline.node import Node
from apolo_node.pipeline.results import queue_answer
from apolo_node.pseudonym import mapper
from apolo_node.reasoning.ask import ask
from apolo_node.reasoning.retrieval import Retriever
from apolo_node.spool import Spool
from apolo_node.receive.store import InstanceStore, Limits
from apolo_node.web.auth import Access
from apolo_node.web.dicomweb import DicomWeb, attach, router
from tests.conftest import make_config
from tests.nodes import running_node, upgraded_engine
from tests.peers import LOCALHOST, free_port, wait_until
from tests.synthetic import ct_slice, new_marker, phantom_ct

DICOM_JSON = "application/dicom+json"
SR_CLASSES = "1.2.840.10008.5.1.4.1.1.88."  # every SR storage SOP class starts so
GSPS = "1.2.840.10008.5.1.4.1.1.11.1"


def bare_app(dicomweb: DicomWeb, access: Access | None = None) -> FastAPI:
    app = FastAPI()
    app.include_router(router)
    app.state.access = access or Access()
    attach(app, dicomweb)
    return app


@contextmanager
def serving(app: FastAPI) -> Iterator[str]:
    """``app`` under a real uvicorn on 127.0.0.1; its base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host=LOCALHOST, port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started, what="uvicorn", timeout=20)
        yield f"http://{LOCALHOST}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def part10(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def related(*parts: bytes, boundary: str = "b0undary", part_type: str = "application/dicom") -> bytes:
    body = b"".join(
        f"--{boundary}\r\nContent-Type: {part_type}\r\n\r\n".encode() + p + b"\r\n" for p in parts
    )
    return body + f"--{boundary}--\r\n".encode()


def stow(base: str, body: bytes, *, study: str | None = None, headers: dict[str, str] | None = None) -> httpx.Response:
    url = f"{base}/dicomweb/studies" + (f"/{study}" if study else "")
    head = {"Content-Type": 'multipart/related; type="application/dicom"; boundary=b0undary'}
    return httpx.post(url, content=body, headers={**head, **(headers or {})}, timeout=30)


def failures(answer: httpx.Response) -> list[int]:
    return [item["00081197"]["Value"][0] for item in answer.json().get("00081198", {}).get("Value", [])]


def referenced(answer: httpx.Response) -> list[str]:
    return [item["00081155"]["Value"][0] for item in answer.json().get("00081199", {}).get("Value", [])]


# -- the whole path: STOW in, the node reports it, QIDO finds it, WADO brings back the outputs --


@dataclass
class Reported:
    cfg: Config
    base: str
    client: DICOMwebClient
    study_uid: str  # pseudonymous
    marker: str
    originals: list[str]
    bodies: list[bytes]  # every response body the tests saw, checked for the marker at the end
    node: Node


@pytest.fixture(scope="module")
def reported(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Reported]:
    """A 3-slice phantom CT sent by STOW-RS to a running node (its SCP, workers and HTTP side, as
    serve runs them), reported, asked about (answer SR and GSPS written), served over DICOMweb."""
    tmp = tmp_path_factory.mktemp("dicomweb")
    cfg = make_config(
        tmp, send={"enabled": True, "port": free_port(), "retry_base": 60.0, "retry_max": 600.0},
        deid={"vault_key": Fernet.generate_key().decode()},
    )
    marker = new_marker()
    study, series = generate_uid(), generate_uid()
    slices = [phantom_ct(study_uid=study, series_uid=series, number=n, marker=marker) for n in (1, 2, 3)]
    with running_node(cfg) as node:  # serve's own HTTP side: create_app on [web] port
        base = f"http://{LOCALHOST}:{cfg.web.port}"
        client = DICOMwebClient(url=f"{base}/dicomweb")
        answer = client.store_instances(slices)
        got = [str(item.ReferencedSOPInstanceUID) for item in answer.ReferencedSOPSequence]
        assert got == [str(ds.SOPInstanceUID) for ds in slices]
        assert "FailedSOPSequence" not in answer
        wait_until(lambda: [s.status for s in list_studies(node.engine)] == ["reported"],
                   what="the STOW-RS study reported", timeout=60, interval=0.2)
        # what `ask --send` does, in this process and without the embedder (lexical retrieval)
        result = ask(node.engine, cfg.reasoning, "Where is the metal?", Filters(), retriever=Retriever(node.engine))
        assert {q.kind for q in queue_answer(node.engine, node.spool, result)} == {"answer_sr", "gsps"}
        r = Reported(cfg, base, client, mapper(cfg)(study), marker, [str(ds.SOPInstanceUID) for ds in slices], [], node)
        yield r
        for body in r.bodies:
            assert marker.encode() not in body


def get(r: Reported, path: str, **headers: str) -> httpx.Response:
    answer = httpx.get(f"{r.base}/dicomweb{path}", headers=headers, timeout=30)
    r.bodies.append(answer.content)
    return answer


def test_qido_finds_the_stow_study_under_its_pseudonym_with_its_sr(reported: Reported) -> None:
    r = reported
    answer = get(r, "/studies")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith(DICOM_JSON)
    [study] = answer.json()
    assert study["0020000D"]["Value"] == [r.study_uid]
    assert study["0020000D"]["Value"][0] not in r.originals
    assert set(study["00080061"]["Value"]) == {"CT", "SR", "PR"}
    assert study["00201208"]["Value"] == [3 + 1 + 2]  # 3 images, the report, answer SR and GSPS
    assert study["00201206"]["Value"] == [1 + 1 + 2]
    assert "PHI" not in json.dumps(study) and r.marker not in json.dumps(study)

    series = r.client.search_for_series(r.study_uid)
    modalities = sorted(s["00080060"]["Value"][0] for s in series)
    assert modalities == ["CT", "PR", "SR", "SR"]
    sr_series = [s["0020000E"]["Value"][0] for s in series if s["00080060"]["Value"] == ["SR"]]
    everywhere = get(r, "/series?Modality=SR").json()  # QIDO-RS over all studies, as OHIF's checks ask
    assert sorted(s["0020000E"]["Value"][0] for s in everywhere) == sorted(sr_series)
    assert get(r, "/series?Modality=MR").json() == []
    sops = {
        i["00080016"]["Value"][0]
        for uid in sr_series for i in r.client.search_for_instances(r.study_uid, uid)
    }
    assert sops and all(uid.startswith(SR_CLASSES) for uid in sops)  # the TID 1500 SR, the answer SR


def test_qido_filters_limit_and_offset(reported: Reported) -> None:
    r = reported
    [study] = get(r, "/studies").json()
    date = study["00080020"]["Value"][0]
    assert len(get(r, f"/studies?StudyDate={date}").json()) == 1
    assert len(get(r, f"/studies?StudyDate=-{date}").json()) == 1
    assert get(r, "/studies?StudyDate=19000101-19000102").json() == []
    assert len(get(r, "/studies?ModalitiesInStudy=MR,PR").json()) == 1
    assert get(r, "/studies?ModalitiesInStudy=MR").json() == []
    assert len(get(r, f"/studies?StudyInstanceUID={r.study_uid}").json()) == 1
    assert get(r, f"/studies?StudyInstanceUID={r.originals[0]}").json() == []
    assert get(r, "/studies?offset=1").json() == [] and len(get(r, "/studies?limit=1").json()) == 1
    assert get(r, "/studies?StudyDate=2026-01-01").status_code == 400
    assert get(r, "/studies?limit=-1").status_code == 400


def test_wado_returns_the_clean_files_byte_for_byte(reported: Reported) -> None:
    r = reported
    [ct] = [s for s in r.client.search_for_series(r.study_uid) if s["00080060"]["Value"] == ["CT"]]
    series_uid = ct["0020000E"]["Value"][0]
    instances = r.client.search_for_instances(r.study_uid, series_uid)
    assert len(instances) == 3
    clean = {dcmread(p, stop_before_pixels=True).SOPInstanceUID: p for p in (r.cfg.spool_root / "clean").rglob("*.dcm")}
    for item in instances:
        sop = item["00080018"]["Value"][0]
        ds = r.client.retrieve_instance(r.study_uid, series_uid, sop)
        assert ds.SOPInstanceUID == sop and ds.StudyInstanceUID == r.study_uid
        assert r.marker not in str(ds.PatientName) and ds.PatientIdentityRemoved == "YES"
        raw = get(r, f"/studies/{r.study_uid}/series/{series_uid}/instances/{sop}").content
        assert clean[sop].read_bytes() in raw  # the part is the clean file itself
        [frame] = r.client.retrieve_instance_frames(r.study_uid, series_uid, sop, frame_numbers=[1])
        assert frame == dcmread(clean[sop]).PixelData
    whole = r.client.retrieve_study(r.study_uid)
    classes = sorted(str(ds.SOPClassUID) for ds in whole)
    assert len(whole) == 6 and GSPS in classes and sum(c.startswith(SR_CLASSES) for c in classes) == 2
    for ds in whole:
        r.bodies.append(part10(ds))


def test_metadata_leaves_pixel_data_out_as_a_bulk_data_uri(reported: Reported) -> None:
    r = reported
    metadata = r.client.retrieve_study_metadata(r.study_uid)
    assert len(metadata) == 6
    images = [m for m in metadata if "7FE00010" in m]
    assert len(images) == 3
    for m in images:
        assert "InlineBinary" not in m["7FE00010"] and m["7FE00010"]["BulkDataURI"].endswith("/frames/1")
    r.bodies.append(json.dumps(metadata).encode())


def test_wado_answers_406_and_404_for_what_it_cannot_serve(reported: Reported) -> None:
    r = reported
    assert get(r, f"/studies/{r.study_uid}", accept="application/zip").status_code == 406
    assert get(r, "/studies", accept="multipart/related; type=application/dicom+xml").status_code == 406
    assert get(r, f"/studies/{r.study_uid}/metadata", accept="application/dicom+json").status_code == 200
    assert get(r, f"/studies/{generate_uid()}").status_code == 404
    assert get(r, f"/studies/{r.study_uid}/series/{generate_uid()}").status_code == 404
    assert get(r, f"/studies/{r.study_uid}/series/{generate_uid()}/metadata").status_code == 404


def test_urls_in_answers_follow_the_path_the_client_came_by(reported: Reported) -> None:
    """Behind a proxy's prefix, on an app that sets cfg, engine and store as create_app does."""
    app = FastAPI()
    app.include_router(router, prefix="/dicom-web")
    app.state.cfg, app.state.engine, app.state.store = reported.cfg, reported.node.engine, reported.node.store
    app.state.access = Access()
    with serving(app) as base:
        [study] = httpx.get(f"{base}/dicom-web/dicomweb/studies", timeout=30).json()
        url = study["00081190"]["Value"][0]
        assert url == f"{base}/dicom-web/dicomweb/studies/{reported.study_uid}"
        assert httpx.get(url, timeout=30).status_code == 200


# -- the PHI side is never served --


def test_nothing_of_the_phi_side_is_ever_served(tmp_path: Path, cfg: Config) -> None:
    """An instance still in the incoming spool (identifiers in place) is not found by QIDO nor
    retrieved by WADO, even when the catalog is made to point at it as if it were clean."""
    engine = upgraded_engine(cfg)
    marker = new_marker()
    store = InstanceStore(Spool(cfg.spool_root), engine, mapper(cfg), Limits.from_settings(cfg.receive))
    study, series, sop = generate_uid(), generate_uid(), generate_uid()
    ds = ct_slice(study_uid=study, series_uid=series, sop_uid=sop, number=1, marker=marker)
    assert store.store(part10(ds)).ok
    pseudo = mapper(cfg)
    paths = [
        f"/studies/{pseudo(study)}", f"/studies/{pseudo(study)}/metadata", f"/studies/{pseudo(study)}/series",
        f"/studies/{pseudo(study)}/series/{pseudo(series)}/instances/{pseudo(sop)}",
        f"/studies/{pseudo(study)}/series/{pseudo(series)}/instances/{pseudo(sop)}/frames/1",
    ]
    try:
        with serving(bare_app(DicomWeb.from_config(cfg, engine, store))) as base:
            def sweep() -> list[httpx.Response]:
                answers = [httpx.get(f"{base}/dicomweb/studies", timeout=10)]
                answers += [httpx.get(f"{base}/dicomweb{p}", timeout=10) for p in paths]
                for a in answers:
                    assert marker.encode() not in a.content
                return answers

            listed, *rest = sweep()
            assert listed.json() == [] and {a.status_code for a in rest} == {404}
            incoming = cfg.spool_root / "incoming" / pseudo(study) / f"{pseudo(sop)}.dcm"
            assert marker.encode() in incoming.read_bytes()  # the planted identifiers are there
            with engine.begin() as conn:  # a catalog gone wrong: the incoming file as the clean one
                conn.execute(update(Instance).values(state="clean", clean_path=incoming.relative_to(cfg.spool_root).as_posix()))
            listed, *rest = sweep()
            assert listed.json() == [] and {a.status_code for a in rest} == {404}
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    "relative",
    ["incoming/a/b.dcm", "tmp/x.part", "vault/a.bin", "quarantine/a/b.dcm", "clean/../incoming/a/b.dcm",
     "/etc/passwd", "clean"],
)
def test_output_path_refuses_every_path_outside_the_served_folders(tmp_path: Path, relative: str) -> None:
    from apolo_node.web.outputs import NotServed, output_path

    with pytest.raises(NotServed, match="not an output"):
        output_path(tmp_path, relative)


def test_output_path_refuses_a_link_out_of_clean_and_allows_a_clean_file(tmp_path: Path) -> None:
    from apolo_node.web.outputs import NotServed, output_path

    (tmp_path / "incoming").mkdir()
    (tmp_path / "clean" / "s").mkdir(parents=True)
    (tmp_path / "incoming" / "x.dcm").write_bytes(b"PHI")
    (tmp_path / "clean" / "s" / "link.dcm").symlink_to(tmp_path / "incoming" / "x.dcm")
    (tmp_path / "clean" / "s" / "ok.dcm").write_bytes(b"clean")
    with pytest.raises(NotServed, match="not an output"):
        output_path(tmp_path, "clean/s/link.dcm")
    assert output_path(tmp_path, "clean/s/ok.dcm").read_bytes() == b"clean"


def test_metadata_leaves_large_binary_values_out_and_keeps_small_ones(tmp_path: Path) -> None:
    from apolo_node.catalog.dicomweb import IMAGE, OutputFile
    from apolo_node.web.outputs import Output, metadata_json

    ds = ct_slice(study_uid=generate_uid(), series_uid=generate_uid(), sop_uid=generate_uid(), number=1,
                  marker="X")
    ds.add_new(0x60003000, "OW", b"\x01" * 100_000)  # an overlay's bits: bulk data
    ds.add_new(0x00091010, "OB", b"\x02" * 16)  # small: inline
    del ds.PixelData
    out = metadata_json(Output(OutputFile("1.2", "1.3", IMAGE, "clean/a/b.dcm", "1.4", "CT"), tmp_path, ds), "U")
    assert "60003000" not in out and out["00091010"]["InlineBinary"]
    assert out["7FE00010"] == {"vr": "OW", "BulkDataURI": "U"} and out["00280010"]["Value"] == [64]


def test_frames_of_a_compressed_image_are_its_own_fragments(tmp_path: Path) -> None:
    from pydicom.encaps import get_frame
    from pydicom.uid import RLELossless

    from apolo_node.catalog.dicomweb import IMAGE, OutputFile
    from apolo_node.web.outputs import NotServed, frames, load

    ds = ct_slice(study_uid=generate_uid(), series_uid=generate_uid(), sop_uid=generate_uid(), number=1,
                  marker="X")
    ds.compress(RLELossless)
    (tmp_path / "clean" / "s").mkdir(parents=True)
    ds.save_as(tmp_path / "clean" / "s" / "i.dcm", enforce_file_format=True)
    out = load(tmp_path, OutputFile("1.2", "1.3", IMAGE, "clean/s/i.dcm", "1.4", "CT"))
    [(media, data)] = frames(out, [1])
    assert media == f"application/octet-stream; transfer-syntax={RLELossless}"
    assert data == get_frame(ds.PixelData, 0, number_of_frames=1)
    with pytest.raises(NotServed, match="no such frame"):
        frames(out, [2])
