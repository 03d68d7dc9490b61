"""The evaluation harness: a JSONL of cases run through the node's own path and scored.

Each image of the cases is read (a DICOM file, ``pydicom:NAME`` for a file of pydicom's test
set, or a PNG/JPEG picture wrapped as a Secondary Capture), de-identified with the configured
profile (a fresh key: nothing is kept), looked at by the configured vision backend exactly as
the vision worker does (``vision.look``: frames, tiling, prompts, parsing, boxes to source
pixels), written as our TID 1500 SR with its narrative, and read back from the SR's bytes: what
is scored is what the node would have sent. Each image is examined once, whatever the number
of its cases.

A case (one JSON object per line) has ``image`` (relative to the JSONL file) and ``task``:

- ``detect``: ``boxes``, a list of ``{"label", "box": [x1, y1, x2, y2] (source pixels),
  "accept": [other labels that count as this one]}``; scored per label: precision, recall and
  mean IoU of the matches at ``iou`` (0.5).
- ``ground``: ``question`` ("Where is the metal?") and ``boxes``: answered with the box of the
  finding the question names; accuracy is IoU >= ``iou``.
- ``closed``: ``question`` and ``answer`` (yes/no, left/right): exact-match accuracy.
- ``open``: ``question`` and ``answer`` (free text): token F1, BLEU-1 and BLEU-4.

Questions are answered from the node's output for the image, as a clinician would get it: a
finding whose label the question names ("Is there metal?" -> yes if a finding is labelled
Metal), its side from its box and the image's orientation (radiological display when the image
does not say), its box; an open question by the narrative's impression (the model's own prose
when it wrote prose but no impression). The vision backends take
no question (they are asked for findings, with their family's prompt), so the figures measure the
node with that model, not the model's free answers.
"""

from __future__ import annotations

import io
import json
import re
import secrets
import statistics
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pydicom import dcmread
from pydicom.config import disable_value_validation
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    ExplicitVRLittleEndian,
    SecondaryCaptureImageStorage,
    generate_uid,
)

from apolo_node.config import Config
from apolo_node.deid import Deidentifier
from apolo_node.deid.command import DeidError, clean_instance, read_instance
from apolo_node.deid.depth import TooDeep
from apolo_node.findings import Finding
from apolo_node.pipeline import scores
from apolo_node.sr import Narrative, compose_narrative, measurement_report, read_measurement_report
from apolo_node.sr.narrative import TEMPLATE_NOTE
from apolo_node.vision.backend import VisionBackend
from apolo_node.vision.look import choose_instances, look

TASKS = ("detect", "ground", "closed", "open")
MAX_CASES = 100_000
MAX_LINE = 1_000_000  # characters of one JSONL line
PICTURES = {".png", ".jpg", ".jpeg"}
# Words of a question that name no finding.
_STOP = frozenset(
    "is are was were there any a an the this that these image slice picture in on of at to does do "
    "did has have what which where side how many much show shows seen see visible present found "
    "left right or and with it its".split()
)
_WORD = re.compile(r"[a-z0-9]+")


class CaseError(ValueError):
    """A case file line that is not a case; the message names the line and the rule."""


@dataclass(frozen=True)
class Reference:
    """A reference box: its label, the labels that count as it, and where it is."""

    label: str
    box: scores.BoxValues
    accept: tuple[str, ...] = ()

    def names(self) -> set[str]:
        return {n.strip().lower() for n in (self.label, *self.accept)}


@dataclass(frozen=True)
class Case:
    """One line of the cases file."""

    line: int
    image: str  # as written in the file
    path: Path | None  # None for pydicom:NAME
    task: str
    question: str = ""
    answer: str = ""
    boxes: tuple[Reference, ...] = ()


