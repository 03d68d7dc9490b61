"""The grounding parser: every dialect and scale with hand-worked boxes, mixed answers, garbage.

Boxes are fractions (x1, y1, x2, y2) of the image the model saw; each expected box below is
worked by hand from the dialect's scale (pixels of the input, 0-1000 or 0-999).
"""

from __future__ import annotations

import json
import logging
import random

import pytest

from apolo_node.findings import LATERALITIES
from apolo_node.vision.backend import Described
from apolo_node.vision.grounding import LATERALITY_WORDS, Coordinates, parse

THOUSANDTHS = Coordinates.thousandths()
QWEN25_448x336 = Coordinates.pixels(448, 336)


def boxes(described: Described) -> list[tuple[str, tuple[float, float, float, float] | None]]:
    return [(f.label, f.box) for f in described.findings]


def same(described: Described, expected: list[tuple[str, tuple[float, ...] | None]]) -> None:
    got = boxes(described)
    assert [label for label, _ in got] == [label for label, _ in expected]
    for (_, box), (_, want) in zip(got, expected, strict=True):
        assert (box is None) == (want is None), (box, want)
        if want is not None:
            assert box == pytest.approx(want)


# --- Coordinates ------------------------------------------------------------------------------


def test_coordinates_scale() -> None:
    assert Coordinates.pixels(448, 336).scale == (448.0, 336.0)
    assert Coordinates.thousandths().scale == (1000.0, 1000.0)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"kind": "pixels"}, r"width must be a positive int with kind 'pixels'.*None"),
        ({"kind": "pixels", "width": 448}, r"height must be a positive int.*None"),
        ({"kind": "pixels", "width": 0, "height": 336}, r"width .* got 0"),
        ({"kind": "pixels", "width": True, "height": 336}, r"width .* got True"),
        ({"kind": "pixels", "width": 448.0, "height": 336}, r"width .* got 448.0"),
        ({"kind": "normalised"}, r"kind must be 'pixels' or 'thousandths', got 'normalised'"),
        ({"kind": "thousandths", "width": 448, "height": 336}, r"go with kind 'pixels' only"),
    ],
)
def test_coordinates_refuse_what_cannot_scale(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Coordinates(**kwargs)  # type: ignore[arg-type]


# --- every dialect and scale, hand-worked ---------------------------------------------------

OURS = json.dumps(
    {
        "findings": [
            {
                "label": "Nodule",
                "description": "8 mm solid nodule",
                "box": [100, 200, 300, 400],
                "confidence": 0.9,
                "laterality": "right",
                "location": "right upper lobe",
            }
        ]
    }
)

DIALECTS = [
    # id, answer, coords, [(label, box)], unparsed, free_text
    ("ours", OURS, THOUSANDTHS, [("Nodule", (0.1, 0.2, 0.3, 0.4))], 0, ()),
    # "box" is ours, always thousandths, whatever the model's bbox_2d scale is
    ("ours-box-ignores-pixels", OURS, QWEN25_448x336, [("Nodule", (0.1, 0.2, 0.3, 0.4))], 0, ()),
    ("ours-fenced", f"```json\n{OURS}\n```", THOUSANDTHS, [("Nodule", (0.1, 0.2, 0.3, 0.4))], 0, ()),
    (
        "ours-with-text-around",
        f"Here is what I see:\n```json\n{OURS}\n```\nPlease correlate clinically.",
        THOUSANDTHS,
        [("Nodule", (0.1, 0.2, 0.3, 0.4))],
        2,
        ("Here is what I see:", "Please correlate clinically."),
    ),
    (
        "ours-bare-list",
        (
            '[{"label": "Effusion", "description": "", "box": [0, 500, 1000, 1000]},'
            ' {"label": "Cardiomegaly", "description": "enlarged heart"}]'
        ),
        THOUSANDTHS,
        [("Effusion", (0.0, 0.5, 1.0, 1.0)), ("Cardiomegaly", None)],
        0,
        (),
    ),
    ("ours-empty", '{"findings": []}', THOUSANDTHS, [], 0, ()),
    (
        # Qwen2.5-VL: pixels of its 448x336 input:
        # 44.8/448 = 0.1, 33.6/336 = 0.1, 224/448 = 0.5, 168/336 = 0.5
        "qwen2.5-vl-pixels",
        '```json\n[\n  {"bbox_2d": [44.8, 33.6, 224, 168], "label": "mass"}\n]\n```',
        QWEN25_448x336,
        [("mass", (0.1, 0.1, 0.5, 0.5))],
        0,
        (),
    ),
    (
        # 112/448 = 0.25, 84/336 = 0.25, 448/448 = 1, 252/336 = 0.75
        "qwen2.5-vl-pixels-two",
        '[{"bbox_2d": [112, 84, 448, 252], "label": "a"}, {"bbox_2d": [0, 0, 44.8, 336], "label": "b"}]',
        QWEN25_448x336,
        [("a", (0.25, 0.25, 1.0, 0.75)), ("b", (0.0, 0.0, 0.1, 1.0))],
        0,
        (),
    ),
    (
        # Qwen3-VL: the same JSON on 0-1000
        "qwen3-vl-thousandths",
        '[{"bbox_2d": [100, 250, 500, 750], "label": "consolidation"}]',
        THOUSANDTHS,
        [("consolidation", (0.1, 0.25, 0.5, 0.75))],
        0,
        (),
    ),
    (
        "qwen2-vl",
        "<|object_ref_start|>nodule<|object_ref_end|><|box_start|>(100,200),(300,400)<|box_end|>",
        THOUSANDTHS,
        [("nodule", (0.1, 0.2, 0.3, 0.4))],
        0,
        (),
    ),
    (
        # Qwen2-VL's 0-1000 is fixed: pixel Coordinates (for bbox_2d) do not change it
        "qwen2-vl-two-boxes-one-ref",
        (
            "<|object_ref_start|>rib fracture<|object_ref_end|>"
            "<|box_start|>(100,200),(300,400)<|box_end|> <|box_start|>(500,500),(750,1000)<|box_end|>"
        ),
        QWEN25_448x336,
        [("rib fracture", (0.1, 0.2, 0.3, 0.4)), ("rib fracture", (0.5, 0.5, 0.75, 1.0))],
        0,
        (),
    ),
    (
        # DeepSeek-VL2: 0-999; 99.9/999 = 0.1, 199.8/999 = 0.2, 499.5/999 = 0.5
        "deepseek-vl2",
        "<|grounding|><|ref|>pleural effusion<|/ref|><|det|>[[99.9, 199.8, 499.5, 999]]<|/det|>",
        THOUSANDTHS,
        [("pleural effusion", (0.1, 0.2, 0.5, 1.0))],
        0,
        (),
    ),
    (
        "deepseek-vl2-several-boxes",
        "<|ref|>nodules<|/ref|><|det|>[[0, 0, 333, 333], [666, 666, 999, 999]]<|/det|>",
        THOUSANDTHS,
        [("nodules", (0.0, 0.0, 1 / 3, 1 / 3)), ("nodules", (2 / 3, 2 / 3, 1.0, 1.0))],
        0,
        (),
    ),
    (
        # MedMO: 0-1000, its README's own sample answer; label = the phrase before the tag
        "medmo",
        "Fractures <box>[[156, 516, 231, 607], [240, 529, 296, 581]]</box>",
        THOUSANDTHS,
        [("Fractures", (0.156, 0.516, 0.231, 0.607)), ("Fractures", (0.24, 0.529, 0.296, 0.581))],
        0,
        (),
    ),
    (
        "medmo-ref",
        "<ref>Pneumothorax</ref><box>[[500, 100, 900, 600]]</box>",
        THOUSANDTHS,
        [("Pneumothorax", (0.5, 0.1, 0.9, 0.6))],
        0,
        (),
    ),
    (
        "medmo-list-of-phrases",
        (
            "Findings:\n1. Right pleural effusion: <box>[[0, 500, 500, 1000]]</box>\n"
            "2. Small nodule <box>[[600, 200, 650, 250]]</box>"
        ),
        THOUSANDTHS,
        [("Right pleural effusion", (0.0, 0.5, 0.5, 1.0)), ("Small nodule", (0.6, 0.2, 0.65, 0.25))],
        1,
        ("Findings:",),
    ),
]


@pytest.mark.parametrize(
    "answer, coords, expected, unparsed, free_text",
    [d[1:] for d in DIALECTS],
    ids=[d[0] for d in DIALECTS],
)
def test_dialect(
    answer: str,
    coords: Coordinates,
    expected: list[tuple[str, tuple[float, ...] | None]],
    unparsed: int,
    free_text: tuple[str, ...],
) -> None:
    described = parse(answer, coords)
    same(described, expected)
    assert described.unparsed == unparsed
    assert described.free_text == free_text


def test_our_schema_keeps_every_field() -> None:
    (finding,) = parse(OURS).findings
    assert finding.description == "8 mm solid nodule"
    assert finding.confidence == pytest.approx(0.9)
    assert finding.laterality == "right"
    assert finding.location == "right upper lobe"


def test_default_coordinates_are_thousandths() -> None:
    answer = '[{"bbox_2d": [100, 250, 500, 750], "label": "x"}]'
    assert parse(answer) == parse(answer, Coordinates.thousandths())
    assert parse(answer).findings[0].box == pytest.approx((0.1, 0.25, 0.5, 0.75))


def test_a_long_phrase_is_clipped_to_a_label_and_kept_as_description() -> None:
    phrase = "Consolidation with air bronchograms in the left lower lobe, likely pneumonia today"
    (finding,) = parse(f"{phrase} <box>[[0, 0, 500, 500]]</box>").findings
    assert len(finding.label) <= 64 and phrase.startswith(finding.label)
    assert finding.description == phrase


# --- mixed answers ------------------------------------------------------------------------------


def test_mixed_answer_keeps_order_and_text() -> None:
    answer = (
        "Two findings.\n"
        '```json\n[{"bbox_2d": [44.8, 33.6, 224, 168], "label": "mass"}]\n```\n'
        "<|ref|>effusion<|/ref|><|det|>[[0, 499.5, 999, 999]]<|/det|>\n"
        "Fracture <box>[[100, 100, 200, 200]]</box>\n"
        "<|object_ref_start|>nodule<|object_ref_end|><|box_start|>(0,0),(1000,500)<|box_end|>"
    )
    described = parse(answer, QWEN25_448x336)
    same(
        described,
        [
            ("mass", (0.1, 0.1, 0.5, 0.5)),
            ("effusion", (0.0, 0.5, 1.0, 1.0)),
            ("Fracture", (0.1, 0.1, 0.2, 0.2)),
            ("nodule", (0.0, 0.0, 1.0, 0.5)),
        ],
    )
    assert described.unparsed == 1
    assert described.free_text == ("Two findings.",)


def test_prose_between_structures_is_kept_in_order() -> None:
    answer = (
        "The <|object_ref_start|>nodule<|object_ref_end|><|box_start|>(100,200),(300,400)<|box_end|>"
        ' is small. Also {"label": "scar", "box": [0, 0, 100, 100]} near the apex.'
    )
    described = parse(answer)
    same(described, [("nodule", (0.1, 0.2, 0.3, 0.4)), ("scar", (0.0, 0.0, 0.1, 0.1))])
    assert described.free_text == ("The", "is small. Also", "near the apex.")
    assert described.unparsed == 3


def test_a_tag_quoted_in_a_json_string_stays_in_the_string() -> None:
    answer = '{"findings": [{"label": "mass", "description": "see <box>[[1, 2, 3, 4]]</box>", "box": null}]}'
    (finding,) = parse(answer).findings
    assert finding.description == "see <box>[[1, 2, 3, 4]]</box>" and finding.box is None


# --- values: labels, confidence, laterality ---------------------------------------------------


def one(item: dict[str, object]) -> Described:
    return parse(json.dumps({"findings": [item]}))


@pytest.mark.parametrize(
    "given, expected",
    [
        (0.9, 0.9),
        (0, 0.0),
        (1, 1.0),
        (90, 0.9),
        (100, 1.0),
        ("0.5", 0.5),
        ("85%", 0.85),
        ("0.5%", 0.005),
        (150, None),
        ("150%", None),
        (-0.1, None),
        ("high", None),
        (True, None),
        (float("nan"), None),
        (float("inf"), None),
        ([0.9], None),
        (None, None),
    ],
)
def test_confidence(given: object, expected: float | None) -> None:
    (finding,) = one({"label": "x", "confidence": given}).findings
    assert finding.confidence == (None if expected is None else pytest.approx(expected))


@pytest.mark.parametrize(
    "given, expected",
    [
        ("left", "left"),
        ("L", "left"),
        ("Lt", "left"),
        ("Right side", "right"),
        ("right-sided", "right"),
        ("R.", "right"),
        ("BILATERAL", "bilateral"),
        ("both sides", "bilateral"),
        ("left and right", "bilateral"),
        ("unilateral", "unilateral"),
        ("midline", None),
        ("unpaired", None),
        ("upper", None),
        ("left lower lobe", None),
        ("", None),
        (3, None),
        (None, None),
    ],
)
def test_laterality(given: object, expected: str | None) -> None:
    (finding,) = one({"label": "x", "laterality": given}).findings
    assert finding.laterality == expected


def test_laterality_table_speaks_findings_values() -> None:
    assert set(LATERALITY_WORDS.values()) == set(LATERALITIES)


@pytest.mark.parametrize(
    "item, label",
    [
        ({"label": "  Pleural \n\t effusion  "}, "Pleural effusion"),
        ({"label": "x" * 100}, "x" * 64),
        ({"label": "a\\b"}, "a/b"),
        ({"label": "a\x00b"}, "a b"),
        (
            {"label": "", "description": "Small left pleural effusion with a meniscus sign and more words"},
            "Small left pleural effusion with a meniscus sign",
        ),
        ({"label": "   ", "box": [0, 0, 10, 10]}, "finding"),
        ({"label": None, "description": ""}, "finding"),
        ({"label": 42, "description": ""}, "42"),
        ({"label": {"text": "x"}, "box": [0, 0, 10, 10]}, "finding"),
    ],
)
def test_labels(item: dict[str, object], label: str) -> None:
    (finding,) = one(item).findings
    assert finding.label == label


# --- garbage: never raises, counts right ------------------------------------------------------

# fmt: off
GARBAGE = [
    # id, answer, findings, boxes that are None, unparsed
    ("empty", "", 0, 0, 0),
    ("blank", "  \n\t ", 0, 0, 0),
    ("prose", "No acute cardiopulmonary abnormality.", 0, 0, 1),
    ("only-a-fence", "```json\n```", 0, 0, 0),
    ("truncated-json", '{"findings": [{"label": "a", "box": [100, 100, 200, 200]}, {"label": "eff', 1, 0, 1),
    ("truncated-in-string", '[{"label": "a", "box": [1, 1, 9, 9]}, {"label": "b", "descr', 1, 0, 1),
    ("truncated-before-any-item", '{"findings": [{"label": "nod', 0, 0, 1),
    ("trailing-comma", '{"findings": [{"label": "a", "box": [0, 0, 10, 10]},]}', 1, 0, 0),
    ("findings-not-a-list", '{"findings": "none seen"}', 0, 0, 1),
    ("findings-null", '{"findings": null}', 0, 0, 0),
    ("empty-list", "[]", 0, 0, 0),
    ("not-ours", '{"answer": 42, "ok": true}', 0, 0, 1),
    ("non-dict-items", '[{"label": "a"}, 42, "text", null, [1, 2]]', 1, 1, 4),
    ("foreign-dict-item", '{"findings": [{"label": "a"}, {"foo": 1}]}', 1, 1, 1),
    ("nan-box", '{"findings": [{"label": "a", "box": [NaN, 0, 10, 10]}]}', 1, 1, 1),
    ("infinite-box", '{"findings": [{"label": "a", "box": [0, 0, 1e999, 10]}]}', 1, 1, 1),
    ("string-numbers", '{"findings": [{"label": "a", "box": ["100", "200", "300", "400"]}]}', 1, 0, 0),
    ("word-numbers", '{"findings": [{"label": "a", "box": ["one", "two", "3", "4"]}]}', 1, 1, 1),
    ("box-as-text", '{"findings": [{"label": "a", "box": "[100, 200, 300, 400]"}]}', 1, 0, 0),
    ("three-numbers", '{"findings": [{"label": "a", "box": [1, 2, 3]}]}', 1, 1, 1),
    ("box-is-a-dict", '{"findings": [{"label": "a", "box": {"x": 1}}]}', 1, 1, 1),
    ("box-null", '{"findings": [{"label": "a", "box": null}]}', 1, 1, 0),
    ("zero-width", '{"findings": [{"label": "a", "box": [100, 100, 100, 200]}]}', 1, 1, 1),
    ("outside-the-image", '{"findings": [{"label": "a", "box": [1200, 0, 1500, 500]}]}', 1, 1, 1),
    ("one-good-one-bad-box", '{"findings": [{"label": "a", "box": [[0, 0, 10, 10], [5, 5]]}]}', 1, 0, 1),
    ("huge-integer", '{"findings": [{"label": "a", "box": [0, 0, 1' + "0" * 5000 + ', 10]}]}', 0, 0, 1),
    ("tag-three-numbers", "<box>[[1, 2, 3]]</box>", 1, 1, 1),
    ("tag-empty", "<|ref|>mass<|/ref|><|det|><|/det|>", 1, 1, 1),
    ("tag-nan", "<|det|>[[nan, 0, 10, 10]]<|/det|>", 1, 1, 1),
    ("tag-odd-corner", "<|box_start|>(1,2),(3,4),(5,6)<|box_end|>", 1, 0, 1),
    ("tag-truncated", "<|ref|>nodule<|/ref|><|det|>[[100, 200", 0, 0, 1),
    ("tag-bracket-left-open", "<box>[[0, 0, 10, 10], [20, 20</box>", 1, 0, 1),
    ("ref-without-box", "<|object_ref_start|>heart<|object_ref_end|>", 0, 0, 1),
    ("deep-brackets", "[" * 20000, 0, 0, 0),
    ("deep-objects", '{"a":' * 5000, 0, 0, 1),
    ("many-open-items", "[{" * 20000, 0, 0, 0),
    ("deep-valid-json", "[" * 5000 + "]" * 5000, 0, 0, 0),
    ("control-characters", "\x00\x01\x02\ufffd\u202e", 0, 0, 0),
    ("control-characters-and-words", "\x00 garbled \ufffd", 0, 0, 1),
    ("special-tokens-only", "<|grounding|><|im_end|>", 0, 0, 0),
]
# fmt: on


@pytest.mark.parametrize(
    "answer, findings, none_boxes, unparsed", [g[1:] for g in GARBAGE], ids=[g[0] for g in GARBAGE]
)
def test_garbage_never_raises_and_counts(
    answer: str, findings: int, none_boxes: int, unparsed: int, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        described = parse(answer)
    assert "grounding_parser_failed" not in caplog.text  # counted by the parser, not its safety net
    assert len(described.findings) == findings
    assert sum(f.box is None for f in described.findings) == none_boxes
    assert described.unparsed == unparsed
    assert all(len(t) <= 2000 and t == t.strip() and t for t in described.free_text)


def test_lost_text_is_kept() -> None:
    described = parse('{"findings": [{"label": "a", "box": [1, 1, 9, 9]}, {"label": "eff')
    assert described.free_text == (', {"label": "eff',)
    assert parse('[{"label": "a"}, 42, "text"]').free_text == ("42", "text")


def test_long_prose_is_clipped() -> None:
    (text,) = parse("word " * 1000).free_text
    assert len(text) == 2000 and text.endswith("…")


@pytest.mark.parametrize("answer", [None, b'[{"label": "a", "box": [0, 0, 500, 500]}]'])
def test_what_is_not_text(answer: object) -> None:
    described = parse(answer)  # type: ignore[arg-type]
    assert len(described.findings) == (0 if answer is None else 1)


FRAGMENTS = [
    '{"findings": [', '{"label": "nodule", ', '"box": [100, 200, 300, 400]', '"bbox_2d": [1e3, -5, "7", NaN]',
    "}", "]", ",", "[", "{", '"', "\\", "```json\n", "```", "<|ref|>effusion<|/ref|>",
    "<|det|>[[0, 0, 999, 999]]",
    "<|/det|>", "<box>[[156, 516, 231, 607]]", "</box>", "<ref>mass</ref>", "<|object_ref_start|>a",
    "<|object_ref_end|>", "<|box_start|>(10,20),(30,40)", "<|box_end|>", " Fractures ", "\n1. ", "nan", "1e999",
    '"confidence": "85%"', '"laterality": "L"', ": ", "…", "\x00",
]  # fmt: skip


def test_shuffled_fragments_never_raise_and_give_valid_boxes(caplog: pytest.LogCaptureFixture) -> None:
    rng = random.Random(20240611)
    with caplog.at_level(logging.WARNING):
        for _ in range(3000):
            answer = "".join(rng.choice(FRAGMENTS) for _ in range(rng.randint(1, 30)))
            described = parse(answer, rng.choice([THOUSANDTHS, QWEN25_448x336]))
            for f in described.findings:
                assert f.label and len(f.label) <= 64
                assert f.confidence is None or 0 <= f.confidence <= 1
                assert f.laterality is None or f.laterality in LATERALITIES
                if f.box is not None:
                    x1, y1, x2, y2 = f.box
                    assert 0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1, (answer, f.box)
            assert described.unparsed >= 0
    assert "grounding_parser_failed" not in caplog.text
