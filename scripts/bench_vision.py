#!/usr/bin/env python
"""Vision stage benchmark: images per second and per-image latency with each backend, and the
overhead of our code (decoding, LUTs, scaling, parsing, mapping boxes) against the bare backend,
and the cost of tiling a big radiograph (``[vision] tiling``).

For each backend available here, in the same run and on the same images:

- ``stage``: ``vision.look.look`` over de-identified CT slices (decode, display, scale, batch,
  describe, parse, map to source pixels): what the vision worker does per study.
- ``bare``:  ``backend.describe_batch`` alone on ModelImages prepared beforehand.

Backends: ``baseline`` always; ``tiny`` (a random-weight Qwen2.5-VL built locally, as the tests
use) when torch and transformers are installed; ``--model PATH_OR_ID`` a real transformers model
(on a GPU machine); ``--openai-url URL --openai-model NAME`` a running OpenAI-compatible server.

``tiling``: the stage with the baseline on one 4096x4096 DX, ``tiling = off`` against the default
``auto`` (the whole view plus its tiles, boxes merged): images shown and seconds per frame. With a
model the cost grows with the images shown (1 + tiles).

    .venv/bin/python scripts/bench_vision.py [--images 32] [--rounds 3] [--size 512]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from pydicom.uid import generate_uid  # noqa: E402

from apolo_node.config import VisionSettings  # noqa: E402
from apolo_node.imaging import model_images  # noqa: E402
from apolo_node.vision.backend import Context, VisionBackend  # noqa: E402
from apolo_node.vision.baseline import BaselineBackend  # noqa: E402
from apolo_node.vision.look import look  # noqa: E402
from tests.synthetic import phantom_ct  # noqa: E402


def slices(count: int) -> list:
    study, series = generate_uid(), generate_uid()
    return [phantom_ct(study_uid=study, series_uid=series, number=n + 1) for n in range(count)]


def timed(fn: Callable[[], object], rounds: int) -> list[float]:
    fn()  # warm-up: model caches, first allocation
    out = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def bench(name: str, backend: VisionBackend, settings: VisionSettings, datasets: list, rounds: int) -> None:
    images = [i for ds in datasets for i in model_images(ds, settings.frames, settings.max_frames, settings.max_pixels)]
    contexts = [Context(i.modality, i.body_part, i.frame, i.frames, i.pixel_spacing) for i in images]
    n = len(images)

    def bare() -> None:
        for k in range(0, n, settings.batch_size):
            backend.describe_batch(images[k:k + settings.batch_size], contexts[k:k + settings.batch_size])

    def stage() -> None:
        result = look(backend, datasets, settings)
        assert result.images == n

    t_stage = timed(stage, rounds)
    t_bare = timed(bare, rounds)
    s, b = statistics.median(t_stage), statistics.median(t_bare)
    print(
        f"{name:10s} {n / s:8.2f} img/s  {1000 * s / n:8.1f} ms/img (stage)   "
        f"{n / b:8.2f} img/s  {1000 * b / n:8.1f} ms/img (bare)   "
        f"overhead {1000 * (s - b) / n:6.1f} ms/img = {100 * (s - b) / s:5.1f}% of the stage"
    )


def bench_tiling(rounds: int) -> None:
    from tests.test_imaging_tiling import radiograph

    ds = radiograph(4096, [(2901, 1303, 12)])
    for tiling in ("off", "auto"):
        settings = VisionSettings(tiling=tiling)
        shown = 0

        def stage() -> None:
            nonlocal shown
            shown = look(BaselineBackend(), [ds], settings).images

        s = statistics.median(timed(stage, rounds))
        print(f"tiling {tiling:4s} 4096x4096 DX, baseline: {shown} images shown, {s:6.2f} s/frame")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=32, help="CT slices per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--model", help="a transformers image-text model (hub id or local path)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--openai-url")
    parser.add_argument("--openai-model")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    args = parser.parse_args()

    print(f"# {platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}; {args.images} CT slices 256x256, {args.rounds} rounds")
    # frames=all with max_frames >= images: every slice of the series is described.
    base = VisionSettings(frames="all", max_frames=10_000, batch_size=args.batch_size,
                          max_new_tokens=args.max_new_tokens, device=args.device)
    datasets = slices(args.images)
    bench("baseline", BaselineBackend(), base, datasets, args.rounds)
    bench_tiling(args.rounds)

    from apolo_node.vision import transformers_backend

    if transformers_backend.available() is None:
        import transformers

        from tests.tiny_models import tiny_qwen2_5_vl

        transformers.utils.logging.disable_progress_bar()

        with tempfile.TemporaryDirectory() as tmp:
            path = tiny_qwen2_5_vl(Path(tmp) / "tiny")
            settings = dataclasses.replace(base, backend="transformers", model=str(path), max_pixels=128 * 128)
            backend = transformers_backend.TransformersBackend.from_settings(settings)
            bench("tiny-vlm", backend, settings, datasets, args.rounds)
            backend.close()
        if args.model:
            settings = dataclasses.replace(base, backend="transformers", model=args.model, max_pixels=512 * 512)
            backend = transformers_backend.TransformersBackend.from_settings(settings)
            bench(Path(args.model).name[:10], backend, settings, datasets, args.rounds)
            backend.close()
    else:
        print(f"# transformers backend skipped: {transformers_backend.available()}")
    if args.openai_url and args.openai_model:
        from apolo_node.vision.openai_backend import OpenAIBackend

        settings = dataclasses.replace(base, backend="openai", url=args.openai_url, model=args.openai_model)
        backend = OpenAIBackend.from_settings(settings)
        bench("openai", backend, settings, datasets, args.rounds)
        backend.close()


if __name__ == "__main__":
    main()
