"""DICOMweb (PS3.18) under /dicomweb: STOW-RS into the durable store, QIDO-RS / WADO-RS over the
node's own de-identified outputs only (cleaned images, TID 1500 SRs, answer SRs, GSPS).

Every route sits behind ``require_access``. The routes find their parts on ``app.state``: a
``DicomWeb`` (``attach``), or else the ``cfg``, ``engine`` and ``store`` that ``create_app`` sets.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from anyio import to_thread
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from sqlalchemy import Engine

from apolo_node.catalog.dicomweb import OutputFile, find_output_studies, study_outputs
from apolo_node.config import Config
from apolo_node.logs import event, get_logger
from apolo_node.receive.store import InstanceStore
from apolo_node.web import outputs
from apolo_node.web.auth import require_access
from apolo_node.web.multipart import (
    MultipartError,
    MultipartReader,
    TooManyParts,
    new_boundary,
    parse_media_type,
    related_parts,
)
from apolo_node.web.outputs import NotServed, Output
from apolo_node.web.stow import DICOM, StowSession

log = get_logger("dicomweb")
DICOM_JSON = "application/dicom+json"
MAX_LIMIT = 1000
FEED_SIZE = 1 << 20
_DATE = re.compile(r"^(\d{8})?(-)?(\d{8})?$")

router = APIRouter(prefix="/dicomweb", dependencies=[Depends(require_access)])


@dataclass(frozen=True)
class DicomWeb:
    """What the routes need: the catalog, the store STOW-RS writes through, and its bounds."""

    engine: Engine
    store: InstanceStore
    max_body: int
    max_parts: int

    @classmethod
    def from_config(cls, cfg: Config, engine: Engine, store: InstanceStore) -> DicomWeb:
        return cls(engine, store, cfg.web.stow_max_body, cfg.web.stow_max_parts)


def attach(app: FastAPI, dicomweb: DicomWeb) -> None:
    """Give ``app``'s DICOMweb routes their parts (the router itself is included by the app)."""
    app.state.dicomweb = dicomweb


def _ctx(request: Request) -> DicomWeb:
    """The app's ``DicomWeb``: attached, or made once from what ``create_app`` puts on
    ``app.state`` (``cfg``, ``engine``, and ``store``, the InstanceStore C-STORE uses)."""
    state = request.app.state
    ctx = getattr(state, "dicomweb", None)
    if ctx is None:
        cfg, engine, store = (getattr(state, name, None) for name in ("cfg", "engine", "store"))
        if cfg is None or engine is None or store is None:
            raise HTTPException(503, "DICOMweb is not configured on this app")
        ctx = state.dicomweb = DicomWeb.from_config(cfg, engine, store)
    return ctx


def _accepts_json(request: Request) -> None:
    """406 unless Accept (if given) takes application/dicom+json, the one form we answer in."""
    accept = request.headers.get("accept", "")
    if not accept.strip():
        return
    for item in accept.split(","):
        main, _ = parse_media_type(item)
        if main in (DICOM_JSON, "application/json", "application/*", "*/*"):
            return
    raise HTTPException(406, f"this resource is served as {DICOM_JSON}")