def _reference(raw: Any, line: int) -> Reference:
    if not isinstance(raw, dict) or not isinstance(raw.get("label"), str) or not raw["label"].strip():
        raise CaseError(f"line {line}: each of boxes must be an object with a non-empty label")
    box = raw.get("box")
    if (
        not isinstance(box, list) or len(box) != 4
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in box)
        or not (box[0] < box[2] and box[1] < box[3])
    ):
        raise CaseError(f"line {line}: box must be [x1, y1, x2, y2] numbers with x1 < x2 and y1 < y2, got {box!r}")
    accept = raw.get("accept", [])
    if not isinstance(accept, list) or not all(isinstance(a, str) for a in accept):
        raise CaseError(f"line {line}: accept must be a list of labels")
    return Reference(raw["label"], (float(box[0]), float(box[1]), float(box[2]), float(box[3])), tuple(accept))


def parse_case(raw: Any, line: int, base: Path) -> Case:
    """One JSON value of the cases file as a Case; CaseError says which rule it breaks."""
    if not isinstance(raw, dict):
        raise CaseError(f"line {line}: a case must be a JSON object")
    image, task = raw.get("image"), raw.get("task")
    if not isinstance(image, str) or not image.strip():
        raise CaseError(f"line {line}: image must name a file")
    if task not in TASKS:
        raise CaseError(f"line {line}: task must be one of {', '.join(TASKS)}, got {task!r}")
    question, answer = raw.get("question", ""), raw.get("answer", "")
    if not isinstance(question, str) or not isinstance(answer, str):
        raise CaseError(f"line {line}: question and answer must be text")
    if task != "detect" and not question.strip():
        raise CaseError(f"line {line}: a {task} case needs a question")
    if task in ("closed", "open") and not answer.strip():
        raise CaseError(f"line {line}: a {task} case needs a reference answer")
    boxes = raw.get("boxes", [])
    if not isinstance(boxes, list):
        raise CaseError(f"line {line}: boxes must be a list")
    if task in ("detect", "ground") and not boxes:
        raise CaseError(f"line {line}: a {task} case needs reference boxes")
    path = None if image.startswith("pydicom:") else (base / image)
    return Case(line, image, path, task, question, answer, tuple(_reference(b, line) for b in boxes))


def load_cases(path: Path) -> list[Case]:
    """The cases of a JSONL file (blank lines and ``#`` comments skipped), bounded in size."""
    cases = []
    with path.open(encoding="utf-8") as fh:
        for n, text in enumerate(fh, start=1):
            if len(text) > MAX_LINE:
                raise CaseError(f"line {n}: longer than {MAX_LINE} characters")
            if not text.strip() or text.lstrip().startswith("#"):
                continue
            try:
                raw = json.loads(text)
            except json.JSONDecodeError as exc:
                raise CaseError(f"line {n}: not JSON ({exc.msg})") from None
            cases.append(parse_case(raw, n, path.parent))
            if len(cases) > MAX_CASES:
                raise CaseError(f"more than {MAX_CASES} cases")
    return cases


def picture_instance(path: Path) -> Dataset:
    """A PNG or JPEG picture as a Secondary Capture instance (8-bit grey or RGB), in memory."""
    with Image.open(path) as picture:
        picture.load()
        grey = picture.mode in ("1", "L", "I", "I;16", "F")
        pixels = np.asarray(picture.convert("L" if grey else "RGB"), dtype=np.uint8)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality, ds.ConversionType = "OT", "WSD"
    ds.PatientName, ds.PatientID = "", ""
    ds.Rows, ds.Columns = int(pixels.shape[0]), int(pixels.shape[1])
    ds.SamplesPerPixel = 1 if grey else 3
    ds.PhotometricInterpretation = "MONOCHROME2" if grey else "RGB"
    if not grey:
        ds.PlanarConfiguration = 0
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit, ds.PixelRepresentation = 7, 0
    ds.PixelData = pixels.tobytes()
    return ds


def read_image(case: Case, max_depth: int) -> Dataset:
    """The case's image as a dataset: a DICOM file (its nesting checked before pydicom reads it,
    as the de-identifier does), a pydicom test file, or a picture."""
    if case.path is None:
        from pydicom.data import get_testdata_file

        found = get_testdata_file(case.image.removeprefix("pydicom:"))
        if found is None:
            raise FileNotFoundError(f"line {case.line}: pydicom has no test file {case.image!r}")
        return dcmread(found)
    if case.path.suffix.lower() in PICTURES:
        return picture_instance(case.path)
    return read_instance(case.path, max_depth)


