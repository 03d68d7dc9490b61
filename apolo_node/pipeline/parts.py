"""What the stages run on, built in one place from one configuration: the catalog (checked at
the newest schema), the spool, the store path, the de-identifier, the vault and the vision
backend.

``serve`` (``node.py``), ``ingest`` and ``worker --stage`` (``stages.py``) all build their parts
here, so a setting means the same in each and a bad one (an unknown ``[deid]`` option, a backend
that cannot run, a vault without its key) stops each of them the same way, before any work.
Each part is built when first asked for and once only: a worker of one stage never loads a
model it does not use.
"""

from __future__ import annotations

from functools import cached_property

from sqlalchemy import Engine

from apolo_node.catalog.engine import engine_for
from apolo_node.catalog.migrate import require_head
from apolo_node.config import Config
from apolo_node.deid import Deidentifier
from apolo_node.deid.vault import Vault
from apolo_node.pseudonym import mapper
from apolo_node.receive.store import InstanceStore, Limits
from apolo_node.spool import Spool
from apolo_node.vision.backend import VisionBackend


class Parts:
    """The parts of one process's pipeline; :meth:`close` releases what was built."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.engine: Engine = engine_for(cfg)
        try:
            require_head(self.engine)
        except BaseException:
            self.engine.dispose()
            raise
        self.spool = Spool(cfg.spool_root)

    @cached_property
    def store(self) -> InstanceStore:
        """The store path every received instance takes (C-STORE, STOW-RS, ingest)."""
        return InstanceStore(self.spool, self.engine, mapper(self.cfg), Limits.from_settings(self.cfg.receive))

    @cached_property
    def deidentifier(self) -> Deidentifier:
        return Deidentifier.from_config(self.cfg)

    @cached_property
    def vault(self) -> Vault | None:
        """The vault when results go back to the PACS (``[send] enabled``); else none is kept."""
        return Vault.from_config(self.cfg) if self.cfg.send.enabled else None

    @cached_property
    def vision(self) -> VisionBackend:
        from apolo_node.vision.backends import make_backend  # a model backend imports a lot

        return make_backend(self.cfg.vision)

    def close(self) -> None:
        """Release the model (if one was loaded) and the catalog's connections."""
        if "vision" in self.__dict__:
            self.vision.close()
        self.engine.dispose()
