"""The C-STORE SCU over TLS against dcmtk's ``storescp +tls``: results reach a PACS whose
certificate verifies against ``[send] tls_ca`` (with our client certificate when it asks), and
never one that does not: that result waits in the outbox with the reason, and is delivered once
the trust is fixed."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from apolo_node import config as config_mod
from apolo_node.catalog.engine import engine_for
from apolo_node.catalog.outbox import outbox_rows
from apolo_node.config import Config, ConfigError, SendSettings
from apolo_node.deid.vault import Vault
from apolo_node.pipeline import sender
from apolo_node.pipeline.ingest import ingest
from apolo_node.pseudonym import UIDMapper
from apolo_node.spool import Spool
from apolo_node.send.scu import StoreResult, c_store
from tests.conftest import make_config
from tests.nodes import upgraded_engine
from tests.peers import LOCALHOST, Storescp
from tests.synthetic import write_study
from tests.test_send_scu import an_sr
from tests.tls_certs import Authority, Issued

pytestmark = pytest.mark.usefixtures("need_dcmtk")


@dataclasses.dataclass(frozen=True)
class Pki:
    ca: Authority
    other_ca: Authority
    pacs: Issued
    client: Issued
    stranger: Issued  # a client certificate the PACS's CA did not sign


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    ca, other = Authority.create(folder, "hospital-ca"), Authority.create(folder, "other-ca")
    return Pki(ca, other, ca.issue(folder, "pacs"), ca.issue(folder, "apolo"), other.issue(folder, "stranger"))


@pytest.fixture
def tls_pacs(tmp_path: Path, pki: Pki) -> Iterator[Storescp]:
    """storescp over TLS with the PACS's certificate, requiring a client certificate from our CA."""
    args = ["+tls", str(pki.pacs.key), str(pki.pacs.cert), "+cf", str(pki.ca.cert), "-rc"]
    with Storescp(tmp_path / "pacs", extra_args=args) as scp:
        yield scp


def tls_settings(cfg: Config, scp: Storescp, ca: Path | str, client: Issued | None) -> SendSettings:
    return dataclasses.replace(
        cfg.send, host=LOCALHOST, port=scp.port, ae_title=scp.ae_title, timeout=5.0, tls_ca=str(ca),
        tls_cert=str(client.cert) if client else "", tls_key=str(client.key) if client else "",
    )


def test_an_sr_goes_to_a_tls_pacs_that_verifies_with_our_client_certificate(
    cfg: Config, tls_pacs: Storescp, pki: Pki
) -> None:
    sr = an_sr()
    outcome = c_store(sr, tls_settings(cfg, tls_pacs, pki.ca.cert, pki.client))
    assert (outcome.result, outcome.status) == (StoreResult.SENT, 0x0000), outcome
    [received] = tls_pacs.files()
    assert str(sr.SOPInstanceUID) in received.name


@pytest.mark.parametrize(
    "ca, client, detail",
    [
        ("other", "client", "failed the TLS handshake (certificate verify failed"),
        ("ca", "stranger", "gave no association"),  # the PACS refuses our certificate
        ("ca", None, "gave no association"),  # the PACS wants one and gets none
        (None, None, "gave no association"),  # plain TCP to a TLS port
    ],
    ids=["pacs-not-signed-by-our-ca", "client-not-signed-by-its-ca", "no-client-cert", "plain-tcp"],
)
def test_a_tls_pacs_we_cannot_trust_or_that_cannot_trust_us_gets_nothing(
    cfg: Config, tls_pacs: Storescp, pki: Pki, ca: str | None, client: str | None, detail: str
) -> None:
    authority = {"ca": pki.ca.cert, "other": pki.other_ca.cert, None: ""}[ca]
    issued = {"client": pki.client, "stranger": pki.stranger, None: None}[client]
    outcome = c_store(an_sr(), tls_settings(cfg, tls_pacs, authority, issued))
    assert (outcome.result, outcome.status) == (StoreResult.RETRY, None), outcome
    assert detail in outcome.detail
    assert tls_pacs.files() == []


def test_unreadable_tls_files_leave_the_result_waiting_with_the_setting_named(
    cfg: Config, tls_pacs: Storescp, tmp_path: Path
) -> None:
    outcome = c_store(an_sr(), tls_settings(cfg, tls_pacs, tmp_path / "missing.pem", None))
    assert outcome.result is StoreResult.RETRY
    assert "[send] tls_ca/tls_cert/tls_key could not be loaded" in outcome.detail


def test_the_outbox_keeps_a_result_the_untrusted_pacs_did_not_get_and_delivers_it_once_trusted(
    tmp_path: Path, tls_pacs: Storescp, pki: Pki
) -> None:
    cfg = make_config(
        tmp_path,
        send={
            "enabled": True, "host": LOCALHOST, "port": tls_pacs.port, "ae_title": tls_pacs.ae_title,
            "timeout": 5.0, "retry_base": 0.1, "retry_max": 0.2, "tls_ca": str(pki.other_ca.cert),
            "tls_cert": str(pki.client.cert), "tls_key": str(pki.client.key),
        },
        deid={"vault_key": Fernet.generate_key().decode()},
    )
    write_study(tmp_path / "in", series=1, per_series=1)
    upgraded_engine(cfg).dispose()
    ingest(cfg, [tmp_path / "in"])
    engine = engine_for(cfg)
    try:
        args = (Spool(cfg.spool_root), Vault.from_config(cfg), UIDMapper(cfg.deid.key.encode()), "test:send0")
        assert sender.run_once(cfg, engine, *args)
        [row] = outbox_rows(engine)
        assert (row.state, row.attempts) == ("pending", 1)
        assert row.last_error and "certificate verify failed" in row.last_error
        assert tls_pacs.files() == []

        trusted = config_mod.replace(cfg, send={"tls_ca": str(pki.ca.cert)})
        later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=1)
        while not sender.run_once(trusted, engine, *args):
            assert dt.datetime.now(dt.timezone.utc) < later, "the row never came due again"
        [row] = outbox_rows(engine)
        assert row.state == "sent"
        [received] = tls_pacs.files()
        assert row.sop_instance_uid in received.name
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    "env, match",
    [
        ({"APOLO_SEND__TLS_CERT": "/c.pem"}, r"\[send\] tls_cert and tls_key go together"),
        ({"APOLO_SEND__TLS_CERT": "/c.pem", "APOLO_SEND__TLS_KEY": "/k.pem"}, r"tls_cert .* needs tls_ca"),
    ],
)
def test_half_a_tls_configuration_is_refused(env: dict[str, str], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        config_mod.load(Path(__file__).resolve().parents[1] / "config" / "apolo.toml", env=env)


def test_a_whole_tls_configuration_is_accepted(pki: Pki) -> None:
    env = {"APOLO_SEND__TLS_CA": str(pki.ca.cert), "APOLO_SEND__TLS_CERT": str(pki.client.cert),
           "APOLO_SEND__TLS_KEY": str(pki.client.key)}
    cfg = config_mod.load(Path(__file__).resolve().parents[1] / "config" / "apolo.toml", env=env)
    assert cfg.send.tls_ca == str(pki.ca.cert)