@dataclass(frozen=True)
class Examined:
    """What the node made of one image: the findings and narrative read back from its SR."""

    findings: tuple[Finding, ...]
    impression: str
    findings_text: str
    answer: str  # to an open question: the impression, or the model's prose where it wrote no impression
    images: int  # model images shown (frames, tiles)
    seconds: float  # looking only (vision.look), not reading or de-identifying
    columns: int  # of the source frame
    row_toward_patient_left: bool  # the image's x axis runs to the patient's left


def _row_toward_left(ds: Dataset) -> bool:
    """Whether x grows toward the patient's left: from Image Orientation (Patient) (LPS), else
    Patient Orientation's row letter, else the radiological display convention (yes)."""
    orientation = ds.get("ImageOrientationPatient")
    if orientation is not None and len(orientation) == 6:
        x = float(orientation[0])
        if abs(x) > 0.5:
            return x > 0
    letters = ds.get("PatientOrientation")
    if letters is not None and len(letters) == 2 and str(letters[0])[:1] in ("L", "R"):
        return str(letters[0]).startswith("L")
    return True


def open_answer(narrative: Narrative, prose: bool) -> str:
    """The node's answer to an open question: the impression, unless it is the template's and the
    model wrote prose (then its prose, the findings text)."""
    if prose and narrative.impression.startswith(TEMPLATE_NOTE):
        return narrative.findings
    return narrative.impression


def examine(ds: Dataset, backend: VisionBackend, cfg: Config, deidentifier: Deidentifier) -> Examined:
    """De-identify, look, write the SR and read it back: the vision worker's path for one image."""
    with disable_value_validation():
        clean = clean_instance(ds, deidentifier, consume=True).dataset
        assert clean is not None
        chosen = choose_instances([clean], cfg.vision)
        start = time.perf_counter()
        result = look(backend, chosen, cfg.vision)
        seconds = time.perf_counter() - start
    narrative = compose_narrative(result.free_text, result.trace, result.findings, result.images, result.algorithm)
    sr = measurement_report(
        result.findings, [clean], result.algorithm, series_instance_uid=generate_uid(prefix=None),
        sop_instance_uid=generate_uid(prefix=None), disclaimer=result.disclaimer, narrative=narrative,
    )
    buffer = io.BytesIO()
    sr.save_as(buffer, enforce_file_format=True)
    buffer.seek(0)
    content = read_measurement_report(dcmread(buffer))
    said = content.narrative or narrative
    return Examined(
        content.findings, said.impression, said.findings, open_answer(said, bool(result.free_text)),
        result.images, seconds, int(clean.Columns), _row_toward_left(clean),
    )


def _words(text: str) -> set[str]:
    out = set()
    for word in _WORD.findall(text.lower()):
        out.add(word)
        if len(word) > 3 and word.endswith("s"):
            out.add(word[:-1])  # "nodules" names Nodule
    return out


def named(question: str, findings: Sequence[Finding]) -> list[Finding]:
    """The findings whose label the question names (every word of the label in the question)."""
    asked = _words(question) - _STOP
    return [f for f in findings if (label := _words(f.label) - _STOP) and label <= asked]


def answer_closed(question: str, seen: Examined) -> str:
    """The node's answer to a closed question: left/right for a side, else yes/no for presence."""
    found = named(question, seen.findings)
    words = _words(question)
    if "side" in words or {"left", "right"} <= words:
        centres = [(f.box.x1 + f.box.x2) / 2 for f in found if f.box is not None]
        if not centres:
            return "none"
        image_right = statistics.fmean(centres) > seen.columns / 2
        return "left" if image_right == seen.row_toward_patient_left else "right"
    return "yes" if found else "no"


