"""Catalog queries for DICOMweb (QIDO-RS / WADO-RS): the node's de-identified outputs only.

An output is a cleaned instance (``instance.clean_path``), a study's TID 1500 SR (``report``), or
an answer SR or GSPS written for the PACS (``outbox``, kinds ``answer_sr`` and ``gsps``). Nothing
here returns ``instance.path``: that is the incoming (PHI) copy, never served.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Engine, and_, exists, func, or_, select

from apolo_node.catalog.models import Instance, InstanceState, Outbox, Report, Series, Study

IMAGE = "image"
REPORT_SR = "report_sr"
ANSWER_SR = "answer_sr"
GSPS = "gsps"
#: outbox kinds served besides the report (a report_sr outbox row repeats the report)
OUTBOX_KINDS = (ANSWER_SR, GSPS)
KIND_MODALITY = {REPORT_SR: "SR", ANSWER_SR: "SR", GSPS: "PR"}


@dataclass(frozen=True)
class OutputFile:
    """One de-identified object the node wrote: its UIDs, kind and spool-relative path.

    ``series_uid`` is None where the catalog does not hold it (answer SRs, GSPS): the file says.
    """

    study_uid: str
    sop_instance_uid: str
    kind: str
    path: str
    series_uid: str | None
    modality: str | None


@dataclass(frozen=True)
class OutputStudy:
    """A study with outputs, as QIDO-RS lists it: counts are of outputs only."""

    study_uid: str
    study_date: dt.date | None
    modalities: list[str]
    series: int
    instances: int


def _has_clean(modalities: Sequence[str] | None = None):  # type: ignore[no-untyped-def]
    """EXISTS a clean instance of the study (of one of ``modalities``, if given)."""
    cond = [
        Instance.study_id == Study.id,
        Instance.state == InstanceState.CLEAN.value,
        Instance.clean_path.is_not(None),
    ]
    query = select(Instance.id)
    if modalities:
        query = query.join(Series, Series.id == Instance.series_id)
        cond.append(Series.modality.in_(list(modalities)))
    return exists(query.where(and_(*cond)))


def find_output_studies(
    engine: Engine,
    *,
    study_uids: Sequence[str] | None = None,
    date_from: dt.date | None = None,
    date_to: dt.date | None = None,
    modalities: Sequence[str] | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[OutputStudy]:
    """Studies with at least one cleaned instance, matching every filter given, oldest first."""
    cond = [_has_clean()]
    if study_uids:
        cond.append(Study.study_uid.in_(list(study_uids)))
    if date_from is not None:
        cond.append(Study.study_date >= date_from)
    if date_to is not None:
        cond.append(Study.study_date <= date_to)
    if modalities:
        wanted = [_has_clean(modalities)]
        if "SR" in modalities:
            wanted.append(exists(select(Report.id).where(Report.study_id == Study.id)))
            wanted.append(_outbox_exists(ANSWER_SR))
        if "PR" in modalities:
            wanted.append(_outbox_exists(GSPS))
        cond.append(or_(*wanted))
    with engine.connect() as conn:
        rows = conn.execute(
            select(Study.id, Study.study_uid, Study.study_date)
            .where(and_(*cond))
            .order_by(Study.id)
            .limit(limit)
            .offset(offset)
        ).all()
        ids = [r.id for r in rows]
        found: list[OutputStudy] = []
        if not ids:
            return found
        clean = conn.execute(
            select(
                Instance.study_id, Series.modality,
                func.count(func.distinct(Series.id)), func.count(Instance.id),
            )
            .join(Series, Series.id == Instance.series_id)
            .where(and_(
                Instance.study_id.in_(ids), Instance.state == InstanceState.CLEAN.value,
                Instance.clean_path.is_not(None),
            ))
            .group_by(Instance.study_id, Series.modality)
        ).all()
        reports = conn.execute(
            select(Report.study_id, func.count(Report.id)).where(Report.study_id.in_(ids)).group_by(Report.study_id)
        ).all()
        extra = conn.execute(
            select(Outbox.study_id, Outbox.kind, func.count(Outbox.id))
            .where(and_(Outbox.study_id.in_(ids), Outbox.kind.in_(OUTBOX_KINDS)))
            .group_by(Outbox.study_id, Outbox.kind)
        ).all()
        conn.rollback()
    counts: dict[int, list[int]] = {i: [0, 0] for i in ids}  # series, instances
    mods: dict[int, set[str]] = {i: set() for i in ids}
    for study_id, modality, series, instances in clean:
        counts[study_id][0] += series
        counts[study_id][1] += instances
        if modality:
            mods[study_id].add(modality)
    for study_id, n in reports:  # each report and each answer SR / GSPS is a series of its own
        counts[study_id][0] += n
        counts[study_id][1] += n
        mods[study_id].add("SR")
    for study_id, kind, n in extra:
        counts[study_id][0] += n
        counts[study_id][1] += n
        mods[study_id].add(KIND_MODALITY[kind])
    for r in rows:
        found.append(OutputStudy(r.study_uid, r.study_date, sorted(mods[r.id]), *counts[r.id]))
    return found


def _outbox_exists(kind: str):  # type: ignore[no-untyped-def]
    return exists(select(Outbox.id).where(and_(Outbox.study_id == Study.id, Outbox.kind == kind)))


def study_outputs(
    engine: Engine, study_uid: str, *, series_uid: str | None = None, sop_instance_uid: str | None = None
) -> list[OutputFile]:
    """The outputs of one study: cleaned images (by series), its report, answer SRs and GSPS;
    only those of ``series_uid`` or the one ``sop_instance_uid`` when given. Answer SRs and GSPS
    are not narrowed by series (the catalog does not hold theirs): the caller reads their files."""
    with engine.connect() as conn:
        study_id = conn.execute(select(Study.id).where(Study.study_uid == study_uid)).scalar()
        if study_id is None:
            return []
        image_cond = [
            Instance.study_id == study_id, Instance.state == InstanceState.CLEAN.value,
            Instance.clean_path.is_not(None),
        ]
        report_cond = [Report.study_id == study_id]
        extra_cond = [Outbox.study_id == study_id, Outbox.kind.in_(OUTBOX_KINDS)]
        if series_uid is not None:
            image_cond.append(Series.series_uid == series_uid)
            report_cond.append(Report.series_uid == series_uid)
        if sop_instance_uid is not None:
            image_cond.append(Instance.sop_instance_uid == sop_instance_uid)
            report_cond.append(Report.sop_instance_uid == sop_instance_uid)
            extra_cond.append(Outbox.sop_instance_uid == sop_instance_uid)
        images = conn.execute(
            select(Instance.sop_instance_uid, Instance.clean_path, Series.series_uid, Series.modality)
            .join(Series, Series.id == Instance.series_id)
            .where(and_(*image_cond))
            .order_by(Series.id, Instance.id)
        ).all()
        report = conn.execute(
            select(Report.sop_instance_uid, Report.path, Report.series_uid).where(and_(*report_cond))
        ).all()
        extra = conn.execute(
            select(Outbox.sop_instance_uid, Outbox.path, Outbox.kind).where(and_(*extra_cond)).order_by(Outbox.id)
        ).all()
        conn.rollback()
    out = [OutputFile(study_uid, sop, IMAGE, path, series, modality) for sop, path, series, modality in images]
    out += [OutputFile(study_uid, sop, REPORT_SR, path, series, "SR") for sop, path, series in report]
    out += [OutputFile(study_uid, sop, kind, path, None, KIND_MODALITY[kind]) for sop, path, kind in extra]
    return out
