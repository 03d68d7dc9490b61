"""Real DICOM and SQL peers for tests: dcmtk storescu/storescp, Orthanc and PostgreSQL.

Each peer runs as a subprocess on free ports on 127.0.0.1, with ``TCP_NODELAY=1`` in its
environment (dcmtk's network layer, which Orthanc shares, otherwise waits on Nagle's algorithm for
about 40 ms per C-STORE response). Starting waits until the peer answers, within a deadline, and
fails with the tail of the peer's log; stopping terminates, waits, and kills on timeout. The
classes are context managers, so a failing test still stops its peers.

dcmtk programs are called by absolute path: pynetdicom installs console scripts with the same
names (``storescu``, ``storescp``) that would shadow them on PATH.
"""

from __future__ import annotations

import glob
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

STORESCU = Path("/usr/bin/storescu")
STORESCP = Path("/usr/bin/storescp")
ECHOSCU = Path("/usr/bin/echoscu")
ORTHANC = Path("/usr/sbin/Orthanc")
LOCALHOST = "127.0.0.1"

#: Debian packages that provide each peer, for error and skip messages.
PACKAGES = {
    "dcmtk": "dcmtk",
    "orthanc": "orthanc",
    "postgresql": "postgresql (Debian/Ubuntu; binaries under /usr/lib/postgresql/<major>/bin)",
}


class PeerError(RuntimeError):
    """A peer failed to start, answer or stop as expected."""


# ---------------------------------------------------------------------------------------------
# helpers


LISTEN_PORTS = (20000, 32767)  # below Linux's ephemeral range (32768-60999 by default)
_handed_out: set[int] = set()  # never the same port twice in one run, so two servers never meet


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def free_port(host: str = LOCALHOST) -> int:
    """A TCP port that nothing holds on any address right now, outside the kernel's ephemeral
    range: a port from that range may be taken, between this call and the server's bind, as the
    local port of some outgoing connection (Orthanc, which binds every address, then failed with
    "port already in use" after the suite's thousands of short connections)."""
    low, high = _ephemeral_range()
    candidates = [p for p in range(*LISTEN_PORTS) if not low <= p <= high and p not in _handed_out]
    for port in random.sample(candidates, min(200, len(candidates))):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("", port))  # the wildcard: free on every address, host included
            except OSError:
                continue
            _handed_out.add(port)
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:  # all busy: let the kernel pick
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def peer_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a peer process: ours, plus ``TCP_NODELAY=1`` and ``extra``."""
    env = dict(os.environ)
    env["TCP_NODELAY"] = "1"
    if extra:
        env.update(extra)
    return env


def log_tail(path: Path | None, lines: int = 30) -> str:
    """The last ``lines`` lines of a log file, or a note that there is none."""
    if path is None or not path.exists():
        return "(no log)"
    text = path.read_text(errors="replace").splitlines()
    return "\n".join(text[-lines:]) or "(log is empty)"


def port_open(port: int, host: str = LOCALHOST, timeout: float = 0.2) -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_until(
    ready: Any,
    *,
    what: str,
    timeout: float,
    proc: subprocess.Popen[Any] | None = None,
    log: Path | None = None,
    interval: float = 0.05,
) -> None:
    """Poll ``ready()`` until it is true; raise PeerError (with the log tail) on timeout or exit."""
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            raise PeerError(
                f"{what} exited with status {proc.returncode} before it was ready; "
                f"log {log}:\n{log_tail(log)}"
            )
        if ready():
            return
        if time.monotonic() > deadline:
            raise PeerError(f"{what} was not ready within {timeout:.0f} s; log {log}:\n{log_tail(log)}")
        time.sleep(interval)


def stop_process(
    proc: subprocess.Popen[Any] | None, *, sig: int = signal.SIGTERM, timeout: float = 10.0
) -> int | None:
    """Send ``sig``, wait up to ``timeout`` seconds, then kill. Returns the exit status."""
    if proc is None:
        return None
    if proc.poll() is None:
        try:
            proc.send_signal(sig)
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout)
        except ProcessLookupError:
            pass
    return proc.wait()


def dcmtk_available() -> bool:
    """Whether dcmtk's storescu, storescp and echoscu are installed at their Debian paths."""
    return all(p.is_file() and os.access(p, os.X_OK) for p in (STORESCU, STORESCP, ECHOSCU))


def orthanc_available() -> bool:
    """Whether the Orthanc server is installed at its Debian path."""
    return ORTHANC.is_file() and os.access(ORTHANC, os.X_OK)