def answer_box(question: str, seen: Examined, accept: Iterable[str] = ()) -> scores.BoxValues | None:
    """The node's answer to a "where" question: the box of the first finding it names (or whose
    label the case accepts as the one asked for)."""
    names = {a.strip().lower() for a in accept}
    chosen = named(question, seen.findings) + [f for f in seen.findings if f.label.strip().lower() in names]
    for f in chosen:
        if f.box is not None:
            return (f.box.x1, f.box.y1, f.box.x2, f.box.y2)
    return None


@dataclass
class _Label:
    references: int = 0
    predictions: int = 0
    matched: list[float] = field(default_factory=list)  # IoU of each match

    def as_json(self) -> dict[str, Any]:
        found = len(self.matched)
        return {
            "references": self.references,
            "predictions": self.predictions,
            "matched": found,
            "precision": round(found / self.predictions, 4) if self.predictions else 0.0,
            "recall": round(found / self.references, 4) if self.references else 0.0,
            "mean_iou": round(statistics.fmean(self.matched), 4) if self.matched else 0.0,
        }


def _mean(values: Sequence[float]) -> float | None:
    return round(statistics.fmean(values), 4) if values else None


def _detect(case: Case, seen: Examined, labels: dict[str, _Label], threshold: float) -> dict[str, Any]:
    groups: dict[str, list[Reference]] = {}
    for ref in case.boxes:
        groups.setdefault(ref.label, []).append(ref)
    scored: set[int] = set()
    out: dict[str, Any] = {}
    for label, refs in groups.items():
        names = set().union(*(r.names() for r in refs))
        mine = [k for k, f in enumerate(seen.findings) if f.label.strip().lower() in names and f.box is not None]
        scored.update(mine)
        boxes = [seen.findings[k].box for k in mine]
        matches = scores.match_boxes(
            [r.box for r in refs], [(b.x1, b.y1, b.x2, b.y2) for b in boxes if b is not None], threshold
        )
        tally = labels.setdefault(label, _Label())
        tally.references += len(refs)
        tally.predictions += len(mine)
        tally.matched.extend(m.iou for m in matches)
        out[label] = {"references": len(refs), "predictions": len(mine), "ious": [round(m.iou, 4) for m in matches]}
    return {"labels": out, "other_findings": len(seen.findings) - len(scored)}


def _failure(exc: Exception) -> str:
    """Why an image failed, without a header value: the message only of errors that quote none
    (a missing file names the path given; a de-identification error names tags and rules)."""
    if isinstance(exc, (OSError, DeidError, TooDeep)):
        return f"{type(exc).__name__}: {exc}"
    return type(exc).__name__


