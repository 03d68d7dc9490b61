"""DICOM Structured Reports and presentation states from findings (highdicom), and back;
a study's narrative (findings text and impression) for its report."""

from apolo_node.sr.answer_report import (
    AnswerReportContent,
    Citation,
    CitedFinding,
    answer_report,
    read_answer_report,
)
from apolo_node.sr.measurement_report import (
    MeasurementReportContent,
    measurement_report,
    read_measurement_report,
)
from apolo_node.sr.narrative import Narrative, compose_narrative
from apolo_node.sr.presentation_state import (
    GroundingBox,
    grounding_presentation_state,
    presentable,
    read_grounding_presentation_state,
)

__all__ = [
    "AnswerReportContent",
    "Citation",
    "CitedFinding",
    "GroundingBox",
    "MeasurementReportContent",
    "Narrative",
    "answer_report",
    "compose_narrative",
    "grounding_presentation_state",
    "measurement_report",
    "presentable",
    "read_answer_report",
    "read_grounding_presentation_state",
    "read_measurement_report",
]
