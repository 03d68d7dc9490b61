"""apolo-node: a DICOM node that puts medical AI next to a PACS without leaking patient identifiers."""

__version__ = "0.1.0"