def evaluate(
    cases: Sequence[Case], backend: VisionBackend, cfg: Config, *, iou_threshold: float = 0.5,
    deidentifier: Deidentifier | None = None,
) -> dict[str, Any]:
    """Run every case's image through the node once and score every case; a JSON-ready report."""
    deid = deidentifier or Deidentifier(secrets.token_hex(32).encode(), cfg.deid.options, cfg.deid.max_depth)
    examined: dict[str, Examined | str] = {}
    labels: dict[str, _Label] = {}
    ground_ious: list[float] = []
    closed: list[bool] = []
    f1s: list[float] = []
    bleu1: list[float] = []
    bleu4: list[float] = []
    per_case: list[dict[str, Any]] = []
    for case in cases:
        key = case.image if case.path is None else str(case.path.resolve())
        if key not in examined:
            try:
                examined[key] = examine(read_image(case, cfg.deid.max_depth), backend, cfg, deid)
            except Exception as exc:  # a bad image fails its cases, not the run
                examined[key] = _failure(exc)
        seen = examined[key]
        row: dict[str, Any] = {"line": case.line, "image": case.image, "task": case.task}
        if case.question:
            row["question"] = case.question
        if isinstance(seen, str):
            row["error"] = seen
            per_case.append(row)
            continue
        if case.task == "detect":
            row.update(_detect(case, seen, labels, iou_threshold))
        elif case.task == "ground":
            box = answer_box(case.question, seen, set().union(*(r.names() for r in case.boxes)))
            best = max((scores.iou(r.box, box) for r in case.boxes), default=0.0) if box else 0.0
            ground_ious.append(best)
            row.update(box=[round(v, 1) for v in box] if box else None, iou=round(best, 4), correct=best >= iou_threshold)
        elif case.task == "closed":
            said = answer_closed(case.question, seen)
            closed.append(scores.exact(said, case.answer))
            row.update(answer=said, reference=case.answer, correct=closed[-1])
        else:
            said = seen.answer
            f1s.append(scores.token_f1(said, case.answer))
            bleu1.append(scores.bleu(said, case.answer, 1))
            bleu4.append(scores.bleu(said, case.answer, 4))
            row.update(answer=said, reference=case.answer, token_f1=round(f1s[-1], 4), bleu4=round(bleu4[-1], 4))
        per_case.append(row)
    done = [e for e in examined.values() if isinstance(e, Examined)]
    seconds = sum(e.seconds for e in done)
    return {
        "algorithm": f"{backend.algorithm.name} {backend.algorithm.version}",
        "cases": len(cases),
        "images": len(done),
        "failed_images": len(examined) - len(done),
        "model_images": sum(e.images for e in done),
        "seconds_per_image": round(seconds / len(done), 4) if done else None,
        "iou_threshold": iou_threshold,
        "detection": {label: tally.as_json() for label, tally in sorted(labels.items())},
        "grounding": {
            "questions": len(ground_ious),
            "accuracy": _mean([float(v >= iou_threshold) for v in ground_ious]),
            "mean_iou": _mean(ground_ious),
        },
        "closed": {"questions": len(closed), "accuracy": _mean([float(c) for c in closed])},
        "open": {"questions": len(f1s), "token_f1": _mean(f1s), "bleu1": _mean(bleu1), "bleu4": _mean(bleu4)},
        "per_case": per_case,
    }


def _figure(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def format_report(report: dict[str, Any]) -> str:
    """The report for people: the totals, a line per label, and every case that went wrong."""
    lines = [
        f"{report['algorithm']}: {report['cases']} cases on {report['images']} images "
        f"({report['failed_images']} failed), {report['model_images']} model images, "
        f"{_figure(report['seconds_per_image'])} s per image",
        "",
        f"detection at IoU >= {report['iou_threshold']}:",
        f"  {'label':<24} {'refs':>5} {'preds':>5} {'precision':>9} {'recall':>7} {'mean IoU':>8}",
    ]
    for label, t in report["detection"].items():
        lines.append(
            f"  {label[:24]:<24} {t['references']:>5} {t['predictions']:>5} {t['precision']:>9.3f} "
            f"{t['recall']:>7.3f} {t['mean_iou']:>8.3f}"
        )
    g, c, o = report["grounding"], report["closed"], report["open"]
    lines += [
        "",
        f"grounding: {g['questions']} questions, accuracy {_figure(g['accuracy'])}, mean IoU {_figure(g['mean_iou'])}",
        f"closed:    {c['questions']} questions, accuracy {_figure(c['accuracy'])}",
        f"open:      {o['questions']} questions, token F1 {_figure(o['token_f1'])}, "
        f"BLEU-1 {_figure(o['bleu1'])}, BLEU-4 {_figure(o['bleu4'])}",
    ]
    wrong = [r for r in report["per_case"] if "error" in r or r.get("correct") is False]
    if wrong:
        lines += ["", "cases answered wrong or not at all:"]
        for r in wrong:
            what = r.get("error") or f"answered {r.get('answer', r.get('box'))!r}, expected {r.get('reference', 'the box')!r}"
            lines.append(f"  line {r['line']} {r['image']} {r['task']} {r.get('question', '')!r}: {what}")
    return "\n".join(lines)


def images_of(cases: Iterable[Case]) -> int:
    """How many distinct images the cases name."""
    return len({c.image if c.path is None else str(c.path.resolve()) for c in cases})
