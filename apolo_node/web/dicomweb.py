"""DICOMweb (PS3.18): STOW-RS into the durable store, QIDO-RS / WADO-RS over the node's own
de-identified outputs only. Routes arrive in later commits; the router exists now so the web
app can include it."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/dicomweb")
