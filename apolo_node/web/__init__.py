"""The HTTP side of ``serve``: status page, health, metrics, DICOMweb (see ``app.create_app``)."""
