"""The vision stage's work on one de-identified study: choose images, ask the backend, and turn
its answers into findings in source pixels.

A series of single-frame slices is a volume: the ``frames`` setting (first, middle, all up to
``max_frames``) picks slices of it as it picks frames of a multi-frame instance. A big frame is
also shown in overlapping tiles (``tiling``, ``max_tiles``, ``tile_overlap``). Images go to the
backend in batches of ``batch_size``; boxes come back as fractions of the image shown and are
mapped to the source frame through its transform, and a tiled frame's boxes are merged
(``vision.merge``). Tracking UIDs are derived from the algorithm, the instance, the frame, the
tile and the finding's place in the answer, so describing a study again with the same model
gives the same UIDs.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from pydicom.dataset import Dataset

from apolo_node.config import VisionSettings
from apolo_node.findings import Algorithm, Box, Code, Finding, Measurement
from apolo_node.imaging import ImagingError, ModelImage, choose_level, is_slide, model_images, select_frames
from apolo_node.metrics import MODEL_SECONDS
from apolo_node.vision.backend import Context, Described, RawFinding, VisionBackend
from apolo_node.vision.lexicon import code_for
from apolo_node.vision.merge import Seen, merge

MEASUREMENT_NAMES = {"area": Code("42798000", "SCT", "Area")}
UNIT_MEANINGS = {"mm2": "square millimeter", "mm": "millimeter", "1": "no units"}


@dataclass(frozen=True)
class StudyFindings:
    """What the backend saw in a study, ready for the TID 1500 SR and the catalog."""

    algorithm: Algorithm
    disclaimer: str
    findings: tuple[Finding, ...]
    images: int  # images shown to the backend (frames, and tiles of big frames)
    unparsed: int  # pieces of model output that were not findings
    free_text: tuple[str, ...] = ()  # the model's prose outside findings and outside its trace
    skipped: tuple[str, ...] = field(default=())  # "<sop uid>: why" for images not shown
    trace: tuple[str, ...] = ()  # the model's reasoning (<think> text): kept for the SR, not findings


def has_pixels(header: Dataset) -> bool:
    """An image instance, judged from its header alone (read without Pixel Data)."""
    return "Rows" in header and "Columns" in header and "BitsAllocated" in header


def _order(header: Dataset) -> tuple[float, str]:
    number = header.get("InstanceNumber")
    try:
        n = float(number) if number is not None else float("inf")
    except (TypeError, ValueError):
        n = float("inf")
    return n, str(header.SOPInstanceUID)


def choose_instances(headers: Sequence[Dataset], settings: VisionSettings) -> list[Dataset]:
    """The image instances to look at: per series, all multi-frame instances (their frames are
    chosen later), of single-frame slices those that ``frames`` picks, in instance order, and of
    a whole-slide series the one pyramid level ``wsi_level`` picks (``imaging.slides``)."""
    series: dict[str, list[Dataset]] = defaultdict(list)
    for header in headers:
        if has_pixels(header):
            series[str(header.get("SeriesInstanceUID", ""))].append(header)
    chosen = []
    for members in series.values():
        members.sort(key=_order)
        if any(is_slide(h) for h in members):
            level = choose_level(members, settings.wsi_level, settings.max_frames)
            chosen.extend([level] if level is not None else [])
            members = [h for h in members if not is_slide(h)]
        multi = [h for h in members if int(h.get("NumberOfFrames", 1) or 1) > 1]
        single = [h for h in members if int(h.get("NumberOfFrames", 1) or 1) <= 1]
        chosen.extend(multi)
        if single:
            picks = select_frames(len(single), settings.frames, settings.max_frames)
            chosen.extend(single[i - 1] for i in picks)
    return chosen


def tracking_uid(algorithm: Algorithm, image: ModelImage, index: int) -> str:
    """Stable across runs of the same model on the same de-identified frame (and tile)."""
    parts: tuple[str, ...] = (
        algorithm.name, algorithm.version, image.sop_instance_uid, str(image.frame), str(index)
    )
    if image.tile:
        parts += (f"tile {image.tile}",)
    digest = hashlib.sha256("\x1f".join(parts).encode()).digest()[:16]
    return f"2.25.{int.from_bytes(digest, 'big')}"  # a UUID-sized integer under 2.25 (PS3.5 B.2)


def to_finding(raw: RawFinding, image: ModelImage, algorithm: Algorithm, index: int) -> tuple[Finding, int]:
    """One backend finding on one image as a Finding in source pixels; and 1 if its box was lost."""
    box = None
    lost = 0
    if raw.box is not None:
        mapped = image.transform.fraction_to_source(raw.box)
        if mapped is None:
            lost = 1
        else:
            box = Box(*mapped)
    measurements = []
    for name, value, unit in raw.measurements:
        name_code = MEASUREMENT_NAMES.get(name.lower()) or code_for(name)
        unit_code = Code(unit, "UCUM", UNIT_MEANINGS.get(unit, unit))
        measurements.append(Measurement(name_code, float(value), unit_code))
    finding = Finding(
        tracking_uid=tracking_uid(algorithm, image, index),
        label=raw.label,
        code=code_for(raw.label),
        sop_instance_uid=image.sop_instance_uid,
        sop_class_uid=image.sop_class_uid,
        frame=image.frame,
        description=raw.description,
        box=box,
        confidence=raw.confidence,
        laterality=raw.laterality,
        location=raw.location,
        measurements=tuple(measurements),
    )
    return finding, lost


def _images(datasets: Iterable[Dataset], settings: VisionSettings, skipped: list[str]) -> Iterator[ModelImage]:
    for ds in datasets:
        try:
            yield from model_images(
                ds, "all" if is_slide(ds) else settings.frames, settings.max_frames, settings.max_pixels,
                settings.tiling, settings.max_tiles, settings.tile_overlap,
            )
        except ImagingError as exc:
            skipped.append(f"{ds.get('SOPInstanceUID', '?')}: {exc}")


def _batches(images: Iterator[ModelImage], size: int) -> Iterator[list[ModelImage]]:
    batch: list[ModelImage] = []
    for image in images:
        batch.append(image)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _once(texts: list[str]) -> tuple[str, ...]:
    """The texts, each once (the tiles of a frame, or its frames, often say the same thing)."""
    return tuple(dict.fromkeys(t for t in texts if t))


def look(backend: VisionBackend, datasets: Iterable[Dataset], settings: VisionSettings) -> StudyFindings:
    """Describe every chosen frame (and tile) of the given instances; decode lazily, batch by batch."""
    skipped: list[str] = []
    seen: list[Seen] = []
    free_text: list[str] = []
    trace: list[str] = []
    images = unparsed = 0
    for batch in _batches(_images(datasets, settings, skipped), settings.batch_size):
        contexts = [
            Context(i.modality, i.body_part, i.frame, i.frames, i.pixel_spacing, i.tile) for i in batch
        ]
        with MODEL_SECONDS.labels("vision").time():
            answers: list[Described] = backend.describe_batch(batch, contexts)
        if len(answers) != len(batch):
            raise RuntimeError(
                f"vision backend answered {len(answers)} times for {len(batch)} images"
            )
        for image, answer in zip(batch, answers, strict=True):
            images += 1
            unparsed += answer.unparsed
            free_text.extend(answer.free_text)
            trace.extend(answer.trace)
            for index, raw in enumerate(answer.findings):
                try:
                    finding, lost = to_finding(raw, image, backend.algorithm, index)
                except ValueError:  # an unusable label, confidence or laterality: keep its text
                    unparsed += 1
                    free_text.append(raw.description or raw.label)
                    continue
                unparsed += lost
                cut = finding.box is not None and image.cut(tuple(finding.box.as_list()))
                seen.append(Seen(finding, image.tile, len(seen), cut))
    return StudyFindings(
        algorithm=backend.algorithm,
        disclaimer=backend.disclaimer,
        findings=tuple(merge(seen)),
        images=images,
        unparsed=unparsed,
        free_text=_once(free_text),
        skipped=tuple(skipped),
        trace=_once(trace),
    )