def postgres_bin_dir() -> Path | None:
    """The newest ``/usr/lib/postgresql/<major>/bin`` holding initdb and postgres, or None."""
    found = []
    for initdb in glob.glob("/usr/lib/postgresql/*/bin/initdb"):
        bin_dir = Path(initdb).parent
        if (bin_dir / "postgres").is_file() and (bin_dir / "pg_isready").is_file():
            try:
                major = int(bin_dir.parent.name)
            except ValueError:
                continue
            found.append((major, bin_dir))
    return max(found)[1] if found else None


# ---------------------------------------------------------------------------------------------
# dcmtk storescu


def storescu_command(
    files_or_dir: Path | str | Iterable[Path | str],
    port: int,
    *,
    host: str = LOCALHOST,
    calling_aet: str = "STORESCU",
    called_aet: str = "APOLO",
    extra_args: Sequence[str] = (),
    dimse_timeout: int = 60,
) -> list[str]:
    """The argv of a dcmtk storescu that sends everything over one association.

    ``-R`` proposes only the presentation contexts the files need, so any number of files of a
    few SOP classes fit in one association; ``+sd +r`` scans folders recursively.
    """
    if isinstance(files_or_dir, (str, Path)):
        paths = [Path(files_or_dir)]
    else:
        paths = [Path(p) for p in files_or_dir]
    if not paths:
        raise ValueError("files_or_dir is empty: give at least one file or folder to send")
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise FileNotFoundError(f"files_or_dir: these paths do not exist: {missing[:5]}")
    argv = [str(STORESCU), "-aet", calling_aet, "-aec", called_aet, "-R"]
    argv += ["-to", "10", "-ta", "30", "-td", str(dimse_timeout)]
    if any(p.is_dir() for p in paths):
        argv += ["+sd", "+r"]
    argv += list(extra_args)
    argv += [host, str(port)]
    argv += [str(p) for p in paths]
    return argv


