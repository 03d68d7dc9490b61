"""One wiring of the pipeline's parts for serve, ingest and worker (pipeline/parts.py)."""

from __future__ import annotations

import pytest

from apolo_node.catalog.engine import engine_for
from apolo_node.catalog.migrate import SchemaError, upgrade
from apolo_node.config import Config, ConfigError, replace
from apolo_node.pipeline import parts as parts_mod
from apolo_node.pipeline.parts import Parts


def test_a_catalog_behind_the_schema_stops_every_process_before_any_part(cfg: Config) -> None:
    with pytest.raises(SchemaError, match="apolo-node db upgrade"):
        Parts(cfg)


def test_parts_are_built_when_first_asked_once_and_closed_together(cfg: Config) -> None:
    engine = engine_for(cfg)
    upgrade(engine)
    engine.dispose()
    parts = Parts(cfg)
    try:
        assert parts.store is parts.store and parts.deidentifier is parts.deidentifier
        assert parts.store.spool is parts.spool
        assert "vision" not in parts.__dict__, "a worker that never describes loads no model"
        assert parts.vault is None, "[send] enabled = false keeps no vault"
        backend = parts.vision
        closed = []
        backend.close = lambda: closed.append(True)  # type: ignore[method-assign]
    finally:
        parts.close()
    assert closed == [True]


def test_serve_ingest_and_worker_all_build_on_parts() -> None:
    # the wiring is in one place: none of the three builds its own engine, store or backend
    import inspect

    from apolo_node.pipeline import ingest, node, stages

    for module in (node, ingest, stages):
        source = inspect.getsource(module)
        assert "Parts(" in source, module.__name__
        for builder in ("engine_for(", "make_backend(", "Deidentifier.from_config(", "InstanceStore("):
            assert builder not in source, f"{module.__name__} builds {builder} itself"
    assert "engine_for(" in inspect.getsource(parts_mod)


def test_a_bad_deid_option_stops_parts_before_any_work(cfg: Config) -> None:
    engine = engine_for(cfg)
    upgrade(engine)
    engine.dispose()
    with pytest.raises(ConfigError, match="unknown option"):
        Parts(replace(cfg, deid={"options": ["no_such_option"]})).deidentifier
