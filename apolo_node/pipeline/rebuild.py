"""The catalog's reports and findings rebuilt from the TID 1500 SR files alone.

Our SRs hold everything a finding row does (``sr.read_measurement_report``), so after a lost or
restored catalog ``apolo-node db rebuild-reports`` reads ``spool/reports/<study>/*.dcm`` back:
the newest SR of each study catalogued becomes its report again. Studies the catalog does not
know are counted and left alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pydicom import dcmread
from pydicom.config import disable_value_validation
from sqlalchemy import Engine

from apolo_node.catalog.reports import ReportRecord, record_report
from apolo_node.logs import event, get_logger
from apolo_node.spool import REPORTS, Spool
from apolo_node.sr import read_measurement_report

log = get_logger("rebuild")


@dataclass
class RebuildSummary:
    """How many reports and findings were restored; SR files of unknown studies or unreadable."""

    reports: int = 0
    findings: int = 0
    unknown_studies: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)


def rebuild_reports(engine: Engine, spool: Spool) -> RebuildSummary:
    """Catalogue the newest SR of every study folder under ``reports/`` again."""
    summary = RebuildSummary()
    root = spool.root / REPORTS
    for folder in sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []:
        files = sorted(folder.glob("*.dcm"), key=lambda p: p.stat().st_mtime_ns)
        if not files:
            continue
        newest = files[-1]
        relative = newest.relative_to(spool.root).as_posix()
        try:
            with disable_value_validation():
                ds = dcmread(newest)
                content = read_measurement_report(ds)
        except Exception as exc:  # not ours, or damaged: say which file, not what it holds
            summary.unreadable.append(f"{relative} ({type(exc).__name__})")
            continue
        images = len({(f.sop_instance_uid, f.frame) for f in content.findings})
        narrative = content.narrative
        record = ReportRecord(
            folder.name, str(ds.SOPInstanceUID), str(ds.SeriesInstanceUID), relative,
            content.algorithm, images, 0,
            *((narrative.findings, narrative.impression, narrative.trace) if narrative else ()),
        )
        try:
            record_report(engine, record, content.findings)
        except LookupError:
            summary.unknown_studies.append(folder.name)
            continue
        summary.reports += 1
        summary.findings += len(content.findings)
    event(log, "reports.rebuilt", reports=summary.reports, findings=summary.findings,
          unknown=len(summary.unknown_studies), unreadable=len(summary.unreadable))
    return summary
