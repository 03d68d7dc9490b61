#!/usr/bin/env python
"""De-identification benchmark: ``apolo-node deid`` against dicognito on the same files.

Two corpora, made once under --data: CT slices (512x512, 16-bit: the header-only path, no
pixel scan) and ultrasound frames (RGB 640x480: the full path, which scans pixels for burned-in
text). Each round, in alternating order, times as whole commands (interpreter start included):

- ``apolo-node deid CT OUT``      our header path
- ``apolo-node deid US OUT``      our full path (OCR and redaction, or quarantine without it)
- ``python -m dicognito -o OUT CT`` dicognito 0.19 from PyPI, in its own virtual environment

and prints files/s, medians, and the ratio ours/dicognito on the CT corpus: of whole commands,
and of the same runs less each tool's start-up (an empty folder, timed in the same round).

    .venv/bin/python scripts/bench_deid.py [--ct 200] [--us 20] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.synthetic import ct_slice, new_marker  # noqa: E402
from pydicom.dataset import Dataset  # noqa: E402
from pydicom.uid import UltrasoundImageStorage, generate_uid  # noqa: E402

DICOGNITO = "dicognito==0.19.0"


def ct_instance(study: str, series: str, number: int, marker: str) -> Dataset:
    return ct_slice(study_uid=study, series_uid=series, sop_uid=generate_uid(),
                    number=number, marker=marker, rows=512, columns=512)


def us_instance(study: str, series: str, number: int, marker: str) -> Dataset:
    """An RGB ultrasound frame that declares burned-in text (so it is always scanned)."""
    ds = ct_slice(study_uid=study, series_uid=series, sop_uid=generate_uid(),
                  number=number, marker=marker, rows=480, columns=640, modality="US")
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = UltrasoundImageStorage
    rgb = np.zeros((480, 640, 3), np.uint8)
    rgb[100:380, 120:520] = (90, 90, 90)
    for key in ("RescaleIntercept", "RescaleSlope"):
        del ds[key]
    ds.PhotometricInterpretation = "RGB"
    ds.SamplesPerPixel = 3
    ds.PlanarConfiguration = 0
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.BurnedInAnnotation = "YES"
    ds.PixelData = rgb.tobytes()
    return ds


def made_once(folder: Path, count: int, build: Callable[[str, str, int, str], Dataset]) -> Path:
    """``count`` instances of one study in ``folder``, written once (a finished folder is reused)."""
    if not folder.exists():
        study, series, marker = generate_uid(), generate_uid(), new_marker()
        tmp = folder.with_suffix(".part")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for i in range(count):
            build(study, series, i + 1, marker).save_as(tmp / f"{i:04d}.dcm", enforce_file_format=True)
        tmp.rename(folder)
    return folder


def dicognito_python(env_dir: Path) -> Path:
    """dicognito in its own virtual environment (made on first use)."""
    python = env_dir / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(env_dir)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", DICOGNITO], check=True)
    return python


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, subprocess.CompletedProcess[str]]:
    start = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, text=True)
    return time.perf_counter() - start, done


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "apolo-bench-deid")
    ap.add_argument("--ct", type=int, default=200)
    ap.add_argument("--us", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    print("command:", " ".join([sys.executable, *sys.argv]))
    print(f"machine: nproc {os.cpu_count()}, {platform.platform()}, python {platform.python_version()}")
    ct_dir = made_once(args.data / f"ct{args.ct}", args.ct, ct_instance)
    us_dir = made_once(args.data / f"us{args.us}", args.us, us_instance)
    dcg = dicognito_python(args.data / "dicognito-venv")
    env = {k: v for k, v in os.environ.items() if not k.startswith("APOLO_")}
    env["APOLO_DEID__KEY"] = secrets.token_hex(16)
    env["APOLO_SPOOL__ROOT"] = str(args.data / "spool")
    apolo = [sys.executable, "-m", "apolo_node.cli", "deid"]
    empty = args.data / "empty"
    empty.mkdir(parents=True, exist_ok=True)
    rates: dict[str, list[float]] = {"ours header (CT)": [], "dicognito (CT)": [], "ours full (US)": []}
    starts: dict[str, list[float]] = {"ours start-up": [], "dicognito start-up": []}
    extra: dict[str, str] = {}
    for r in range(args.rounds):
        runs = [
            ("ours header (CT)", apolo + [str(ct_dir), "{out}", "--json"], args.ct),
            ("dicognito (CT)", [str(dcg), "-m", "dicognito", "--quiet", "-o", "{out}", str(ct_dir)], args.ct),
            ("ours full (US)", apolo + [str(us_dir), "{out}", "--json"], args.us),
            ("ours start-up", apolo + [str(empty), "{out}", "--json"], 0),
            ("dicognito start-up", [str(dcg), "-m", "dicognito", "--quiet", "-o", "{out}", str(empty)], 0),
        ]
        if r % 2:
            runs.reverse()
        for name, argv, count in runs:
            out = args.data / "out" / name.split()[0] / f"r{r}"
            shutil.rmtree(out, ignore_errors=True)
            seconds, done = timed([a.replace("{out}", str(out)) for a in argv], env)
            if not count:  # an empty folder: the start-up alone
                starts[name].append(seconds)
                print(f"round {r + 1}: {name:18s} {seconds:8.2f} s")
                continue
            written = len(list(out.rglob("*.dcm"))) if out.exists() else 0
            if name.startswith("ours"):
                summary = json.loads(done.stdout or "{}")
                extra[name] = f"written {summary.get('written')}, quarantined {summary.get('quarantined')}"
            elif done.returncode != 0:
                print(f"dicognito failed: {done.stderr[-500:]}")
            rates[name].append(count / seconds)
            print(f"round {r + 1}: {name:18s} {count / seconds:8.1f} files/s  ({written} files written)")
    print("\nmedian files/s (whole command, interpreter start included)")
    for name, values in rates.items():
        print(f"  {name:18s} {statistics.median(values):8.1f}   {extra.get(name, '')}")
    ratios = [a / b for a, b in zip(rates["ours header (CT)"], rates["dicognito (CT)"])]
    print(f"ours header / dicognito per round: {', '.join(f'{x:.2f}' for x in ratios)}; "
          f"median {statistics.median(ratios):.2f}")
    # The same runs less each tool's start-up on an empty folder in the same round: the
    # files/s a long study or a running node sees (imports, config, profile built once).
    steady = {}
    for name, start in (("ours header (CT)", "ours start-up"), ("dicognito (CT)", "dicognito start-up")):
        steady[name] = [args.ct / max(1e-9, args.ct / rate - s) for rate, s in zip(rates[name], starts[start])]
        print(f"  {start:18s} {statistics.median(starts[start]):8.2f} s (median)")
    ratios = [a / b for a, b in zip(steady["ours header (CT)"], steady["dicognito (CT)"])]
    print(f"after start-up, files/s: ours {statistics.median(steady['ours header (CT)']):.1f}, "
          f"dicognito {statistics.median(steady['dicognito (CT)']):.1f}; ratio per round "
          f"{', '.join(f'{x:.2f}' for x in ratios)}; median {statistics.median(ratios):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
