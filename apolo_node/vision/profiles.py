"""Model profiles: how each model family is asked, and how its answer is read.

A vision-language model answers best in the dialect it was trained on, so each family has a
profile: the prompt (system and task), where the image goes in the user turn, how bare ``bbox_2d``
JSON is scaled, which tags mark its reasoning trace, and whether its checkpoint needs
``trust_remote_code``. ``[vision] profile`` names one, or ``auto`` picks it from the model's
``config.json`` (``model_type`` / ``architectures``) or, for a served model, from its name.
Both model backends (transformers and openai) ask and read through the same profile.

What each family was trained to answer (checked against the model cards and chat templates):

- ``apolo``: our JSON (``prompts.FINDINGS_SCHEMA``, boxes in thousandths); any model that follows
  instructions, and the one profile that sends the schema as ``response_format``.
- ``qwen2_5_vl``: Qwen2.5-VL's grounding JSON ``[{"bbox_2d": [x1, y1, x2, y2], "label": ...}]``
  in absolute pixels of the image its processor resized (multiples of 28 pixels).
- ``qwen3_vl``: the same JSON, on Qwen3-VL's relative 0-1000 grid.
- ``medmo``: MedMO (MBZUAI, Qwen3-VL fine-tuned): ``label <box>[[x1, y1, x2, y2], ...]</box>`` on
  0-1000, asked "Detect and localize all abnormalities in this image." (its README). Its
  ``config.json`` says ``qwen3_vl``, so ``auto`` knows it by name (``medmo`` in the id or folder).
- ``deepseek_vl2``: DeepSeek-VL2's grounded captioning: ``<|grounding|>`` starts the prompt and it
  answers ``<|ref|>label<|/ref|><|det|>[[x1, y1, x2, y2]]<|/det|>`` on 0-999. Its hub checkpoints
  carry no transformers model class: they need ``trust_remote_code`` and DeepSeek's
  ``deepseek_vl2`` package, or a server (vLLM) behind the openai backend.

Every profile marks its trace with ``<think>...</think>`` (Qwen3-VL Thinking, MedMO's GRPO-tuned
reasoning): that text is kept as the trace and never read for findings.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from apolo_node.config import VISION_PROFILES
from apolo_node.vision import grounding, prompts
from apolo_node.vision.backend import Context, Described

THINK = (("<think>", "</think>"),)

# Qwen2.5-VL's processor (preprocessor_config.json of the Qwen2.5-VL Instruct checkpoints):
# sides rounded to multiples of 28 (14-pixel patches merged 2x2), area kept in these bounds.
QWEN_FACTOR = 28
QWEN_MIN_PIXELS = 56 * 56
QWEN_MAX_PIXELS = 28 * 28 * 16384

GROUNDING_TASK = (
    "Locate every abnormal finding in this image and output their bounding boxes in JSON format, "
    'as [{"bbox_2d": [x1, y1, x2, y2], "label": "short name of the finding"}], or [] if there is '
    "none. After the JSON, state the impression in one sentence."
)


@dataclass(frozen=True)
class Profile:
    """One model family's way of being asked and answering."""

    name: str
    system: str | None  # None: the model's chat template keeps its own default
    task: str  # the request, after the de-identified context
    lead: str = ""  # a control token the prompt must start with (DeepSeek-VL2's <|grounding|>)
    image_first: bool = True  # the image part before the text part in the user turn
    # How bare bbox_2d / bbox JSON is scaled: thousandths, pixels, or None: as the model's own
    # family does (our JSON profile asks for "box", but a Qwen2.5-VL may still answer bbox_2d).
    bbox: str | None = "thousandths"
    structured: bool = False  # send our JSON schema as response_format (openai backend)
    trace_marks: tuple[tuple[str, str], ...] = THINK
    trust_remote_code: bool = False

    def user_text(self, context: Context) -> str:
        """The text of the user turn: the lead token, the de-identified context, then the task."""
        return self.lead + " ".join([*prompts.context_lines(context), self.task])

    def user_content(self, context: Context, image_part: dict[str, Any]) -> list[dict[str, Any]]:
        """The user turn's parts, image and text in the order this family was trained on."""
        text = {"type": "text", "text": self.user_text(context)}
        return [image_part, text] if self.image_first else [text, image_part]

    def messages(self, context: Context, image_part: dict[str, Any]) -> list[dict[str, Any]]:
        """The chat for one image: this family's system prompt (if any), then the user turn."""
        user = {"role": "user", "content": self.user_content(context, image_part)}
        if self.system is None:
            return [user]
        return [{"role": "system", "content": [{"type": "text", "text": self.system}]}, user]

    def coordinates(self, width: int, height: int, family: Profile | None = None) -> grounding.Coordinates:
        """How bare bbox_2d of an answer about a ``width`` x ``height`` input image are scaled;
        ``family`` (the model's own profile) decides where this profile leaves it open."""
        bbox = self.bbox if self.bbox is not None or family is None else family.bbox
        if bbox == "pixels":
            return grounding.Coordinates.pixels(width, height)
        return grounding.THOUSANDTHS

    def parse(self, text: str, coords: grounding.Coordinates | None = None) -> Described:
        """Findings, prose and trace from one answer of this family."""
        return grounding.parse(text, coords or grounding.THOUSANDTHS, trace_marks=self.trace_marks)


