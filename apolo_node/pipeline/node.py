"""The running node: the SCP, the stable-study watcher, the de-identification and vision
workers, the sender when results go back to the PACS, the quarantine's retention period, and a
clean stop on SIGTERM.

Start-up checks before listening: the catalog is at the newest schema, the spool is writable,
scraps of unacknowledged instances are cleared, and whole spooled files with no catalog row
(a crash between the file's rename and its row) are catalogued.
"""

from __future__ import annotations

import threading

from sqlalchemy import Engine, select

from apolo_node.catalog.models import Instance, InstanceState, Study
from apolo_node.config import Config
from apolo_node.deid.quarantine import Quarantine
from apolo_node.logs import event, get_logger
from apolo_node.pipeline import deidentify, describe, quarantine, sender, workers
from apolo_node.pipeline.parts import Parts
from apolo_node.pipeline.workers import keep_leases
from apolo_node.pseudonym import mapper
from apolo_node.receive import stable
from apolo_node.receive.scp import StorageSCP
from apolo_node.spool import Spool
from apolo_node.receive.store import InstanceStore
from apolo_node.web.app import create_app
from apolo_node.web.server import WebServer

log = get_logger("node")


def reconcile_spool(
    spool: Spool, engine: Engine, store: InstanceStore, scrap_age: float = 0.0
) -> tuple[int, int]:
    """Clear scraps in tmp/ older than ``scrap_age`` seconds; catalogue complete incoming files
    that have no row. Both counts.

    A file in incoming/ is whole (it was fsynced before its rename), so one without a row was
    written just before a crash or a power loss: it is catalogued now, through the same store
    path as the network (it may also come again from the PACS: kept once, counted once).
    An original whose instance is already cleaned or quarantined (a crash after its row moved on,
    before its clear copy was deleted) is deleted now: no readable original outlives its work.
    """
    scraps = spool.clear_tmp(scrap_age)
    with engine.connect() as conn:
        rows = conn.execute(
            select(Instance.path, Instance.state, Study.study_uid, Instance.sop_instance_uid)
            .join(Study, Study.id == Instance.study_id)
        ).all()
        conn.rollback()
    known = {r.path for r in rows}
    settled = {
        spool.relative_path(r.study_uid, r.sop_instance_uid)
        for r in rows if r.state != InstanceState.RECEIVED.value
    }
    incoming = spool.incoming_files()
    for rel in incoming:
        if rel in settled:
            spool.remove(rel)
    orphans = [p for p in incoming if p not in known and p not in settled]
    for rel in orphans:
        result = store.store((spool.root / rel).read_bytes(), calling_aet=None)
        if not result.ok or spool.relative_path(result.study_uid or "", result.sop_instance_uid or "") != rel:
            spool.remove(rel)  # unreadable, or named under another key: the PACS resends it
    return scraps, len(orphans)


class Node:
    """Everything ``apolo-node serve`` runs, built from one configuration."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.parts = Parts(cfg)
        self.engine, self.spool, self.store = self.parts.engine, self.parts.spool, self.parts.store
        self.scp = StorageSCP(cfg.receive, self.store)
        self.deidentifier = self.parts.deidentifier  # bad [deid] options stop us here
        self.vault = self.parts.vault
        self.vision = self.parts.vision  # a backend that cannot run stops us here
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.web = (  # [web] enabled: status page, health, metrics, DICOMweb (unsafe access stops us here)
            WebServer(create_app(cfg, engine=self.engine, store=self.store, workers=self.stopped), cfg.web)
            if cfg.web.enabled else None
        )

    def stopped(self) -> list[str]:
        """The workers started that no longer run (for ``/readyz``)."""
        return [t.name for t in self._threads if not t.is_alive()]

    def start(self) -> None:
        # A scrap younger than a lease may be a worker's write in progress on a shared spool
        scraps, orphans = reconcile_spool(self.spool, self.engine, self.store, self.cfg.worker.lease)
        event(log, "node.starting", scraps_removed=scraps, recatalogued=orphans)
        if self.web is not None:
            self.web.start()  # a port already taken stops us here, before the SCP listens
        self.scp.start()
        watcher = threading.Thread(
            target=stable.watch,
            args=(self.engine, self.cfg.receive.stable_after, self.cfg.worker.poll_interval, self._stop),
            name="stable-watch",
            daemon=True,
        )
        cleaner = threading.Thread(
            target=deidentify.watch,
            args=(self.cfg, self.engine, self.spool, self.deidentifier, self._stop, self.vault),
            name="deid-worker",
            daemon=True,
        )
        describer = threading.Thread(
            target=describe.watch,
            args=(self.engine, self.spool, self.vision, self.cfg, self._stop),
            name="vision-worker",
            daemon=True,
        )
        retention = threading.Thread(
            target=quarantine.watch_retention,
            args=(self.cfg, self.engine, Quarantine.from_config(self.cfg), self._stop),
            name="quarantine-retention",
            daemon=True,
        )
        keeper = threading.Thread(  # leases live as long as this process, however long a job takes
            target=keep_leases,
            args=(self.engine, self.cfg.worker.lease, self._stop, log),
            name="lease-keeper",
            daemon=True,
        )
        workers = [watcher, cleaner, describer, retention, keeper]
        if self.vault is not None:  # [send] enabled: results go back to the PACS
            workers.append(threading.Thread(
                target=sender.watch,
                args=(self.cfg, self.engine, self.spool, self.vault, mapper(self.cfg), self._stop),
                name="send-worker",
                daemon=True,
            ))
        for thread in workers:
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        """Stop HTTP and associations, finish those in flight, stop the workers."""
        self._stop.set()
        if self.web is not None:
            self.web.stop()
        aborted = self.scp.stop()
        for t in self._threads:
            t.join(timeout=10)
        self.parts.close()
        event(log, "node.stopped", aborted=aborted)

    def run_until_signalled(self) -> None:
        """Serve until SIGTERM or SIGINT, then stop cleanly."""
        workers.run_until_signalled(self.start, self.stop, log)
