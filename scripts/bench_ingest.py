#!/usr/bin/env python
"""Ingest benchmark: one 500-slice CT study sent by dcmtk storescu, over one association and
over four at once (the study split in four, four storescu started together).

Receivers, in interleaved rounds (the order rotates each round):

- ``storescp``: dcmtk ``storescp -od DIR`` (writes files, no fsync);
- ``orthanc``: Orthanc with fresh storage each round (fsync, MD5, SQLite index);
- ``apolo``: ``apolo-node db upgrade`` then ``apolo-node serve`` on a fresh spool each round
  (the whole node: its own upper layer, the fsynced spool, the SQLite catalog, the workers),
  logging at ``--log-level`` (INFO by default, one line per instance, as the node runs).

dcmtk programs and Orthanc run with ``TCP_NODELAY=1`` (see /work/shared/notes/
dicom-network-facts.md). Each send is timed by the wall clock from the first storescu's start
to the last one's end, and after each send the files the receiver kept are counted: a receiver
that loses files gets no figure.

    python scripts/bench_ingest.py                      # all three, 1 and 4 senders, 5 rounds
    python scripts/bench_ingest.py --only storescp,orthanc --rounds 3 --senders 4
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import secrets
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pydicom import dcmread  # noqa: E402

from tests.peers import (  # noqa: E402
    LOCALHOST,
    ORTHANC,
    STORESCP,
    STORESCU,
    Orthanc,
    PeerError,
    Storescp,
    free_port,
    log_tail,
    port_open,
    start_storescu,
    stop_process,
    wait_until,
)
from tests.synthetic import write_study  # noqa: E402

RECEIVERS = ("storescp", "orthanc", "apolo")


@dataclass
class Receiver:
    """A started receiver: where storescu sends, and how to count what it kept."""

    port: int
    called_aet: str
    count: Callable[[], int]


# --------------------------------------------------------------------------------------------
# the study


def ensure_study(folder: Path, slices: int, size: int) -> list[Path]:
    """The cached synthetic CT study in ``folder``, written once (or again if it differs).

    The folder holds nothing but the study, so ``storescu +sd`` can send it as it is.
    """
    files = sorted(folder.glob("*.dcm"))
    if len(files) == slices and sorted(folder.iterdir()) == files:
        first = dcmread(files[0], stop_before_pixels=True)
        if (first.Rows, first.Columns) == (size, size):
            return files
    if folder.exists():
        shutil.rmtree(folder)
    print(f"writing a {slices}-slice {size}x{size} CT study to {folder} ...", flush=True)
    write_study(folder, series=1, per_series=slices, rows=size, columns=size)
    return sorted(folder.glob("*.dcm"))


def warm_page_cache(files: list[Path]) -> int:
    """Read every file once so no round pays for the disk; returns the bytes read."""
    total = 0
    for f in files:
        total += len(f.read_bytes())
    return total


# --------------------------------------------------------------------------------------------
# receivers


@contextlib.contextmanager
def run_storescp(workdir: Path) -> Iterator[Receiver]:
    folder = workdir / "received"
    with Storescp(folder, ae_title="STORESCP") as scp:
        yield Receiver(scp.port, "STORESCP", lambda: len(scp.files()))


@contextlib.contextmanager
def run_orthanc(workdir: Path) -> Iterator[Receiver]:
    with Orthanc(workdir) as server:
        yield Receiver(
            server.port,
            "ORTHANC",
            lambda: int(server.request("GET", "/statistics")["CountInstances"]),
        )


def apolo_executable() -> str:
    beside = Path(sys.executable).parent / "apolo-node"
    found = str(beside) if beside.exists() else shutil.which("apolo-node")
    if not found:
        raise PeerError("apolo-node is not installed in this environment: pip install -e .")
    return found


@contextlib.contextmanager
def run_apolo(workdir: Path, logs: Path, log_level: str) -> Iterator[Receiver]:
    spool = workdir / "spool"
    port = free_port()
    env = dict(os.environ)
    env.update(
        {
            "APOLO_CONFIG": str(REPO / "config" / "apolo.toml"),
            "APOLO_SPOOL__ROOT": str(spool),
            "APOLO_RECEIVE__PORT": str(port),
            "APOLO_RECEIVE__AE_TITLE": "APOLO",
            "APOLO_DEID__KEY": secrets.token_hex(16),
            "APOLO_LOG__LEVEL": log_level,
        }
    )
    exe = apolo_executable()
    log = logs / f"apolo-{workdir.parent.name}.log"
    with open(log, "ab") as out:
        upgrade = subprocess.run(
            [exe, "db", "upgrade"], env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, timeout=120
        )
    if upgrade.returncode != 0:
        raise PeerError(f"apolo-node db upgrade exited with status {upgrade.returncode}; log {log}:\n{log_tail(log)}")
    with open(log, "ab") as out:
        proc = subprocess.Popen([exe, "serve"], env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_until(
            lambda: port_open(port),
            what=f"apolo-node serve on {LOCALHOST}:{port}",
            timeout=60,
            proc=proc,
            log=log,
        )
        yield Receiver(port, "APOLO", lambda: sum(1 for _ in (spool / "incoming").rglob("*.dcm")))
    finally:
        status = stop_process(proc, sig=signal.SIGTERM, timeout=60)
        if status not in (0, -signal.SIGTERM):
            print(f"  note: apolo-node serve exited with status {status} after SIGTERM; log {log}", flush=True)


# --------------------------------------------------------------------------------------------
# the run


def send_once(
    name: str, files: list[Path], workdir: Path, logs: Path, log_level: str = "INFO", senders: int = 1
) -> tuple[float | None, int, str]:
    """Start receiver ``name``, send the study over ``senders`` associations at once, count what
    it kept: (seconds, files kept, note)."""
    starters = {
        "storescp": lambda: run_storescp(workdir),
        "orthanc": lambda: run_orthanc(workdir),
        "apolo": lambda: run_apolo(workdir, logs, log_level),
    }
    try:
        with starters[name]() as receiver:
            start = time.perf_counter()
            procs = [
                start_storescu(
                    files[i::senders], receiver.port, called_aet=receiver.called_aet,
                    calling_aet=f"BENCH{i}",
                )
                for i in range(senders)
            ]
            outputs = [p.communicate(timeout=900)[0] for p in procs]
            seconds = time.perf_counter() - start
            kept = receiver.count()
    except PeerError as exc:
        return None, 0, f"error: {str(exc).splitlines()[0]}"
    for proc, out in zip(procs, outputs):
        if proc.returncode != 0:
            tail = " | ".join((out or "").splitlines()[-3:])
            return None, kept, f"storescu exited with status {proc.returncode}: {tail}"
    if kept != len(files):
        return None, kept, f"LOST FILES: sent {len(files)}, kept {kept}"
    return seconds, kept, ""


def tool_version(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout
    except OSError:
        return "not installed"
    return out.strip().splitlines()[0] if out.strip() else "?"


def print_header(args: argparse.Namespace, receivers: list[str]) -> None:
    print("command:", shlex.join([sys.executable, *sys.argv]))
    print(f"machine: nproc {os.cpu_count()}, {platform.platform()}, python {platform.python_version()}")
    print(f"storescu: {tool_version([str(STORESCU), '--version'])}")
    if "storescp" in receivers:
        print(f"storescp: {tool_version([str(STORESCP), '--version'])}")
    if "orthanc" in receivers:
        print(f"orthanc: {tool_version([str(ORTHANC), '--version'])}")
    if "apolo" in receivers:
        print(f"apolo-node: {apolo_executable()}")
    print(f"TCP_NODELAY=1 for dcmtk and Orthanc; rounds {args.rounds}; receivers {', '.join(receivers)}")
    if "apolo" in receivers:
        print(f"apolo-node log level: {args.log_level}")


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def fmt(value: float | None, spec: str = ",.0f") -> str:
    return "FAIL" if value is None else format(value, spec)


def print_table(
    rates: dict[str, list[float | None]], receivers: list[str], rounds: int, senders: int
) -> None:
    """img/s per round and receiver, with apolo's ratios to the peers measured in the same round."""
    print()
    print(f"img/s per round (wall clock, {senders} storescu at once)")
    header = f"{'round':>5} " + " ".join(f"{r:>9}" for r in receivers)
    ratios = [("apolo", "orthanc"), ("apolo", "storescp")]
    ratios = [(a, b) for a, b in ratios if a in receivers and b in receivers]
    header += "".join(f" {a + '/' + b:>15}" for a, b in ratios)
    print(header)
    ratio_values: dict[tuple[str, str], list[float]] = {pair: [] for pair in ratios}
    for i in range(rounds):
        row = f"{i + 1:>5} " + " ".join(f"{fmt(rates[r][i]):>9}" for r in receivers)
        for a, b in ratios:
            x, y = rates[a][i], rates[b][i]
            value = x / y if x and y else None
            if value is not None:
                ratio_values[(a, b)].append(value)
            row += f" {fmt(value, '.3f'):>15}"
        print(row)
    row = f"{'median':>5} " + " ".join(
        f"{fmt(median([v for v in rates[r] if v is not None])):>9}" for r in receivers
    )
    row += "".join(f" {fmt(median(ratio_values[p]), '.3f'):>15}" for p in ratios)
    print(row)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("/tmp/apolo-bench-ct"), help="cached study folder")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--only", default=",".join(RECEIVERS), help="comma list of " + ",".join(RECEIVERS))
    parser.add_argument("--slices", type=int, default=500, help="instances in the study (default 500)")
    parser.add_argument("--size", type=int, default=512, help="rows and columns (default 512)")
    parser.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING"],
        help="apolo-node's [log] level (default INFO, the node's own default: one line per instance)",
    )
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temp dir)")
    parser.add_argument(
        "--senders", default="1,4", help="comma list of storescu counts sent at once (default 1,4)"
    )
    args = parser.parse_args(argv)

    receivers = [r.strip() for r in args.only.split(",") if r.strip()]
    unknown = [r for r in receivers if r not in RECEIVERS]
    if unknown or not receivers:
        parser.error(f"--only {args.only!r}: unknown receiver(s) {unknown}; choose from {', '.join(RECEIVERS)}")
    if args.rounds < 1:
        parser.error(f"--rounds {args.rounds}: must be at least 1")
    try:
        counts = [int(n) for n in args.senders.split(",") if n.strip()]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        parser.error(f"--senders {args.senders!r}: give counts of 1 or more, e.g. 1,4")

    print_header(args, receivers)
    files = ensure_study(args.data, args.slices, args.size)
    size = warm_page_cache(files)
    print(f"study: {len(files)} files, {size / 1e6:,.0f} MB in {args.data}")
    print()

    work = args.work or Path(tempfile.mkdtemp(prefix="apolo-bench-"))
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    rates: dict[int, dict[str, list[float | None]]] = {n: {r: [] for r in receivers} for n in counts}
    notes: list[str] = []
    kept_apolo: list[int] = []
    try:
        for rnd in range(1, args.rounds + 1):
            shift = (rnd - 1) % len(receivers)
            order = receivers[shift:] + receivers[:shift]
            for senders in counts:
                for name in order:
                    workdir = work / f"round{rnd}" / f"{name}-{senders}"
                    seconds, kept, note = send_once(name, files, workdir, logs, args.log_level, senders)
                    rate = len(files) / seconds if seconds else None
                    rates[senders][name].append(rate)
                    if name == "apolo":
                        kept_apolo.append(kept)
                    extra = f"  ({note})" if note else ""
                    print(
                        f"round {rnd}: {name:<8} x{senders} {fmt(rate):>7} img/s, {kept} kept{extra}",
                        flush=True,
                    )
                    if note:
                        notes.append(f"round {rnd} {name} x{senders}: {note}")
                    shutil.rmtree(workdir, ignore_errors=True)
    finally:
        if args.work is None:
            keep = any("error" in n or "status" in n for n in notes)
            if not keep:
                shutil.rmtree(work, ignore_errors=True)
            else:
                print(f"logs kept in {logs}")

    for senders in counts:
        print_table(rates[senders], receivers, args.rounds, senders)
    if kept_apolo:
        print(f"apolo files kept per round: {kept_apolo} (expected {len(files)} each)")
    if notes:
        print("\nproblems:")
        for n in notes:
            print(f"  {n}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