PROFILES: dict[str, Profile] = {
    "apolo": Profile(
        "apolo", system=prompts.SYSTEM_PROMPT, task=prompts.TASK, bbox=None, structured=True,
    ),
    "qwen2_5_vl": Profile("qwen2_5_vl", system=None, task=GROUNDING_TASK, bbox="pixels"),
    "qwen3_vl": Profile("qwen3_vl", system=None, task=GROUNDING_TASK),
    "medmo": Profile(
        "medmo", system=None,
        task="Detect and localize all abnormalities in this image. Then state the impression in one sentence.",
    ),
    "deepseek_vl2": Profile(
        "deepseek_vl2", system=None,
        task="Describe the abnormal findings in this medical image and locate each of them.",
        lead="<|grounding|>",
        trust_remote_code=True,
    ),
}
assert set(VISION_PROFILES) == {"auto", *PROFILES}, "config.VISION_PROFILES and PROFILES differ"

# model_type (config.json) -> profile; names are checked first (MedMO says qwen3_vl).
MODEL_TYPES = {
    "qwen2_5_vl": "qwen2_5_vl",
    "qwen3_vl": "qwen3_vl",
    "qwen3_vl_moe": "qwen3_vl",
    "deepseek_vl_v2": "deepseek_vl2",
}
ARCHITECTURES = {
    "Qwen2_5_VLForConditionalGeneration": "qwen2_5_vl",
    "Qwen3VLForConditionalGeneration": "qwen3_vl",
    "Qwen3VLMoeForConditionalGeneration": "qwen3_vl",
    "DeepseekVLV2ForCausalLM": "deepseek_vl2",
}
# Served names (and hub ids, folder names): the family's usual spellings.
NAMES = (
    (re.compile(r"medmo", re.I), "medmo"),
    (re.compile(r"deepseek[-_ ]?vl[-_ ]?(?:v)?2", re.I), "deepseek_vl2"),
    (re.compile(r"qwen[-_ ]?2(?:\.|_|-|p)?5[-_ ]?vl", re.I), "qwen2_5_vl"),
    (re.compile(r"qwen[-_ ]?3[-_ ]?vl", re.I), "qwen3_vl"),
)


def detect(name: str, config: Mapping[str, Any] | None = None) -> Profile:
    """The profile a model's name or its config.json points to; ours when neither says.

    Only the name's last two parts count ("org/name" of a hub id, "parent/folder" of a path),
    so a folder's location does not name its weights."""
    tail = "/".join(PurePosixPath((name or "").replace("\\", "/")).parts[-2:])
    for pattern, profile in NAMES:
        if pattern.search(tail):
            return PROFILES[profile]
    if isinstance(config, Mapping):
        model_type = config.get("model_type")
        if isinstance(model_type, str) and model_type in MODEL_TYPES:
            return PROFILES[MODEL_TYPES[model_type]]
        architectures = config.get("architectures")
        for architecture in architectures if isinstance(architectures, list) else []:
            if architecture in ARCHITECTURES:
                return PROFILES[ARCHITECTURES[architecture]]
    return PROFILES["apolo"]


def choose(setting: str, name: str, config: Mapping[str, Any] | None = None) -> Profile:
    """The ``[vision] profile`` setting resolved: a named profile, or ``auto``'s pick."""
    if setting == "auto":
        return detect(name, config)
    if setting not in PROFILES:
        raise ValueError(f"[vision] profile must be one of {', '.join(VISION_PROFILES)}, got {setting!r}")
    return PROFILES[setting]


def qwen_resized(width: int, height: int) -> tuple[int, int]:
    """(width, height) a Qwen2.5-VL processor resizes an image to (``smart_resize``): each side
    a multiple of 28, the area within its pixel bounds, the aspect kept as well as it can be."""
    if min(width, height) < 1:
        raise ValueError(f"image sizes must be >= 1, got {width} x {height}")
    h = max(QWEN_FACTOR, round(height / QWEN_FACTOR) * QWEN_FACTOR)
    w = max(QWEN_FACTOR, round(width / QWEN_FACTOR) * QWEN_FACTOR)
    if h * w > QWEN_MAX_PIXELS:
        beta = math.sqrt(height * width / QWEN_MAX_PIXELS)
        h = max(QWEN_FACTOR, math.floor(height / beta / QWEN_FACTOR) * QWEN_FACTOR)
        w = max(QWEN_FACTOR, math.floor(width / beta / QWEN_FACTOR) * QWEN_FACTOR)
    elif h * w < QWEN_MIN_PIXELS:
        beta = math.sqrt(QWEN_MIN_PIXELS / (height * width))
        h = math.ceil(height * beta / QWEN_FACTOR) * QWEN_FACTOR
        w = math.ceil(width * beta / QWEN_FACTOR) * QWEN_FACTOR
    return w, h
