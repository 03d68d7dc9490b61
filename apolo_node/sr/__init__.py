"""DICOM Structured Reports and presentation states from findings (highdicom), and back."""

from apolo_node.sr.measurement_report import (
    MeasurementReportContent,
    measurement_report,
    read_measurement_report,
)

__all__ = ["MeasurementReportContent", "measurement_report", "read_measurement_report"]
