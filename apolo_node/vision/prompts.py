"""What we ask a vision-language model, and the JSON schema of the answer we want.

Our own dialect: profile ``apolo`` of ``vision.profiles``, which holds every family's prompt.
The JSON schema is sent as ``response_format`` where the server supports it, and the parser
(``vision.grounding``) reads it and every grounding dialect besides.
"""

from __future__ import annotations

from typing import Any

from apolo_node.vision.backend import Context

# Boxes in our own schema are thousandths of the image's width and height (0-1000), the scale
# Qwen2-VL/Qwen3-VL were trained on, and one no resize can change.
FINDINGS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "findings": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "label": {"type": "string", "description": "short name of the finding"},
                    "description": {"type": "string"},
                    "box": {
                        "type": "array",
                        "items": {"type": "number", "minimum": 0, "maximum": 1000},
                        "minItems": 4,
                        "maxItems": 4,
                        "description": "[x1, y1, x2, y2] in thousandths of image width and height",
                    },
                    "confidence": {"type": "number", "minimum": 0, "maximum": 1},
                    "laterality": {"type": "string", "enum": ["left", "right", "bilateral", "unilateral"]},
                    "location": {"type": "string"},
                },
                "required": ["label", "description"],
                "additionalProperties": False,
            },
        }
    },
    "required": ["findings"],
    "additionalProperties": False,
}

SYSTEM_PROMPT = (
    "You are a radiology image analysis assistant. You see one de-identified image. "
    "List the findings you can see, each with a short label, a one-sentence description, "
    "and a bounding box. Answer only with JSON: "
    '{"findings": [{"label": str, "description": str, "box": [x1, y1, x2, y2], '
    '"confidence": number 0-1, "laterality": "left"|"right"|"bilateral"|"unilateral", '
    '"location": str}]} where box coordinates are thousandths (0-1000) of the image width '
    'and height. If there is nothing to report, answer {"findings": []}.'
)


TASK = "Describe the findings in this image as JSON."


def context_lines(context: Context) -> list[str]:
    """The de-identified context that helps reading an image, one sentence each."""
    parts = []
    if context.modality:
        parts.append(f"Modality: {context.modality}.")
    if context.body_part:
        parts.append(f"Body part: {context.body_part}.")
    if context.frames > 1:
        parts.append(f"Frame {context.frame} of {context.frames}.")
    if context.tile:
        parts.append("This is an enlarged region of a larger image.")
    return parts


def user_prompt(context: Context) -> str:
    """The question for one image in our JSON dialect, with its context (profile ``apolo``)."""
    return " ".join([*context_lines(context), TASK])
