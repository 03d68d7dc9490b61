#!/usr/bin/env python
"""Evaluate the configured vision backend through the node's own path, and score it.

Each case's image is de-identified, looked at by the ``[vision]`` backend as the vision worker
does, written as our TID 1500 SR and read back; then detection (per label precision, recall and
mean IoU at --iou), grounding accuracy, closed-question accuracy and open-answer token F1 and
BLEU are computed (``apolo_node.pipeline.evaluation`` says how, and what a case file holds).

    # the phantom set (planted metal, air, sides; pydicom's CT_small), with the configured backend
    .venv/bin/python scripts/eval_vision.py --phantoms [--json]
    # write the phantom set to look at or extend, then run a case file
    .venv/bin/python scripts/eval_vision.py --make-set eval/phantoms
    .venv/bin/python scripts/eval_vision.py eval/phantoms/cases.jsonl --config config/apolo.toml
    # another backend: the usual settings, e.g.
    APOLO_VISION__BACKEND=transformers APOLO_VISION__MODEL=Qwen/Qwen2.5-VL-3B-Instruct \\
        .venv/bin/python scripts/eval_vision.py --phantoms

Exit codes: 0 scored (whatever the figures), 1 the backend could not run, 2 bad usage or a bad
case file.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from apolo_node import config  # noqa: E402
from apolo_node.pipeline.eval_set import write_phantom_set  # noqa: E402
from apolo_node.pipeline.evaluation import CaseError, evaluate, format_report, load_cases  # noqa: E402
from apolo_node.vision.backend import BackendUnavailable  # noqa: E402
from apolo_node.vision.backends import make_backend  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("cases", nargs="?", type=Path, help="a JSONL file of cases")
    parser.add_argument("--phantoms", action="store_true", help="run the phantom set (made in a temporary folder)")
    parser.add_argument("--make-set", type=Path, metavar="DIR", help="write the phantom set and its cases.jsonl to DIR, and stop")
    parser.add_argument("--config", help="configuration file (else APOLO_CONFIG, else config/apolo.toml)")
    parser.add_argument("--iou", type=float, default=0.5, help="IoU at which a box counts as found (default 0.5)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON, every case included")
    args = parser.parse_args(argv)
    if args.make_set is not None:
        print(write_phantom_set(args.make_set))
        return 0
    if (args.cases is None) == (not args.phantoms):
        parser.error("give a cases file or --phantoms (not both)")
    if not 0.0 < args.iou <= 1.0:
        parser.error(f"--iou must lie in (0, 1], got {args.iou}")
    try:
        cfg = config.load(args.config)
    except (config.ConfigError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="apolo-eval-") as scratch:
        path = write_phantom_set(Path(scratch)) if args.phantoms else args.cases
        try:
            cases = load_cases(path)
        except (CaseError, OSError, UnicodeDecodeError) as exc:
            print(f"error: {path}: {exc}", file=sys.stderr)
            return 2
        try:
            backend = make_backend(cfg.vision)
        except BackendUnavailable as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        try:
            report = evaluate(cases, backend, cfg, iou_threshold=args.iou)
        finally:
            backend.close()
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
