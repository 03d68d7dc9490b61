"""Settings: declared once here, documented in ``config/apolo.toml``, overridable by environment.

Each table of the TOML file is one frozen dataclass below; every field carries its default and
its help text, so the docs test can check that ``config/apolo.toml`` documents every key.
An environment variable ``APOLO_<TABLE>__<KEY>`` overrides the file (``APOLO_RECEIVE__PORT=11112``).
Unknown tables or keys, and values of the wrong type, are refused at start-up with a message that
names the key, the rule and the value.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

ENV_PREFIX = "APOLO_"
DEFAULT_CONFIG = Path("config/apolo.toml")


class ConfigError(ValueError):
    """A setting is unknown, malformed or inconsistent; the message names it."""


def setting(default: Any, help: str) -> Any:
    """Declare a setting with its default and the help text that documents it."""
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class CatalogSettings:
    """[catalog]: where the SQL catalog lives."""

    url: str = setting(
        "", "SQLAlchemy URL; empty means SQLite at <spool.root>/catalog.sqlite (WAL mode)"
    )
    pool_size: int = setting(5, "connections kept per process (PostgreSQL)")


@dataclass(frozen=True)
class SpoolSettings:
    """[spool]: the folders where files wait between stages."""

    root: str = setting("spool", "root folder of incoming/, clean/, quarantine/, tmp/")


@dataclass(frozen=True)
class ReceiveSettings:
    """[receive]: the C-STORE / C-ECHO SCP."""

    ae_title: str = setting("APOLO", "AE title this node answers to")
    host: str = setting("127.0.0.1", "address to listen on (0.0.0.0 for every interface)")
    port: int = setting(11112, "TCP port to listen on")
    stable_after: float = setting(
        30.0, "seconds with no new instance after which a study is queued for the next stage"
    )
    allowed_aets: list = setting([], "calling AE titles allowed to associate; empty allows any")
    allowed_addresses: list = setting(
        [], "source addresses or networks (CIDR) allowed to connect; empty allows any"
    )
    max_associations: int = setting(
        32, "associations served at once; more are rejected (keep it above max_per_address)"
    )
    max_pdu: int = setting(131072, "maximum PDU size we receive, in bytes (0: unlimited)")
    network_timeout: float = setting(60.0, "seconds of silence before an association is dropped")
    tls_cert: str = setting("", "PEM certificate for DICOM TLS; empty serves plain TCP")
    tls_key: str = setting("", "PEM private key for tls_cert")
    tls_ca: str = setting("", "PEM CA bundle; when set, callers must present a certificate it signed")
    drain_timeout: float = setting(
        30.0, "on SIGTERM, seconds to let associations in flight finish before aborting them"
    )
    check_called_aet: bool = setting(
        True, "refuse associations whose called AE title is not ae_title (A-ASSOCIATE-RJ)"
    )
    artim_timeout: float = setting(
        30.0, "seconds a new connection has to send a whole A-ASSOCIATE-RQ (PS3.8 ARTIM)"
    )
    request_timeout: float = setting(
        600.0, "seconds one DIMSE message, command and data set, may take from first to last PDU"
    )
    max_pending: int = setting(
        64, "connections accepted but not yet associated, at once; more are closed at accept"
    )
    max_per_address: int = setting(
        16,
        "connections at once from one source address, associated or not; more are closed "
        "(below max_associations, so that one address cannot hold every slot)",
    )
    max_instance_size: int = setting(
        4_294_967_296, "largest data set we take, in bytes (inflated, for deflate); larger gets 0xA700"
    )
    max_depth: int = setting(
        32, "deepest sequence nesting we take (items inside items); deeper gets 0xC000"
    )


@dataclass(frozen=True)
class DeidSettings:
    """[deid]: the de-identification profile and its key."""

    key: str = setting(
        "",
        "secret for keyed UID remapping; empty means the key file below. "
        "Give it by APOLO_DEID__KEY, never in a committed file",
    )
    key_file: str = setting(
        "", "file holding the secret; empty means <spool.root>/secrets/deid.key, made on first use"
    )
    options: list = setting(
        ["clean_pixel_data", "clean_descriptors", "retain_long_modified_dates"],
        "PS3.15 Annex E options applied on top of the Basic Profile",
    )
    vault_key: str = setting(
        "",
        "Fernet key that encrypts the vault of originals, needed when [send] enabled. "
        "Give it by APOLO_DEID__VAULT_KEY, never in a committed file",
    )
    max_depth: int = setting(
        32, "deepest sequence nesting de-identified; a deeper instance is quarantined, not retried"
    )
    instance_timeout: float = setting(
        120.0, "seconds of work allowed per instance (header, pixels, OCR); past it, quarantined"
    )
    processes: int = setting(
        0, "worker processes that clean instances at once, each killed past instance_timeout; 0 means one per CPU core"
    )
    quarantine_days: float = setting(
        30.0, "days a quarantined original (encrypted) is kept for review before serve purges it"
    )


@dataclass(frozen=True)
class WorkerSettings:
    """[worker]: the job queue between stages."""

    lease: float = setting(300.0, "seconds a claimed job stays with its worker without a heartbeat")
    poll_interval: float = setting(1.0, "seconds between looks for stable studies and new jobs")


VISION_BACKENDS = ("baseline", "transformers", "openai")
VISION_PROFILES = ("auto", "apolo", "qwen2_5_vl", "qwen3_vl", "medmo", "deepseek_vl2")  # vision/profiles.py
TILINGS = ("off", "auto", "always")
REASONING_BACKENDS = ("extractive", "transformers", "openai")
EMBEDDINGS = ("auto", "minilm", "multilingual")  # reasoning/embedding.py
IDENTIFIER_POLICIES = ("replace", "refuse")  # reasoning/identifiers.py


@dataclass(frozen=True)
class VisionSettings:
    """[vision]: the vision-language stage."""

    backend: str = setting("baseline", "baseline (offline, non-diagnostic), transformers or openai")
    model: str = setting("", "Hugging Face model id or local path, or the served model's name")
    url: str = setting("", "openai backend: the server's base URL, e.g. http://127.0.0.1:8000/v1")
    api_key: str = setting("", "openai backend: API key; set it as APOLO_VISION__API_KEY, never in a file")
    timeout: float = setting(120.0, "openai backend: seconds to wait for one answer")
    retries: int = setting(3, "openai backend: retries of a failed request, with backoff")
    device: str = setting("auto", "transformers backend: cpu, cuda, cuda:N or auto")
    dtype: str = setting("auto", "transformers backend: auto, float32, bfloat16 or float16")
    max_new_tokens: int = setting(512, "longest answer a model may write per image, in tokens")
    batch_size: int = setting(4, "images per model call")
    frames: str = setting("middle", "frames of a multi-frame instance to look at: first, middle or all")
    max_frames: int = setting(16, "with frames = all, at most this many, evenly spaced")
    max_pixels: int = setting(1_048_576, "largest model image (width x height); bigger frames are scaled down")
    profile: str = setting(
        "auto",
        "how the model is asked and read: auto (from its config.json or served name), apolo (our JSON), "
        "qwen2_5_vl, qwen3_vl, medmo or deepseek_vl2",
    )
    tiling: str = setting(
        "auto",
        "look at big frames in overlapping tiles plus the whole frame: off, auto (frames over 4 x max_pixels) "
        "or always (frames over max_pixels)",
    )
    max_tiles: int = setting(6, "most tiles per frame (the grid nearest the frame's aspect), besides the whole view")
    tile_overlap: float = setting(0.125, "fraction of a tile's side shared with its neighbour")
    wsi_level: int = setting(
        -1,
        "whole-slide images: the pyramid level whose tiles are read frame by frame (0 = full resolution); "
        "-1: the finest level with at most max_frames tiles",
    )


@dataclass(frozen=True)
class ReasoningSettings:
    """[reasoning]: the question-answering stage."""

    backend: str = setting("extractive", "extractive (offline), transformers or openai")
    model: str = setting("", "Hugging Face model id or local path, or the served model's name")
    url: str = setting("", "openai backend: the server's base URL, e.g. http://127.0.0.1:8000/v1")
    api_key: str = setting("", "openai backend: API key; set it as APOLO_REASONING__API_KEY, never in a file")
    timeout: float = setting(120.0, "openai backend: seconds to wait for one answer")
    retries: int = setting(3, "openai backend: retries of a failed request, with backoff")
    device: str = setting("auto", "transformers backend: cpu, cuda, cuda:N or auto")
    dtype: str = setting("auto", "transformers backend: auto, float32, bfloat16 or float16")
    max_new_tokens: int = setting(1024, "longest answer (trace included) a model may write, in tokens")
    evidence: int = setting(20, "at most this many findings retrieved as evidence for one question")
    semantic: bool = setting(True, "rank evidence by sentence embeddings too, when sentence-transformers is installed")
    embedding: str = setting(
        "auto",
        "sentence-embedding model of semantic search: auto (all-MiniLM-L6-v2 for questions in English, "
        "multilingual-e5-small for others), minilm or multilingual",
    )
    identifiers_in_questions: str = setting(
        "replace",
        "names, patient IDs, dates of birth, phone numbers, accession numbers typed in a question: replace "
        "(by placeholders, before it is stored, logged or sent) or refuse (the question is an error)",
    )


@dataclass(frozen=True)
class SendSettings:
    """[send]: results back to the PACS."""

    enabled: bool = setting(False, "send results back to the PACS (keeps an encrypted vault)")
    host: str = setting("127.0.0.1", "address of the destination PACS")
    port: int = setting(4242, "port of the destination PACS")
    ae_title: str = setting("PACS", "AE title of the destination PACS")
    calling_ae_title: str = setting("APOLO", "our AE title when we send")
    reports: bool = setting(True, "also send each study's TID 1500 SR back automatically")
    timeout: float = setting(30.0, "seconds to wait for the PACS on one association")
    retry_base: float = setting(5.0, "first retry after this many seconds; doubles each time")
    retry_max: float = setting(600.0, "longest wait between two retries, in seconds")
    tls_ca: str = setting(
        "", "PEM CA bundle the PACS's certificate must chain to; set, results go over TLS"
    )
    tls_cert: str = setting("", "PEM client certificate to present to the PACS over TLS (needs tls_ca)")
    tls_key: str = setting("", "PEM private key for tls_cert")


@dataclass(frozen=True)
class WebSettings:
    """[web]: the HTTP side of serve (status page, health, metrics, DICOMweb)."""

    enabled: bool = setting(True, "serve HTTP next to the SCP")
    host: str = setting(
        "127.0.0.1",
        "address to listen on; beyond loopback, token or tls_ca is required",
    )
    port: int = setting(8080, "TCP port to listen on")
    token: str = setting(
        "",
        "access token for everything but /healthz and /metrics (Bearer, or Basic with any user); "
        "give it by APOLO_WEB__TOKEN or token_file, never in a committed file",
    )
    token_file: str = setting("", "file holding the access token (used when token is empty)")
    tls_cert: str = setting("", "PEM certificate for HTTPS; empty serves plain HTTP")
    tls_key: str = setting("", "PEM private key for tls_cert")
    tls_ca: str = setting(
        "", "PEM CA bundle; when set, every client must present a certificate it signed"
    )
    max_connections: int = setting(
        100, "HTTP connections (and requests in flight) at once; more are answered 503"
    )
    stow_max_body: int = setting(
        8_589_934_592, "largest STOW-RS request body, in bytes (each part is also bound by [receive] max_instance_size)"
    )
    stow_max_parts: int = setting(10_000, "most instances (parts) in one STOW-RS request")


@dataclass(frozen=True)
class LogSettings:
    """[log]: structured logs, one JSON object per line, never a patient identifier."""

    level: str = setting("INFO", "DEBUG, INFO, WARNING or ERROR")
    file: str = setting("", "append logs to this file as well as standard error")


@dataclass(frozen=True)
class Config:
    """The whole configuration, one attribute per TOML table."""

    catalog: CatalogSettings = field(default_factory=CatalogSettings)
    spool: SpoolSettings = field(default_factory=SpoolSettings)
    receive: ReceiveSettings = field(default_factory=ReceiveSettings)
    deid: DeidSettings = field(default_factory=DeidSettings)
    worker: WorkerSettings = field(default_factory=WorkerSettings)
    vision: VisionSettings = field(default_factory=VisionSettings)
    reasoning: ReasoningSettings = field(default_factory=ReasoningSettings)
    send: SendSettings = field(default_factory=SendSettings)
    web: WebSettings = field(default_factory=WebSettings)
    log: LogSettings = field(default_factory=LogSettings)

    @property
    def spool_root(self) -> Path:
        return Path(self.spool.root).expanduser().resolve()

    @property
    def catalog_url(self) -> str:
        return self.catalog.url or f"sqlite:///{self.spool_root / 'catalog.sqlite'}"


def tables() -> dict[str, type]:
    """Table name to its settings class, in declaration order."""
    return {f.name: get_type_hints(Config)[f.name] for f in dataclasses.fields(Config)}


def _coerce(table: str, key: str, kind: Any, value: Any, from_env: bool) -> Any:
    where = f"[{table}] {key}"
    if from_env:
        if kind is bool:
            low = value.strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ConfigError(f"{where} must be true or false, got {value!r}")
        if kind is list:
            return [v.strip() for v in value.split(",") if v.strip()]
    if kind is bool:
        if isinstance(value, bool):
            return value
    elif kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if from_env:
            try:
                return float(value)
            except ValueError:
                pass
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if from_env:
            try:
                return int(value)
            except ValueError:
                pass
    elif kind is list:
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return list(value)
    elif kind is str:
        if isinstance(value, str):
            return value
    raise ConfigError(f"{where} must be {getattr(kind, '__name__', kind)}, got {value!r}")


def load(path: str | os.PathLike[str] | None = None, env: dict[str, str] | None = None) -> Config:
    """Read the TOML file (if it exists), apply ``APOLO_*`` overrides, validate, return Config.

    ``path`` None means ``$APOLO_CONFIG`` or else ``config/apolo.toml``; a path given explicitly
    must exist.
    """
    env = dict(os.environ if env is None else env)
    explicit = path is not None or "APOLO_CONFIG" in env
    cfg_path = Path(path if path is not None else env.get("APOLO_CONFIG", DEFAULT_CONFIG))
    raw: dict[str, Any] = {}
    if cfg_path.exists():
        try:
            raw = tomllib.loads(cfg_path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config file {cfg_path}: not valid TOML ({exc})") from None
    elif explicit:
        raise ConfigError(f"config file {cfg_path} does not exist")

    known = tables()
    values: dict[str, dict[str, Any]] = {name: {} for name in known}
    for table, body in raw.items():
        if table not in known:
            raise ConfigError(f"config file {cfg_path}: unknown table [{table}]; known: {', '.join(known)}")
        if not isinstance(body, dict):
            raise ConfigError(f"config file {cfg_path}: [{table}] must be a table")
        hints = get_type_hints(known[table])
        for key, value in body.items():
            if key not in hints:
                raise ConfigError(
                    f"config file {cfg_path}: unknown key [{table}] {key}; known: {', '.join(hints)}"
                )
            values[table][key] = _coerce(table, key, _base(hints[key]), value, from_env=False)

    for name, value in env.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name or name == "APOLO_CONFIG":
            continue
        table, _, key = name[len(ENV_PREFIX):].lower().partition("__")
        if table not in known or key not in get_type_hints(known[table]):
            raise ConfigError(f"environment variable {name} names no setting")
        kind = _base(get_type_hints(known[table])[key])
        values[table][key] = _coerce(table, key, kind, value, from_env=True)

    cfg = Config(**{name: known[name](**values[name]) for name in known})
    validate(cfg)
    return cfg


def _base(hint: Any) -> Any:
    origin = get_origin(hint)
    if origin is list:
        return list
    if origin is not None:
        return get_args(hint)[0]
    return hint


def validate(cfg: Config) -> None:
    """Check rules that span one value's type: ranges, choices, pairs that go together."""
    r = cfg.receive
    _check_listener("receive", r.port, r.tls_cert, r.tls_key)
    if not 0 < len(r.ae_title.strip()) <= 16:
        raise ConfigError(f"[receive] ae_title must be 1-16 characters, got {r.ae_title!r}")
    if r.stable_after <= 0:
        raise ConfigError(f"[receive] stable_after must be > 0 seconds, got {r.stable_after}")
    for key in ("artim_timeout", "request_timeout"):
        if getattr(r, key) <= 0:
            raise ConfigError(f"[receive] {key} must be > 0 seconds, got {getattr(r, key)}")
    for key in ("max_pending", "max_per_address", "max_instance_size", "max_depth"):
        if getattr(r, key) < 1:
            raise ConfigError(f"[receive] {key} must be >= 1, got {getattr(r, key)}")
    if cfg.deid.processes < 0:
        raise ConfigError(f"[deid] processes must be >= 0 (0: one per CPU core), got {cfg.deid.processes}")
    if cfg.deid.quarantine_days <= 0:
        raise ConfigError(f"[deid] quarantine_days must be > 0, got {cfg.deid.quarantine_days}")
    if cfg.deid.max_depth < 1 or cfg.deid.instance_timeout <= 0:
        raise ConfigError(
            f"[deid] max_depth must be >= 1 and instance_timeout > 0 seconds, "
            f"got {cfg.deid.max_depth}, {cfg.deid.instance_timeout}"
        )
    if r.max_associations < 1:
        raise ConfigError(f"[receive] max_associations must be >= 1, got {r.max_associations}")
    for net in r.allowed_addresses:
        try:
            ipaddress.ip_network(net, strict=False)
        except ValueError:
            raise ConfigError(
                f"[receive] allowed_addresses: {net!r} is not an address or network (CIDR)"
            ) from None
    for aet in r.allowed_aets:
        if not 0 < len(aet.strip()) <= 16:
            raise ConfigError(f"[receive] allowed_aets: {aet!r} is not a 1-16 character AE title")
    if cfg.log.level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError(f"[log] level must be DEBUG, INFO, WARNING or ERROR, got {cfg.log.level!r}")
    v = cfg.vision
    _check_model_backend("vision", v, VISION_BACKENDS)
    if v.frames not in ("first", "middle", "all"):
        raise ConfigError(f"[vision] frames must be first, middle or all, got {v.frames!r}")
    for key in ("batch_size", "max_frames"):
        if getattr(v, key) < 1:
            raise ConfigError(f"[vision] {key} must be >= 1, got {getattr(v, key)}")
    if v.max_pixels < 28 * 28 * 4:
        raise ConfigError(f"[vision] max_pixels must be >= 3136, got {v.max_pixels}")
    if v.profile not in VISION_PROFILES:
        raise ConfigError(f"[vision] profile must be one of {', '.join(VISION_PROFILES)}, got {v.profile!r}")
    if v.tiling not in TILINGS:
        raise ConfigError(f"[vision] tiling must be one of {', '.join(TILINGS)}, got {v.tiling!r}")
    if not 1 <= v.max_tiles <= 64 or not 0 <= v.tile_overlap <= 0.5:
        raise ConfigError(
            f"[vision] max_tiles must be 1-64 and tile_overlap 0-0.5, got {v.max_tiles} and {v.tile_overlap}"
        )
    if v.wsi_level < -1:
        raise ConfigError(f"[vision] wsi_level must be -1 (auto) or a level >= 0, got {v.wsi_level}")
    q = cfg.reasoning
    _check_model_backend("reasoning", q, REASONING_BACKENDS)
    if q.embedding not in EMBEDDINGS:
        raise ConfigError(f"[reasoning] embedding must be one of {', '.join(EMBEDDINGS)}, got {q.embedding!r}")
    if q.identifiers_in_questions not in IDENTIFIER_POLICIES:
        raise ConfigError(
            f"[reasoning] identifiers_in_questions must be one of {', '.join(IDENTIFIER_POLICIES)}, "
            f"got {q.identifiers_in_questions!r}"
        )
    if q.evidence < 1:
        raise ConfigError(f"[reasoning] evidence must be >= 1, got {q.evidence}")
    snd = cfg.send
    if not 0 < len(snd.calling_ae_title.strip()) <= 16 or not 0 < len(snd.ae_title.strip()) <= 16:
        raise ConfigError(f"[send] ae_title and calling_ae_title must be 1-16 characters, got {snd.ae_title!r}, {snd.calling_ae_title!r}")
    if snd.timeout <= 0 or snd.retry_base <= 0 or snd.retry_max < snd.retry_base:
        raise ConfigError("[send] timeout and retry_base must be > 0 seconds, retry_max >= retry_base")
    if not 0 < snd.port < 65536:
        raise ConfigError(f"[send] port must be 1-65535, got {snd.port}")
    if bool(snd.tls_cert) != bool(snd.tls_key):
        raise ConfigError("[send] tls_cert and tls_key go together: set both or neither")
    if snd.tls_cert and not snd.tls_ca:
        raise ConfigError("[send] tls_cert (a client certificate) needs tls_ca to verify the PACS")
    if cfg.worker.lease <= 0 or cfg.worker.poll_interval <= 0:
        raise ConfigError("[worker] lease and poll_interval must be > 0 seconds")
    w = cfg.web
    _check_listener("web", w.port, w.tls_cert, w.tls_key)
    if w.tls_ca and not w.tls_cert:
        raise ConfigError("[web] tls_ca (client certificates) needs tls_cert and tls_key (HTTPS)")
    if w.max_connections < 1:
        raise ConfigError(f"[web] max_connections must be >= 1, got {w.max_connections}")
    if w.stow_max_body < 1 or w.stow_max_parts < 1:
        raise ConfigError(
            f"[web] stow_max_body and stow_max_parts must be >= 1, got {w.stow_max_body}, {w.stow_max_parts}"
        )


