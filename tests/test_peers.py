"""The real test peers work: dcmtk storescu/storescp, Orthanc, PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom import dcmread

from tests.peers import LOCALHOST, Orthanc, PeerError, Storescp, free_port, start_storescu, storescu
from tests.synthetic import Study, write_study

pytestmark = pytest.mark.peers


@pytest.fixture
def study(tmp_path: Path) -> Study:
    return write_study(tmp_path / "study", series=2, per_series=3)


def received_sop_uids(files: list[Path]) -> set[str]:
    return {str(dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files}


def test_storescu_sends_a_study_to_storescp(storescp: Storescp, study: Study) -> None:
    done = storescu(study.files[0].parent, storescp.port, called_aet="STORESCP")
    assert done.returncode == 0, done.stdout
    assert received_sop_uids(storescp.files()) == set(study.sop_uids)


def test_storescp_ignore_mode_writes_nothing(need_dcmtk: None, tmp_path: Path, study: Study) -> None:
    with Storescp(tmp_path / "ignored", ignore=True) as scp:
        storescu(study.files, scp.port, called_aet="STORESCP")
        assert scp.files() == []


def test_storescu_popen_reports_a_refused_connection(need_dcmtk: None, study: Study) -> None:
    proc = start_storescu(study.files[0], free_port())
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode != 0
    assert "Association Request Failed" in out or "connection refused" in out.lower()


def test_storescu_check_names_the_peer_and_shows_the_output(need_dcmtk: None, study: Study) -> None:
    port = free_port()
    with pytest.raises(PeerError, match=rf"storescu to APOLO@127\.0\.0\.1:{port} exited with status"):
        storescu(study.files, port)


def test_a_peer_that_cannot_start_raises_with_its_log(need_dcmtk: None, tmp_path: Path) -> None:
    with pytest.raises(PeerError, match=r"(?s)storescp on 127\.0\.0\.1:\d+ exited .*no-such-option"):
        Storescp(tmp_path / "bad", extra_args=["--no-such-option"]).start()


def test_a_peer_refuses_a_busy_port(need_dcmtk: None, tmp_path: Path) -> None:
    with Storescp(tmp_path / "first") as first:
        with pytest.raises(PeerError, match=rf"port {first.port} on 127\.0\.0\.1 is already in use"):
            Storescp(tmp_path / "second", port=first.port).start()


def test_orthanc_receives_from_storescu(orthanc: Orthanc, study: Study) -> None:
    storescu(study.files, orthanc.port, called_aet="ORTHANC")
    assert orthanc.sop_instance_uids(study.study_uid) == set(study.sop_uids)


def test_orthanc_echoes_and_sends_a_study_to_its_modality(
    need_dcmtk: None, need_orthanc: None, tmp_path: Path, study: Study
) -> None:
    with Storescp(tmp_path / "pacs", ae_title="APOLO") as scp, Orthanc(
        tmp_path / "orthanc", modalities={"APOLO": ("APOLO", LOCALHOST, scp.port)}
    ) as server:
        server.upload(study.files[0].parent)
        orthanc_id = server.find_study_by_uid(study.study_uid)
        assert orthanc_id in server.studies()
        assert len(server.instances_of_study(orthanc_id)) == len(study.files)
        assert server.echo("APOLO")
        server.send_study(orthanc_id, modality="APOLO")
        assert received_sop_uids(scp.files()) == set(study.sop_uids)

        server.add_modality("NOBODY", "NOBODY", LOCALHOST, free_port())
        assert not server.echo("NOBODY")


def test_postgres_cluster_accepts_sqlalchemy(postgres_url: str) -> None:
    sqlalchemy = pytest.importorskip("sqlalchemy")
    pytest.importorskip("psycopg")
    assert postgres_url.startswith("postgresql+psycopg://postgres@127.0.0.1:")
    engine = sqlalchemy.create_engine(postgres_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(sqlalchemy.text("select 1")).scalar() == 1
            assert conn.execute(sqlalchemy.text("select current_database()")).scalar() == "apolo_test"
    finally:
        engine.dispose()


@pytest.mark.parametrize(("ci", "outcome"), [("true", pytest.fail.Exception), ("", pytest.skip.Exception)])
def test_a_missing_peer_skips_but_fails_under_ci(
    monkeypatch: pytest.MonkeyPatch, ci: str, outcome: type[BaseException]
) -> None:
    from tests.peer_fixtures import require_peer

    monkeypatch.setenv("CI", ci)
    with pytest.raises(outcome, match="install the Debian package orthanc"):
        require_peer("orthanc", False)
    require_peer("orthanc", True)
