"""DICOM Structured Reports and presentation states from findings (highdicom), and back."""