def _json(body: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(body, status_code=status, media_type=DICOM_JSON)


# -- STOW-RS --


@router.post("/studies")
async def store_instances(request: Request) -> Response:
    """STOW-RS: store every application/dicom part of a multipart/related body."""
    return await _stow(request, None)


@router.post("/studies/{study}")
async def store_study_instances(study: str, request: Request) -> Response:
    """STOW-RS to one study: an instance of another study is refused (0xA900)."""
    return await _stow(request, study)


async def _stow(request: Request, study: str | None) -> Response:
    ctx = _ctx(request)
    media, params = parse_media_type(request.headers.get("content-type", ""))
    kind = params.get("type", DICOM).lower()
    if media != "multipart/related" or kind != DICOM:
        raise HTTPException(415, 'STOW-RS takes multipart/related; type="application/dicom"')
    if "boundary" not in params:
        raise HTTPException(400, "multipart/related without a boundary parameter")
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > ctx.max_body):
        raise HTTPException(413, "request body is larger than [web] stow_max_body")
    session = StowSession(ctx.store, study)
    try:
        reader = MultipartReader(params["boundary"], session.begin, session.end, ctx.max_parts)
        received = 0
        gathered = bytearray()  # chunks gathered to FEED_SIZE: one thread hop per MiB, not per 64 KiB
        async for chunk in request.stream():
            received += len(chunk)
            if received > ctx.max_body:
                raise _TooLarge("request body is larger than [web] stow_max_body")
            gathered += chunk
            if len(gathered) >= FEED_SIZE:
                await to_thread.run_sync(reader.feed, bytes(gathered))
                gathered.clear()
        if gathered:
            await to_thread.run_sync(reader.feed, bytes(gathered))
        reader.close()
        await to_thread.run_sync(session.finish)
    except (_TooLarge, TooManyParts) as exc:
        await to_thread.run_sync(session.abort)
        return _refused(session, 413, str(exc))
    except MultipartError as exc:
        await to_thread.run_sync(session.abort)
        return _refused(session, 400, str(exc))
    except BaseException:  # the client went away, or the request was cancelled: no scraps
        session.abort()  # here, not on a thread: a cancelled request may not await
        raise
    if not session.outcomes:
        raise HTTPException(400, "multipart body has no parts")
    event(log, "stow.done", parts=len(session.outcomes), stored=session.stored(), study_url=study is not None)
    return _json(session.response(), session.http_status())


class _TooLarge(Exception):
    pass


def _refused(session: StowSession, status: int, why: str) -> Response:
    """A request cut short: what was stored before stays stored, and the answer lists it."""
    if not session.outcomes:
        raise HTTPException(status, why)
    return _json(session.response(), status)


# -- QIDO-RS --


def _values(request: Request, keyword: str, tag: str) -> list[str]:
    """A matching key's values: repeated, or comma separated (PS3.18 8.3.4)."""
    found: list[str] = []
    for key in (keyword, tag):
        for value in request.query_params.getlist(key):
            found += [v.strip() for v in value.split(",") if v.strip()]
    return found


def _date_range(values: list[str]) -> tuple[dt.date | None, dt.date | None]:
    if not values:
        return None, None
    m = _DATE.match(values[0])
    if len(values) > 1 or m is None or (m.group(2) is None and m.group(3) is not None):
        raise HTTPException(400, "StudyDate must be YYYYMMDD or a range YYYYMMDD-YYYYMMDD")
    try:
        low = dt.datetime.strptime(m.group(1), "%Y%m%d").date() if m.group(1) else None
        high = dt.datetime.strptime(m.group(3), "%Y%m%d").date() if m.group(3) else None
    except ValueError:
        raise HTTPException(400, "StudyDate is not a valid date") from None
    if m.group(2) is None:
        high = low
    return low, high


