"""Grounding parser: a vision-language model's answer turned into findings with fraction boxes.

Models locate findings in several dialects, and one answer may mix them; each is recognised
wherever it appears, and its boxes become fractions (x1, y1, x2, y2) of the image the model saw
(0..1, x across, y down), the form ``backend.RawFinding`` carries.

- ours (``prompts.FINDINGS_SCHEMA``): ``{"findings": [{"label", "description", "box", ...}]}``,
  or a bare list of such objects, in ```json fences or not, with text around or not;
  ``box`` is on 0-1000.
- Qwen2.5-VL / Qwen3-VL JSON: ``[{"bbox_2d": [x1, y1, x2, y2], "label": "..."}]``; scale per
  ``Coordinates``.
- Qwen2-VL: ``<|object_ref_start|>label<|object_ref_end|><|box_start|>(x1,y1),(x2,y2)<|box_end|>``,
  one or more box tags; 0-1000.
- DeepSeek-VL2: ``<|grounding|>`` maybe, ``<|ref|>label<|/ref|><|det|>[[x1,y1,x2,y2], ...]<|/det|>``;
  0-999.
- MedMO: ``label <box>[[x1,y1,x2,y2], ...]</box>`` (or ``<ref>label</ref><box>...``); 0-1000.

``bbox_2d`` (and ``bbox``) follow the model: Qwen2.5-VL answers in pixels of the resized input
its processor made (``Coordinates.pixels(width, height)``), Qwen3-VL and most others in
thousandths (``Coordinates.thousandths()``). A tag without a label tag takes the phrase just
before it as its label ("Fractures <box>..."); several boxes after one label give one finding
each, all with that label.

A reasoning trace (``<think>...</think>``, or whatever tags the model's profile names) is never
read for findings: its text goes to ``Described.trace``. A close tag with no open tag before it
ends a trace the chat template opened (Qwen3-VL Thinking puts ``<think>`` in the prompt); an
open tag never closed (the token limit cut the answer) makes the rest trace.

Nothing the model said is lost, and nothing it says raises. A piece of the answer that did not
become a finding (prose between structures included, JSON that would not parse, an item that is
not a finding) counts one in ``Described.unparsed`` and its text (trimmed, at most 2000
characters) goes to ``free_text``; a finding whose box is unusable keeps its label with
``box=None`` and counts one unparsed box. Boxes are put in corner order and clipped to the
image; one left with no area is unusable.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, replace
from typing import Any

from apolo_node.logs import get_logger
from apolo_node.vision.backend import Described, RawFinding

LABEL_LIMIT = 64  # a label becomes a code meaning (DICOM LO)
TEXT_LIMIT = 2000  # per piece of free text, description or location
TRACE_LIMIT = 20_000  # per piece of reasoning trace
THINK_MARKS: tuple[tuple[str, str], ...] = (("<think>", "</think>"),)
DEFAULT_LABEL = "finding"
SCAN_BUDGET = 500_000  # characters the JSON search may read per answer, so garbage costs bounded time

FractionBox = tuple[float, float, float, float]
THOUSANDTHS_SCALE = (1000.0, 1000.0)

_log = get_logger("vision.grounding")


@dataclass(frozen=True)
class Coordinates:
    """How bare pixel-or-normalised boxes (Qwen JSON ``bbox_2d``) are scaled for this model.

    ``kind`` is "pixels" (Qwen2.5-VL: pixels of the resized input its processor made, whose
    ``width`` and ``height`` are then required) or "thousandths" (Qwen3-VL and most others: 0-1000).
    """

    kind: str
    width: int | None = None
    height: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("pixels", "thousandths"):
            raise ValueError(f"Coordinates kind must be 'pixels' or 'thousandths', got {self.kind!r}")
        if self.kind == "pixels":
            for name in ("width", "height"):
                value = getattr(self, name)
                if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                    raise ValueError(
                        f"Coordinates {name} must be a positive int with kind 'pixels' "
                        f"(the size of the model's input image), got {value!r}"
                    )
        elif self.width is not None or self.height is not None:
            raise ValueError(
                f"Coordinates width and height go with kind 'pixels' only, got "
                f"{self.width!r} x {self.height!r} with kind {self.kind!r}"
            )

    @classmethod
    def pixels(cls, width: int, height: int) -> Coordinates:
        return cls("pixels", width, height)

    @classmethod
    def thousandths(cls) -> Coordinates:
        return cls("thousandths")

    @property
    def scale(self) -> tuple[float, float]:
        """What x and y are divided by to become fractions of the image."""
        if self.kind == "pixels" and self.width and self.height:
            return (float(self.width), float(self.height))
        return THOUSANDTHS_SCALE


THOUSANDTHS = Coordinates.thousandths()


@dataclass(frozen=True)
class _Tagged:
    """A tag dialect: an optional label tag, then one or more box tags, on a fixed scale."""

    name: str
    ref: re.Pattern[str]  # group 1: the label
    box: re.Pattern[str]  # group 1: one or more boxes
    scale: float

    @property
    def chain(self) -> re.Pattern[str]:
        return re.compile(rf"(?:{self.ref.pattern}\s*)?(?:{self.box.pattern}\s*)+")


TAGGED = (
    _Tagged(
        "Qwen2-VL",
        re.compile(r"<\|object_ref_start\|>([^<]*)<\|object_ref_end\|>"),
        re.compile(r"<\|box_start\|>([^<]*)<\|box_end\|>"),
        1000.0,
    ),
    # DeepSeek-VL2 normalises to 0-999 (paper; deepseek-ai/DeepSeek-VL2 issue #60).
    _Tagged(
        "DeepSeek-VL2",
        re.compile(r"<\|ref\|>([^<]*)<\|/ref\|>"),
        re.compile(r"<\|det\|>([^<]*)<\|/det\|>"),
        999.0,
    ),
    # MedMO is Qwen3-VL-8B-Instruct fine-tuned (genmilab/MedMO README: Qwen3VLForConditionalGeneration)
    # and keeps Qwen3-VL's relative 0-1000 grid; its README's sample answer
    # "Fractures <box>[[156, 516, 231, 607], [240, 529, 296, 581]]</box>" fits it. Its paper
    # (arXiv 2602.06965) states no other scale that we could find.
    _Tagged("MedMO", re.compile(r"<ref>([^<]*)</ref>"), re.compile(r"<box>([^<]*)</box>"), 1000.0),
)

# Control tokens that carry nothing: DeepSeek-VL2's task prefix and end-of-turn tokens.
_NOISE = re.compile(r"<\|grounding\|>|<\|im_(?:start|end)\|>|<\|endoftext\|>|<[|｜]end▁of▁sentence[|｜]>")
_FENCE = re.compile(r"```[\w-]*")
_JSON_START = re.compile(r"\{\s*[\"}]|\[\s*[{\]]")  # where our JSON can begin: {"..., {}, [{..., []
_BRACKET_OR_QUOTE = re.compile(r"[\"\[\]{}]")
_STRING_REST = re.compile(r"[^\"\\]*(?:\\.[^\"\\]*)*\"", re.DOTALL)
_CLOSER = {"{": "}", "[": "]"}
_TRAILING_COMMA = re.compile(r",\s*([\]}])")
_GROUP = re.compile(r"[\[(]([^\[\]()]*)[\])]")
_SEPARATORS = re.compile(r"[\s,\[\]()]+")
_SENTENCE_END = re.compile(r"[.!?;:]\s")
_LIST_MARK = re.compile(r"(?m)^[ \t]*(?:[-*•]|\d+[.)])(?:\s+|$)")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_FAILED = object()

# JSON keys holding a box, and the scale each is on (None: the model's ``Coordinates``).
BOX_KEYS: tuple[tuple[str, tuple[float, float] | None], ...] = (
    ("box", THOUSANDTHS_SCALE),  # ours: prompts.FINDINGS_SCHEMA asks for thousandths
    ("bbox_2d", None),
    ("bbox", None),
)
_ITEM_KEYS = {"label", "description", *(key for key, _ in BOX_KEYS)}

LATERALITY_WORDS = {
    "left": "left", "l": "left", "lt": "left",
    "right": "right", "r": "right", "rt": "right",
    "bilateral": "bilateral", "b": "bilateral", "bilat": "bilateral", "both": "bilateral",
    "left and right": "bilateral", "right and left": "bilateral",
    "unilateral": "unilateral",
}  # fmt: skip


def parse(
    text: str, coords: Coordinates = THOUSANDTHS, trace_marks: tuple[tuple[str, str], ...] = THINK_MARKS
) -> Described:
    """Findings, boxes as fractions of the image shown, from one model answer in any dialect;
    its reasoning trace (between ``trace_marks``) kept apart and never read for findings.

    Never raises on what the model said: what cannot become a finding is counted and kept.
    """
    if not isinstance(coords, Coordinates):
        raise TypeError(f"coords must be a Coordinates, got {type(coords).__name__}")
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    if not isinstance(text, str) or not text.strip():
        return Described()
    trace, text = split_trace(text, trace_marks)
    try:
        described = _parse(text, coords) if text.strip() else Described()
    # A parser bug must not cost a study its answer: the text is kept, the bug logged.
    except Exception:  # noqa: BLE001
        _log.warning("grounding_parser_failed", exc_info=True, extra={"fields": {"chars": len(text)}})
        described = Described(unparsed=1, free_text=(_clip(text.strip()),))
    return replace(described, trace=trace) if trace else described


def split_trace(text: str, marks: tuple[tuple[str, str], ...] = THINK_MARKS) -> tuple[tuple[str, ...], str]:
    """(the trace pieces, the answer without them). Tags match in any letter case."""
    pieces: list[str] = []
    for open_tag, close_tag in marks:
        opening = re.compile(re.escape(open_tag), re.IGNORECASE)
        closing = re.compile(re.escape(close_tag), re.IGNORECASE)
        first_close, first_open = closing.search(text), opening.search(text)
        if first_close and (first_open is None or first_close.start() < first_open.start()):
            pieces.append(text[: first_close.start()])  # the template opened it: all before is trace
            text = text[first_close.end() :]
        kept: list[str] = []
        at = 0
        while start := opening.search(text, at):
            kept.append(text[at : start.start()])
            end = closing.search(text, start.end())
            if end is None:  # never closed: the answer was cut inside its trace
                pieces.append(text[start.end() :])
                at = len(text)
                break
            pieces.append(text[start.end() : end.start()])
            at = end.end()
        kept.append(text[at:])
        text = "".join(kept)
    trace = tuple(clip_trace(p) for p in pieces if p.strip())
    return trace, text


def clip_trace(text: str) -> str:
    """One piece of reasoning trace, trimmed and bounded."""
    return _clip(text.strip(), TRACE_LIMIT)


class _Reading:
    """What one answer has yielded so far, by position, so the result keeps the answer's order."""

    def __init__(self) -> None:
        self.findings: list[tuple[int, RawFinding]] = []
        self.texts: list[tuple[int, str]] = []
        self.unparsed = 0

    def found(self, at: int, finding: RawFinding, boxes: list[FractionBox], bad_boxes: int) -> None:
        """One finding per usable box (or one without a box); unusable boxes are counted."""
        for box in boxes or [None]:
            self.findings.append((at, replace(finding, box=box)))
        self.unparsed += bad_boxes

    def lost(self, at: int, text: str) -> None:
        self.unparsed += 1
        if text.strip():
            self.texts.append((at, _clip(text.strip())))

    def described(self) -> Described:
        return Described(
            findings=tuple(f for _, f in sorted(self.findings, key=lambda p: p[0])),
            unparsed=self.unparsed,
            free_text=tuple(t for _, t in sorted(self.texts, key=lambda p: p[0])),
        )