def _check_listener(table: str, port: int, tls_cert: str, tls_key: str) -> None:
    """The rules every listening socket's table shares: a port, and a whole TLS pair or none."""
    if not 0 < port < 65536:
        raise ConfigError(f"[{table}] port must be 1-65535, got {port}")
    if bool(tls_cert) != bool(tls_key):
        raise ConfigError(f"[{table}] tls_cert and tls_key go together: set both or neither")


def _check_model_backend(table: str, m: VisionSettings | ReasoningSettings, backends: tuple[str, ...]) -> None:
    """The rules a model-backed stage's table shares: backend, model, url, dtype, limits."""
    if m.backend not in backends:
        raise ConfigError(f"[{table}] backend must be one of {', '.join(backends)}, got {m.backend!r}")
    if m.backend in ("transformers", "openai") and not m.model.strip():
        raise ConfigError(f"[{table}] model is required with backend = {m.backend!r} (a hub id, a local path or a served name)")
    if m.backend == "openai" and not m.url.startswith(("http://", "https://")):
        raise ConfigError(f"[{table}] url must be an http(s) base URL with backend = 'openai', got {m.url!r}")
    if m.dtype not in ("auto", "float32", "bfloat16", "float16"):
        raise ConfigError(f"[{table}] dtype must be auto, float32, bfloat16 or float16, got {m.dtype!r}")
    if m.max_new_tokens < 1:
        raise ConfigError(f"[{table}] max_new_tokens must be >= 1, got {m.max_new_tokens}")
    if m.timeout <= 0 or m.retries < 0:
        raise ConfigError(f"[{table}] timeout must be > 0 seconds and retries >= 0")


def replace(cfg: Config, **tables_: dict[str, Any]) -> Config:
    """A copy of cfg with some keys of some tables changed (for tests and commands)."""
    changes = {t: dataclasses.replace(getattr(cfg, t), **kv) for t, kv in tables_.items()}
    out = dataclasses.replace(cfg, **changes)
    validate(out)
    return out