def storescu(
    files_or_dir: Path | str | Iterable[Path | str],
    port: int,
    *,
    host: str = LOCALHOST,
    calling_aet: str = "STORESCU",
    called_aet: str = "APOLO",
    extra_args: Sequence[str] = (),
    dimse_timeout: int = 60,
    timeout: float = 300.0,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Send files or folders with dcmtk storescu over one association and wait for it.

    With ``check`` a non-zero exit raises PeerError with storescu's output; without it the
    caller reads ``returncode`` and ``stdout`` (stderr is merged into stdout).
    """
    argv = storescu_command(
        files_or_dir,
        port,
        host=host,
        calling_aet=calling_aet,
        called_aet=called_aet,
        extra_args=extra_args,
        dimse_timeout=dimse_timeout,
    )
    try:
        done = subprocess.run(
            argv,
            env=peer_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else exc.stdout
        raise PeerError(f"storescu to {host}:{port} ran past {timeout} s; output:\n{out}") from exc
    if check and done.returncode != 0:
        tail = "\n".join(done.stdout.splitlines()[-30:])
        raise PeerError(
            f"storescu to {called_aet}@{host}:{port} exited with status {done.returncode}; "
            f"command {' '.join(argv)}; output:\n{tail}"
        )
    return done


def start_storescu(
    files_or_dir: Path | str | Iterable[Path | str],
    port: int,
    *,
    host: str = LOCALHOST,
    calling_aet: str = "STORESCU",
    called_aet: str = "APOLO",
    extra_args: Sequence[str] = (),
    dimse_timeout: int = 60,
) -> subprocess.Popen[str]:
    """Start storescu without waiting (for tests that kill the receiver mid-send).

    The caller owns the process: ``communicate(timeout=...)`` it, or ``stop_process`` it.
    """
    argv = storescu_command(
        files_or_dir,
        port,
        host=host,
        calling_aet=calling_aet,
        called_aet=called_aet,
        extra_args=extra_args,
        dimse_timeout=dimse_timeout,
    )
    return subprocess.Popen(
        argv, env=peer_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def echoscu(
    port: int, *, host: str = LOCALHOST, calling_aet: str = "ECHOSCU", called_aet: str = "APOLO"
) -> subprocess.CompletedProcess[str]:
    """One C-ECHO with dcmtk echoscu; returncode 0 means the peer answered Success."""
    argv = [str(ECHOSCU), "-aet", calling_aet, "-aec", called_aet, "-to", "10", host, str(port)]
    return subprocess.run(
        argv, env=peer_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=60
    )


# ---------------------------------------------------------------------------------------------
# dcmtk storescp


class Storescp:
    """A dcmtk storescp writing what it receives to ``folder`` (or, with ``ignore``, nothing).

    storescp listens on every address; talk to it on 127.0.0.1. Use as a context manager, or
    call ``start()`` and ``stop()``.
    """

    def __init__(
        self,
        folder: Path | str,
        *,
        ignore: bool = False,
        ae_title: str = "STORESCP",
        port: int | None = None,
        extra_args: Sequence[str] = (),
        start_timeout: float = 10.0,
    ) -> None:
        self.folder = Path(folder)
        self.ignore = ignore
        self.ae_title = ae_title
        self.port = port or free_port()
        self.extra_args = tuple(extra_args)
        self.start_timeout = start_timeout
        self.log = self.folder.parent / f"storescp-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        argv = [str(STORESCP), "-aet", self.ae_title, "-dhl", "+xa"]
        argv += ["--ignore"] if self.ignore else ["-od", str(self.folder)]
        argv += [*self.extra_args, str(self.port)]
        return argv

    def start(self) -> Storescp:
        if self.proc is not None:
            raise PeerError(f"storescp on port {self.port} is already started")
        if port_open(self.port):
            raise PeerError(f"port {self.port} on {LOCALHOST} is already in use: storescp cannot listen")
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                self.command(), env=peer_env(), stdout=log, stderr=subprocess.STDOUT
            )
        try:
            wait_until(
                lambda: port_open(self.port),
                what=f"storescp on {LOCALHOST}:{self.port}",
                timeout=self.start_timeout,
                proc=self.proc,
                log=self.log,
            )
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        stop_process(self.proc)

    def files(self) -> list[Path]:
        """The files received so far (storescp names them <modality>.<SOP Instance UID>)."""
        return sorted(p for p in self.folder.rglob("*") if p.is_file())

    def __enter__(self) -> Storescp:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ---------------------------------------------------------------------------------------------
# Orthanc


class Orthanc:
    """An Orthanc server with its storage and index in ``workdir``, driven over its REST API.

    Orthanc 1.10 has no option to bind one address: it listens on every address, so the
    configuration sets ``RemoteAccessAllowed`` false (HTTP answers 127.0.0.1 only) and tests
    talk to it on 127.0.0.1. ``modalities`` maps a name to ``(AE title, host, port)``.
    """

    def __init__(
        self,
        workdir: Path | str,
        modalities: Mapping[str, tuple[str, str, int]] | None = None,
        *,
        aet: str = "ORTHANC",
        config: Mapping[str, Any] | None = None,
        start_timeout: float = 30.0,
    ) -> None:
        self.workdir = Path(workdir)
        self.modalities = dict(modalities or {})
        self.aet = aet
        self.http_port = free_port()
        self.dicom_port = free_port()
        while self.dicom_port == self.http_port:
            self.dicom_port = free_port()
        self.extra_config = dict(config or {})
        self.start_timeout = start_timeout
        self.config_path = self.workdir / "orthanc.json"
        self.log = self.workdir / "orthanc.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def port(self) -> int:
        """The DICOM port (what storescu sends to)."""
        return self.dicom_port

    @property
    def url(self) -> str:
        return f"http://{LOCALHOST}:{self.http_port}"

    def configuration(self) -> dict[str, Any]:
        config: dict[str, Any] = {
            "Name": f"apolo-test-{self.dicom_port}",
            "StorageDirectory": str(self.workdir / "storage"),
            "IndexDirectory": str(self.workdir / "index"),
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": self.aet,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomModalities": {
                name: [aet, host, port] for name, (aet, host, port) in self.modalities.items()
            },
            "DicomModalitiesInDatabase": False,
            "DicomScuTimeout": 30,
            "Plugins": [],
            "SaveJobs": False,
        }
        config.update(self.extra_config)
        return config

    def start(self) -> Orthanc:
        if self.proc is not None:
            raise PeerError(f"Orthanc on port {self.http_port} is already started")
        busy = [p for p in (self.http_port, self.dicom_port) if port_open(p)]
        if busy:
            raise PeerError(f"ports {busy} on {LOCALHOST} are already in use: Orthanc cannot listen")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(json.dumps(self.configuration(), indent=2))
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [str(ORTHANC), str(self.config_path)],
                env=peer_env(),
                cwd=self.workdir,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            wait_until(
                lambda: self._answers() and port_open(self.dicom_port),
                what=f"Orthanc (HTTP {LOCALHOST}:{self.http_port}, DICOM {self.dicom_port})",
                timeout=self.start_timeout,
                proc=self.proc,
                log=self.log,
            )
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        stop_process(self.proc, timeout=20.0)

    def __enter__(self) -> Orthanc:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # REST ------------------------------------------------------------------------------------

    def _answers(self) -> bool:
        try:
            self.request("GET", "/system", timeout=1.0)
            return True
        except (OSError, PeerError):
            return False

    def request(
        self,
        method: str,
        path: str,
        body: bytes | str | Mapping[str, Any] | list[Any] | None = None,
        *,
        content_type: str = "application/json",
        timeout: float = 120.0,
    ) -> Any:
        """One REST call; returns the decoded JSON answer (or text, or None when empty)."""
        if isinstance(body, (Mapping, list)):
            data: bytes | None = json.dumps(body).encode()
        elif isinstance(body, str):
            data = body.encode()
        else:
            data = body
        req = urllib.request.Request(self.url + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")
            raise PeerError(f"Orthanc {method} {path} answered {exc.code}: {detail}") from exc
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            return raw.decode(errors="replace")

    def system(self) -> dict[str, Any]:
        return self.request("GET", "/system")

    def upload(self, path: Path | str) -> list[dict[str, Any]]:
        """POST each file (or each file under a folder) to /instances; returns Orthanc's answers."""
        path = Path(path)
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        answers = []
        for f in files:
            answers.append(
                self.request("POST", "/instances", f.read_bytes(), content_type="application/dicom")
            )
        return answers

    def studies(self) -> list[str]:
        """Orthanc's study ids."""
        return self.request("GET", "/studies")

    def study(self, orthanc_study_id: str) -> dict[str, Any]:
        return self.request("GET", f"/studies/{orthanc_study_id}")

    def find_study_by_uid(self, study_uid: str) -> str | None:
        """Orthanc's id of the study with this Study Instance UID, or None."""
        found = self.request("POST", "/tools/lookup", study_uid)
        for item in found or []:
            if item.get("Type") == "Study":
                return str(item["ID"])
        return None

    def instances_of_study(self, study: str) -> list[dict[str, Any]]:
        """The instances of a study, given Orthanc's id or the Study Instance UID."""
        study_id = study if study in self.studies() else self.find_study_by_uid(study)
        if study_id is None:
            raise PeerError(f"study {study!r} is not in Orthanc at {self.url}")
        return self.request("GET", f"/studies/{study_id}/instances")

    def sop_instance_uids(self, study: str) -> set[str]:
        """The SOP Instance UIDs Orthanc holds for a study (Orthanc id or Study Instance UID)."""
        return {i["MainDicomTags"]["SOPInstanceUID"] for i in self.instances_of_study(study)}

    def add_modality(self, name: str, aet: str, host: str, port: int) -> None:
        """Declare (or replace) a DICOM modality at run time, in memory (PUT /modalities/name)."""
        self.request("PUT", f"/modalities/{name}", {"AET": aet, "Host": host, "Port": port})
        self.modalities[name] = (aet, host, port)

    def echo(self, modality: str = "APOLO") -> bool:
        """C-ECHO from Orthanc to a configured modality; True when it answered."""
        try:
            self.request("POST", f"/modalities/{modality}/echo", {}, timeout=60)
            return True
        except PeerError:
            return False

    def send_study(self, orthanc_study_id: str, modality: str = "APOLO") -> dict[str, Any]:
        """C-STORE a study to a configured modality, synchronously; returns Orthanc's job answer."""
        return self.request(
            "POST",
            f"/modalities/{modality}/store",
            {"Resources": [orthanc_study_id], "Synchronous": True},
            timeout=600,
        )


# ---------------------------------------------------------------------------------------------
# PostgreSQL


class PostgresCluster:
    """A throwaway PostgreSQL cluster on a free port of 127.0.0.1, socket in its own folder.

    PostgreSQL refuses to run as root. When we are root, initdb and postgres run as the
    ``postgres`` user (made by the Debian package) through ``subprocess.Popen(user=, group=)``
    — the same as ``runuser -u postgres -- initdb ...`` — and the cluster folder is handed to
    that user. The folder must then be reachable by it: leave ``workdir`` None to get a fresh
    folder under the system temporary directory (pytest's tmp_path, mode 0700 as root, is not).
    Authentication is ``trust``, ``fsync`` is off: for tests only.
    """

    def __init__(
        self,
        workdir: Path | str | None = None,
        *,
        database: str = "apolo_test",
        user: str = "postgres",
        bin_dir: Path | str | None = None,
        start_timeout: float = 60.0,
    ) -> None:
        found = Path(bin_dir) if bin_dir else postgres_bin_dir()
        if found is None:
            raise PeerError(
                "PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin; "
                f"install {PACKAGES['postgresql']}"
            )
        self.bin_dir = found
        self._owns_workdir = workdir is None
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="apolo-pg-"))
        self.data_dir = self.workdir / "data"
        self.socket_dir = self.workdir / "socket"
        self.log = self.workdir / "postgres.log"
        self.database = database
        self.user = user
        self.port = free_port()
        self.start_timeout = start_timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self._run_as: dict[str, Any] = {}
        if os.geteuid() == 0:
            self._run_as = {"user": "postgres", "group": "postgres", "extra_groups": []}

    @property
    def url(self) -> str:
        """SQLAlchemy URL (psycopg 3 driver) of the test database."""
        return f"postgresql+psycopg://{self.user}@{LOCALHOST}:{self.port}/{self.database}"

    def _run(self, argv: list[str], what: str) -> None:
        done = subprocess.run(
            argv,
            cwd=self.workdir,
            env=peer_env({"LC_ALL": "C"}),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=120,
            **self._run_as,
        )
        if done.returncode != 0:
            raise PeerError(f"{what} failed with status {done.returncode}: {' '.join(argv)}\n{done.stdout}")

    def _prepare_workdir(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(exist_ok=True)
        if self._run_as:
            import pwd

            pw = pwd.getpwnam("postgres")
            for path in (self.workdir, self.socket_dir):
                os.chown(path, pw.pw_uid, pw.pw_gid)
            reach = subprocess.run(["test", "-w", str(self.workdir)], **self._run_as)
            if reach.returncode != 0:
                raise PeerError(
                    f"workdir {self.workdir} is not writable by the postgres user (a parent folder "
                    "is closed to it); leave workdir None to use a fresh folder under the system "
                    "temporary directory"
                )

    def start(self) -> PostgresCluster:
        if self.proc is not None:
            raise PeerError(f"PostgreSQL on port {self.port} is already started")
        self._prepare_workdir()
        self._run(
            [
                str(self.bin_dir / "initdb"),
                "-D", str(self.data_dir),
                "-U", self.user,
                "-A", "trust",
                "-E", "UTF8",
                "--locale=C",
                "--no-sync",
            ],
            "initdb",
        )  # fmt: skip
        argv = [
            str(self.bin_dir / "postgres"),
            "-D", str(self.data_dir),
            "-p", str(self.port),
            "-c", f"listen_addresses={LOCALHOST}",
            "-c", f"unix_socket_directories={self.socket_dir}",
            "-c", "fsync=off",
            "-c", "synchronous_commit=off",
            "-c", "full_page_writes=off",
            "-c", "max_connections=100",
        ]  # fmt: skip
        log = open(self.log, "wb")
        try:
            self.proc = subprocess.Popen(
                argv,
                cwd=self.workdir,
                env=peer_env({"LC_ALL": "C"}),
                stdout=log,
                stderr=subprocess.STDOUT,
                **self._run_as,
            )
        finally:
            log.close()
        try:
            wait_until(
                self._ready,
                what=f"PostgreSQL on {LOCALHOST}:{self.port}",
                timeout=self.start_timeout,
                proc=self.proc,
                log=self.log,
                interval=0.1,
            )
            self._run(
                [
                    str(self.bin_dir / "createdb"),
                    "-h", LOCALHOST, "-p", str(self.port), "-U", self.user, self.database,
                ],
                "createdb",
            )  # fmt: skip
        except BaseException:
            self.stop()
            raise
        return self

    def _ready(self) -> bool:
        done = subprocess.run(
            [str(self.bin_dir / "pg_isready"), "-q", "-h", LOCALHOST, "-p", str(self.port)],
            env=peer_env(),
        )
        return done.returncode == 0

    def stop(self) -> None:
        """Fast shutdown (SIGINT: roll back open sessions), then remove a folder we made."""
        stop_process(self.proc, sig=signal.SIGINT, timeout=30.0)
        if self._owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> PostgresCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