def _parse(text: str, coords: Coordinates) -> Described:
    text = _NOISE.sub("", text)
    reading = _Reading()
    # JSON first, so a tag quoted inside a JSON string stays part of that string.
    spans = _read_json(text, 0, len(text), coords, reading, [SCAN_BUDGET])
    for lo, hi in _gaps(spans, len(text)):
        spans += _read_tags(text, lo, hi, reading)
    for lo, hi in _gaps(sorted(spans), len(text)):
        prose = _FENCE.sub("", text[lo:hi]).strip()
        if any(c.isalnum() for c in _LIST_MARK.sub(" ", prose)):  # not a bare "2." before a label tag
            reading.lost(lo, prose)
    return reading.described()


def _gaps(spans: list[tuple[int, int]], length: int) -> list[tuple[int, int]]:
    """The stretches of [0, length) that no (sorted, disjoint) span covers."""
    out, at = [], 0
    for lo, hi in spans:
        if lo > at:
            out.append((at, lo))
        at = max(at, hi)
    if at < length:
        out.append((at, length))
    return out


# --- JSON: ours and Qwen's -------------------------------------------------------------------


def _read_json(
    text: str, lo: int, hi: int, coords: Coordinates, reading: _Reading, budget: list[int]
) -> list[tuple[int, int]]:
    """Read every JSON value of ours in text[lo:hi]; the spans they took."""
    spans: list[tuple[int, int]] = []
    at = lo
    while budget[0] > 0 and (m := _JSON_START.search(text, at, hi)):
        decoded = _decode(text, m.start(), hi, budget)
        items = _items(decoded[0]) if decoded else None
        if decoded is None or items is None:
            at = m.start() + 1  # not ours: something ours may still sit inside it
            continue
        for item in items:
            _read_item(item, m.start(), coords, reading)
        spans.append((m.start(), decoded[1]))
        at = decoded[1]
    return spans


