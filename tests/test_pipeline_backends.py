"""The model backends inside the pipeline, on real de-identified images: a tiny local
Qwen2.5-VL through transformers, and an OpenAI-compatible server on 127.0.0.1."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.uid import generate_uid

from apolo_node import config as config_mod
from apolo_node.catalog.engine import engine_for
from apolo_node.catalog.records import list_studies
from apolo_node.catalog.reports import StoredReport, report_for
from apolo_node.config import Config
from apolo_node.pipeline.ingest import ingest
from apolo_node.vision import transformers_backend
from tests.nodes import upgraded_engine
from tests.openai_server import OpenAIServer
from tests.peer_fixtures import dciodvfy_errors
from tests.synthetic import new_marker, phantom_ct


def ingest_one_slice(cfg: Config, folder: Path, marker: str) -> tuple[StoredReport, Path]:
    folder.mkdir()
    phantom_ct(study_uid=generate_uid(), series_uid=generate_uid(), marker=marker).save_as(
        folder / "ct.dcm", enforce_file_format=True
    )
    upgraded_engine(cfg).dispose()
    summary = ingest(cfg, [folder])
    assert summary.stored == 1
    engine = engine_for(cfg)
    try:
        [study] = list_studies(engine)
        assert study.status == "reported", study.reason
        stored = report_for(engine, study.study_uid)
    finally:
        engine.dispose()
    assert stored is not None
    sr = cfg.spool_root / stored.record.path
    assert dciodvfy_errors(sr) == []
    assert marker.encode() not in sr.read_bytes()
    return stored, sr


def test_the_openai_backend_reports_a_study_with_boxes_in_source_pixels(cfg: Config, tmp_path: Path) -> None:
    answer = {"findings": [{
        "label": "Nodule", "description": "a small nodule", "box": [250, 500, 500, 750],
        "confidence": 0.8, "laterality": "left", "location": "left lower lobe",
    }]}
    marker = new_marker()
    with OpenAIServer(models={"vlm": "/weights/vlm-7b"}, default_content=json.dumps(answer)) as server:
        cfg = config_mod.replace(cfg, vision={"backend": "openai", "url": server.url, "model": "vlm",
                                              "timeout": 10.0, "retries": 0})
        stored, _ = ingest_one_slice(cfg, tmp_path / "in", marker)
        [request] = server.received()
    [finding] = stored.findings
    assert finding.box is not None and finding.box.as_list() == pytest.approx([64, 128, 128, 192])
    assert (finding.code.value, finding.confidence, finding.laterality) == ("27925004", 0.8, "left")
    assert stored.record.algorithm.name == "vlm" and stored.record.algorithm.version == "/weights/vlm-7b"
    # The server saw the de-identified slice as a viewer shows it (window 40/400), and no PHI.
    [image] = request.images()
    assert image.size == (256, 256)
    shown = np.asarray(image.convert("L"))
    assert shown[5, 5] == 0 and shown[128, 128] == 128  # air black; 40 HU at the window centre
    assert marker not in json.dumps(request.json)
    assert "Modality: CT." in request.text() and "Body part: CHEST." in request.text()


@pytest.mark.skipif(transformers_backend.available() is not None, reason="torch/transformers not installed")
def test_a_tiny_local_qwen2_5_vl_reports_a_real_deidentified_study(
    cfg: Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.tiny_models import tiny_qwen2_5_vl

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = tiny_qwen2_5_vl(tmp_path / "tiny-qwen")
    # tiling off: the 256x256 slice is over 4 x this tiny budget, and would be tiled too
    cfg = config_mod.replace(cfg, vision={"backend": "transformers", "model": str(model), "device": "cpu",
                                          "max_new_tokens": 24, "max_pixels": 112 * 112, "tiling": "off"})
    stored, sr = ingest_one_slice(cfg, tmp_path / "in", new_marker())
    assert stored.record.images == 1
    assert stored.record.algorithm.name == "tiny-qwen"
    # Random weights write gibberish: it is counted, not fatal; whatever parsed is on the slice.
    for f in stored.findings:
        assert f.box is None or f.box.within(256, 256)
    assert dcmread(sr).ContentSequence  # a valid, readable SR even with nothing found