def _int_param(request: Request, name: str, default: int, maximum: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not raw.isdigit():
        raise HTTPException(400, f"{name} must be a non-negative integer")
    return min(int(raw), maximum)


def _base(request: Request) -> str:
    """The DICOMweb root as this request reached it (behind a proxy's prefix too): URLs in
    answers point back the way the client came."""
    path = request.url.path
    at = min((i for i in (path.find("/studies"), path.find("/series")) if i >= 0), default=-1)
    return f"{request.url.scheme}://{request.url.netloc}{path[:at] if at >= 0 else router.prefix}"


@router.get("/studies", dependencies=[Depends(_accepts_json)])
def search_studies(request: Request) -> Response:
    """QIDO-RS: studies with de-identified outputs; StudyInstanceUID, ModalitiesInStudy,
    StudyDate, limit, offset (other matching keys are not supported and are ignored)."""
    ctx = _ctx(request)
    low, high = _date_range(_values(request, "StudyDate", "00080020"))
    found = find_output_studies(
        ctx.engine,
        study_uids=_values(request, "StudyInstanceUID", "0020000D") or None,
        date_from=low,
        date_to=high,
        modalities=_values(request, "ModalitiesInStudy", "00080061") or None,
        limit=_int_param(request, "limit", 100, MAX_LIMIT),
        offset=_int_param(request, "offset", 0, 1 << 31),
    )
    root = ctx.store.spool.root
    results = []
    for study in found:
        first = _first_output(root, study_outputs(ctx.engine, study.study_uid))
        if first is None:
            continue
        results.append(outputs.study_json(
            first, study.study_uid, study.modalities, study.series, study.instances,
            f"{_base(request)}/studies/{study.study_uid}",
        ))
    return _json(results)


def _first_output(root: Any, files: list[OutputFile]) -> Output | None:
    for f in files:
        try:
            return outputs.load(root, f)
        except NotServed:
            continue
    return None


def _outputs(request: Request, study: str, series: str | None = None, sop: str | None = None) -> list[Output]:
    """The study's outputs that can be served (of one series, or the one instance, if named)."""
    ctx = _ctx(request)
    found = []
    for f in study_outputs(ctx.engine, study, series_uid=series, sop_instance_uid=sop):
        try:
            o = outputs.load(ctx.store.spool.root, f)
        except NotServed:
            continue
        if series is None or o.series_uid == series:
            found.append(o)
    return found


def _study(request: Request, study: str) -> list[Output]:
    found = _outputs(request, study)
    if not found:
        raise HTTPException(404, "no such study among the node's outputs")
    return found


def _series(request: Request, study: str, series: str) -> list[Output]:
    found = _outputs(request, study, series)
    if not found:
        raise HTTPException(404, "no such series among the node's outputs")
    return found


def _instance(request: Request, study: str, series: str, sop: str) -> Output:
    found = _outputs(request, study, series, sop)
    if not found:
        raise HTTPException(404, "no such instance among the node's outputs")
    return found[0]


@router.get("/studies/{study}/series", dependencies=[Depends(_accepts_json)])
def search_series(study: str, request: Request) -> Response:
    """QIDO-RS: the series of a study's outputs (Modality may filter)."""
    return _json(_page(request, _series_results(request, _study(request, study))))


@router.get("/series", dependencies=[Depends(_accepts_json)])
def search_all_series(request: Request) -> Response:
    """QIDO-RS: series of every study with outputs (Modality, StudyInstanceUID may filter)."""
    modalities = _values(request, "Modality", "00080060")
    ctx = _ctx(request)
    found: list[Any] = []
    for study in find_output_studies(
        ctx.engine, study_uids=_values(request, "StudyInstanceUID", "0020000D") or None,
        modalities=modalities or None, limit=MAX_LIMIT,
    ):
        found += _series_results(request, _outputs(request, study.study_uid))
    return _json(_page(request, found))


def _series_results(request: Request, found: list[Output]) -> list[dict[str, Any]]:
    by_series: dict[str, list[Output]] = {}
    for o in found:
        by_series.setdefault(o.series_uid, []).append(o)
    wanted = set(_values(request, "Modality", "00080060"))
    base = _base(request)
    return [
        outputs.series_json(items[0], len(items), f"{base}/studies/{items[0].file.study_uid}/series/{uid}")
        for uid, items in by_series.items()
        if not wanted or (items[0].file.modality or "") in wanted
    ]


def _page(request: Request, results: list[Any]) -> list[Any]:
    offset = _int_param(request, "offset", 0, 1 << 31)
    return results[offset : offset + _int_param(request, "limit", MAX_LIMIT, MAX_LIMIT)]


def _instances_json(request: Request, found: Iterable[Output]) -> Response:
    base = _base(request)
    results = [
        outputs.instance_json(
            o, f"{base}/studies/{o.file.study_uid}/series/{o.series_uid}/instances/{o.file.sop_instance_uid}"
        )
        for o in found
    ]
    return _json(_page(request, results))


@router.get("/studies/{study}/instances", dependencies=[Depends(_accepts_json)])
def search_study_instances(study: str, request: Request) -> Response:
    """QIDO-RS: every output instance of a study."""
    return _instances_json(request, _study(request, study))


@router.get("/studies/{study}/series/{series}/instances", dependencies=[Depends(_accepts_json)])
def search_instances(study: str, series: str, request: Request) -> Response:
    """QIDO-RS: the output instances of one series."""
    return _instances_json(request, _series(request, study, series))


# -- WADO-RS --


def _check_accept(request: Request, media: str) -> None:
    """406 unless Accept (if given) allows multipart/related of ``media``."""
    accept = request.headers.get("accept", "")
    if not accept.strip():
        return
    for item in accept.split(","):
        main, params = parse_media_type(item)
        if main in ("*/*", "multipart/*"):
            return
        if main == "multipart/related" and params.get("type", media).lower() in (media, "*/*", "application/*"):
            return
    raise HTTPException(406, f'this resource is served as multipart/related; type="{media}"')


def _multipart(parts: Iterable[tuple[str, Iterable[bytes]]], media: str) -> StreamingResponse:
    boundary = new_boundary()
    return StreamingResponse(
        related_parts(boundary, parts),
        media_type=f'multipart/related; type="{media}"; boundary={boundary}',
    )


def _dicom_parts(found: list[Output]) -> Iterable[tuple[str, Iterable[bytes]]]:
    for o in found:
        syntax = o.header.file_meta.get("TransferSyntaxUID", "")
        yield f"{DICOM}; transfer-syntax={syntax}", outputs.file_chunks(o.path)


def _retrieve(request: Request, found: list[Output]) -> Response:
    _check_accept(request, DICOM)
    return _multipart(_dicom_parts(found), DICOM)


def _metadata(request: Request, found: list[Output]) -> Response:
    base = _base(request)
    return _json([
        outputs.metadata_json(
            o, f"{base}/studies/{o.file.study_uid}/series/{o.series_uid}/instances/{o.file.sop_instance_uid}/frames/1"
        )
        for o in found
    ])


@router.get("/studies/{study}")
def retrieve_study(study: str, request: Request) -> Response:
    """WADO-RS: every output of a study, as multipart/related application/dicom."""
    return _retrieve(request, _study(request, study))


@router.get("/studies/{study}/metadata", dependencies=[Depends(_accepts_json)])
def retrieve_study_metadata(study: str, request: Request) -> Response:
    return _metadata(request, _study(request, study))


@router.get("/studies/{study}/series/{series}")
def retrieve_series(study: str, series: str, request: Request) -> Response:
    return _retrieve(request, _series(request, study, series))


@router.get("/studies/{study}/series/{series}/metadata", dependencies=[Depends(_accepts_json)])
def retrieve_series_metadata(study: str, series: str, request: Request) -> Response:
    return _metadata(request, _series(request, study, series))


@router.get("/studies/{study}/series/{series}/instances/{sop}")
def retrieve_instance(study: str, series: str, sop: str, request: Request) -> Response:
    return _retrieve(request, [_instance(request, study, series, sop)])


@router.get("/studies/{study}/series/{series}/instances/{sop}/metadata", dependencies=[Depends(_accepts_json)])
def retrieve_instance_metadata(study: str, series: str, sop: str, request: Request) -> Response:
    return _metadata(request, [_instance(request, study, series, sop)])


@router.get("/studies/{study}/series/{series}/instances/{sop}/frames/{frames}")
def retrieve_frames(study: str, series: str, sop: str, frames: str, request: Request) -> Response:
    """WADO-RS frames (comma-separated, 1-based): native pixels as application/octet-stream,
    compressed ones as stored, with their transfer syntax named."""
    try:
        numbers = [int(n) for n in frames.split(",")]
    except ValueError:
        raise HTTPException(400, "frames must be comma-separated frame numbers") from None
    if len(numbers) > MAX_LIMIT:
        raise HTTPException(400, f"more than {MAX_LIMIT} frames asked for")
    _check_accept(request, "application/octet-stream")
    try:
        found = outputs.frames(_instance(request, study, series, sop), numbers)
    except NotServed:
        raise HTTPException(404, "no such frame") from None
    return _multipart(((media, [data]) for media, data in found), "application/octet-stream")