def _decode(text: str, start: int, hi: int, budget: list[int]) -> tuple[Any, int] | None:
    """The JSON value at text[start], and where it ends; a truncated one is closed after its
    last complete object, so an answer cut off by the token limit keeps its whole findings."""
    stack: list[str] = []
    cut: tuple[int, str] | None = None  # after the last complete inner object: (end, closers)
    at = start
    while m := _BRACKET_OR_QUOTE.search(text, at, hi):
        char, at = m.group(), m.end()
        if char == '"':
            rest = _STRING_REST.match(text, at, hi)
            if rest is None:
                break  # an unterminated string: truncated
            at = rest.end()
        elif char in _CLOSER:
            stack.append(char)
        else:
            if not stack or _CLOSER[stack.pop()] != char:
                budget[0] -= at - start
                return None  # brackets that do not pair: not JSON
            if not stack:
                budget[0] -= at - start
                value = _loads(text[start:at])
                return None if value is _FAILED else (value, at)
            if char == "}":
                cut = (at, "".join(_CLOSER[o] for o in reversed(stack)))
    budget[0] -= hi - start
    if cut is None:
        return None
    value = _loads(text[start : cut[0]] + cut[1])
    return None if value is _FAILED else (value, cut[0])


def _loads(source: str) -> Any:
    for attempt in (source, _TRAILING_COMMA.sub(r"\1", source)):
        try:
            return json.loads(attempt)
        except (ValueError, RecursionError):
            continue
    return _FAILED


