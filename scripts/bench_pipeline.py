#!/usr/bin/env python
"""Pipeline throughput: studies per hour through one process (``apolo-node serve`` alone) and
through ``serve`` plus ``apolo-node worker`` processes, on one PostgreSQL catalog.

Each round makes a fresh database and spool, starts the processes, waits until each worker
says it is ready, then sends ``--studies`` small CT studies with one dcmtk ``storescu`` and
times from the send's start until every study is ``reported`` (received, stable, de-identified,
described). The two set-ups alternate round by round; the medians and their ratio are printed.
Run by hand (not in CI); it is bounded by ``--timeout`` per round.

    python scripts/bench_pipeline.py                                   # 20 studies, 3 rounds
    python scripts/bench_pipeline.py --studies 40 --workers deidentify=2,describe=2 --rounds 5

Every process works with the same settings; ``[deid] processes`` is 1 (``--deid-processes``),
so adding a worker process adds one cleaning process, as adding a machine would.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from apolo_node.catalog.engine import engine_for  # noqa: E402
from apolo_node.config import Config  # noqa: E402
from tests.conftest import fresh_postgres_database, make_config  # noqa: E402
from tests.fleet import WorkerProcess, statuses  # noqa: E402
from tests.nodes import ServeProcess  # noqa: E402
from tests.peers import PostgresCluster, stop_process, storescu, wait_until  # noqa: E402
from tests.synthetic import write_study  # noqa: E402


def parse_workers(text: str) -> list[str]:
    """``deidentify=2,describe=1`` -> one stage name per worker process."""
    stages: list[str] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        stage, _, count = part.partition("=")
        stages += [stage] * int(count or 1)
    return stages


def one_round(
    work: Path, admin_url: str, files: list[Path], n_studies: int, stages: list[str],
    deid_processes: int, timeout: float,
) -> float:
    """Seconds from the send's start until every study is reported."""
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    cfg: Config = make_config(
        work,
        catalog={"url": fresh_postgres_database(admin_url)},
        receive={"stable_after": 0.5},
        worker={"poll_interval": 0.2},
        deid={"processes": deid_processes},
        web={"enabled": False},
    )
    engine = engine_for(cfg)
    with ServeProcess(cfg, work / "serve.log"):
        fleet = [WorkerProcess(cfg, s, work / f"worker{i}.log") for i, s in enumerate(stages)]
        try:
            wait_until(lambda: all(w.started() for w in fleet), what="the workers", timeout=120)
            started = time.monotonic()
            storescu(files, cfg.receive.port)
            wait_until(
                lambda: statuses(engine) == ["reported"] * n_studies,
                what="every study reported", timeout=timeout, interval=0.1,
            )
            elapsed = time.monotonic() - started
        finally:
            for w in fleet:
                stop_process(w.proc)
    engine.dispose()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=20)
    parser.add_argument("--instances", type=int, default=4, help="instances per study (one series)")
    parser.add_argument("--size", type=int, default=128, help="rows and columns")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", default="deidentify=2,describe=1", help="worker processes beside serve")
    parser.add_argument("--deid-processes", type=int, default=1, help="[deid] processes of every process")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per round at most")
    args = parser.parse_args()
    stages = parse_workers(args.workers)
    scratch = Path(tempfile.mkdtemp(prefix="apolo-bench-pipeline-"))
    files = [
        f for i in range(args.studies)
        for f in write_study(scratch / "in" / str(i), series=1, per_series=args.instances,
                             rows=args.size, columns=args.size).files
    ]
    setups = {"serve alone": [], f"serve + {args.workers}": []}  # type: dict[str, list[float]]
    print(f"# {args.studies} studies x {args.instances} instances ({args.size}x{args.size}), "
          f"{args.rounds} rounds, {os.cpu_count()} CPUs, [deid] processes={args.deid_processes}")
    try:
        with PostgresCluster() as cluster:
            for r in range(args.rounds):
                order = list(setups) if r % 2 == 0 else list(reversed(setups))
                for name in order:
                    workers = [] if name == "serve alone" else stages
                    seconds = one_round(
                        scratch / "round", cluster.url, files, args.studies, workers,
                        args.deid_processes, args.timeout,
                    )
                    setups[name].append(seconds)
                    print(f"round {r + 1} {name:<40} {seconds:7.1f} s  {3600 * args.studies / seconds:9.0f} studies/h",
                          flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    rates = {name: 3600 * args.studies / statistics.median(s) for name, s in setups.items()}
    for name, rate in rates.items():
        print(f"median {name:<40} {rate:9.0f} studies/h")
    one, fleet = rates.values()
    print(f"ratio (serve + workers) / (serve alone): {fleet / one:.2f}")


if __name__ == "__main__":
    main()