def _items(value: Any) -> list[Any] | None:
    """The finding items a JSON value holds, or None when it is not one of ours."""
    if isinstance(value, dict):
        if "findings" in value:
            found = value["findings"]
            if found is None:
                return []
            return found if isinstance(found, list) else [found]
        return [value] if value.keys() & _ITEM_KEYS else None
    if isinstance(value, list) and (not value or any(_is_item(v) for v in value)):
        return value
    return None


def _is_item(value: Any) -> bool:
    return isinstance(value, dict) and bool(value.keys() & _ITEM_KEYS)


def _read_item(item: Any, at: int, coords: Coordinates, reading: _Reading) -> None:
    if not _is_item(item):
        reading.lost(at, item if isinstance(item, str) else json.dumps(item, ensure_ascii=False))
        return
    description = _text(item.get("description"))
    finding = RawFinding(
        label=_label(item.get("label")) or _label(" ".join(description.split()[:8])) or DEFAULT_LABEL,
        description=description,
        confidence=_confidence(item.get("confidence")),
        laterality=_laterality(item.get("laterality")),
        location=_text(item.get("location")) or None,
    )
    for key, scale in BOX_KEYS:
        if key in item:
            value = item[key]
            if value is None or value == [] or value == "":
                break  # the model says it has no location: not an unusable box
            candidates = _candidates(value)
            boxes = [b for b in (_fraction(c, scale or coords.scale) for c in candidates) if b]
            reading.found(at, finding, boxes, len(candidates) - len(boxes))
            return
    reading.found(at, finding, [], 0)


def _candidates(value: Any) -> list[Any]:
    """The boxes a JSON box value holds: [x1, y1, x2, y2], [[...], [...]], or their text."""
    if isinstance(value, str):
        return list(_groups(value))
    if isinstance(value, list) and value and all(isinstance(v, list) for v in value):
        return value
    return [value]


# --- tags: Qwen2-VL, DeepSeek-VL2, MedMO ---------------------------------------------------


def _read_tags(text: str, lo: int, hi: int, reading: _Reading) -> list[tuple[int, int]]:
    """Read every tag chain (label tag, box tags) in text[lo:hi]; the spans they took."""
    chains = sorted(
        ((m.start(), m.end(), dialect) for dialect in TAGGED for m in dialect.chain.finditer(text, lo, hi)),
        key=lambda c: c[0],
    )
    spans: list[tuple[int, int]] = []
    previous = lo
    for start, end, dialect in chains:
        if start < previous:
            continue  # overlaps a chain already read
        boxes_at, label, description, taken = start, "", "", start
        if ref := dialect.ref.match(text, start, end):
            label, boxes_at = _label(ref.group(1)), ref.end()
        if not label:
            taken, phrase = _phrase_before(text, previous, start)
            label = _label(phrase)
            description = phrase if label != " ".join(phrase.split()) else ""  # clipped: keep it whole
        candidates = [
            group for box in dialect.box.finditer(text, boxes_at, end) for group in _groups(box.group(1))
        ]
        boxes = [b for b in (_fraction(c, (dialect.scale, dialect.scale)) for c in candidates) if b]
        finding = RawFinding(label=label or DEFAULT_LABEL, description=description)
        reading.found(start, finding, boxes, len(candidates) - len(boxes))
        spans.append((taken, end))
        previous = end
    return spans


def _phrase_before(text: str, lo: int, hi: int) -> tuple[int, str]:
    """The phrase a box tag follows ("1. Fractures: <box>..."): the last sentence of its line.

    Returns where the phrase (with its list marker) starts, and the phrase.
    """
    body = text[lo:hi].rstrip().rstrip(":,;.-=–—").rstrip()
    line_at = body.rfind("\n") + 1
    mark = _LIST_MARK.match(body, line_at)
    begin = mark.end() if mark else line_at
    at = max([begin, *(m.end() for m in _SENTENCE_END.finditer(body, begin))])
    phrase = body[at:].strip()
    if not phrase:
        return hi, ""
    return lo + (line_at if at == begin else at), phrase


def _groups(content: str) -> list[list[str]]:
    """The boxes in a tag's text: [[x1,y1,x2,y2], ...], (x1,y1),(x2,y2) pairs, or bare numbers."""
    groups = [_tokens(g) for g in _GROUP.findall(content)]
    rest = _GROUP.sub(" ", content)
    if any(c.isalnum() for c in rest):
        groups.append(_tokens(rest))  # bare numbers, or a bracket left open
    if len(groups) > 1 and all(len(g) == 2 for g in groups):  # Qwen2-VL corners
        groups = [a + b for a, b in zip(groups[::2], groups[1::2])] + groups[len(groups) // 2 * 2 :]
    return groups or [[]]


def _tokens(group: str) -> list[str]:
    return [t for t in _SEPARATORS.split(group) if t]


# --- values ---------------------------------------------------------------------------------


def _fraction(values: Any, scale: tuple[float, float]) -> FractionBox | None:
    """Corners on ``scale`` as an ordered box of fractions clipped to the image; None if unusable."""
    if not isinstance(values, (list, tuple)) or len(values) != 4:
        return None
    numbers = [_number(v) for v in values]
    if None in numbers:
        return None
    x1, y1, x2, y2 = (n for n in numbers if n is not None)
    xs = sorted(min(max(v / scale[0], 0.0), 1.0) for v in (x1, x2))
    ys = sorted(min(max(v / scale[1], 0.0), 1.0) for v in (y1, y2))
    if xs[1] <= xs[0] or ys[1] <= ys[0]:
        return None
    return (xs[0], ys[0], xs[1], ys[1])


def _number(value: Any) -> float | None:
    """A finite float from a JSON number or numeric text; None for anything else."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        number = float(value.strip() if isinstance(value, str) else value)
    except (ValueError, OverflowError):
        return None
    return number if math.isfinite(number) else None


def _confidence(value: Any) -> float | None:
    """[0, 1] as given, 1-100 as a percentage, "85%" as 0.85; None for anything else."""
    percent = isinstance(value, str) and value.strip().endswith("%")
    number = _number(value.strip().removesuffix("%") if isinstance(value, str) else value)
    if number is None or number < 0:
        return None
    if percent or 1 < number <= 100:
        number /= 100
    return number if number <= 1 else None


def _laterality(value: Any) -> str | None:
    """left, right, bilateral or unilateral (CID 244) from "L", "Right side", "right-sided", "both"; else None."""
    if not isinstance(value, str):
        return None
    words = [w for w in re.findall(r"[a-z]+", value.lower()) if w not in ("side", "sided", "sides")]
    return LATERALITY_WORDS.get(" ".join(words))


def _label(value: Any) -> str:
    """A label: one line, whitespace collapsed, no backslash (DICOM LO), at most 64 characters."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        return ""
    text = " ".join(_CONTROL.sub(" ", str(value)).replace("\\", "/").split())
    return text[:LABEL_LIMIT].rstrip()


def _text(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        return ""
    return _clip(str(value).strip())


def _clip(text: str, limit: int = TEXT_LIMIT) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"
