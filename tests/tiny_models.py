"""Tiny random-weight models, built on the spot from real architectures: nothing is downloaded.

Each builder writes a folder that ``from_pretrained`` loads like a hub checkpoint (config,
safetensors weights, tokenizer, chat template, and for vision models the image processor), so
the backends run their real loading, templating, batching and decoding code in a second.
The weights are random but seeded, and the tokenizer is trained on a fixed text, so the same
call writes the same bytes: answers are gibberish, yet the same gibberish on every run.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

SEED = 1234
INIT_STD = 0.3  # wide enough that different images give different (random) answers
VOCAB_SIZE = 400

# Qwen's special tokens, in Qwen's order, grounding tokens included.
SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
PAD_TOKEN = "<|endoftext|>"
EOS_TOKEN = "<|im_end|>"

# ChatML, as Qwen writes it: an image part becomes the vision placeholder the processor expands.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# What the tokenizer learns its merges from: radiology prompts and answers in our JSON dialects.
_CORPUS = (
    "You are a radiology image analysis assistant. You see one de-identified image. "
    "List the findings you can see, each with a short label, a one-sentence description, "
    "and a bounding box. Answer only with JSON. "
    "Modality: CT. Modality: MR. Modality: CR. Modality: DX. Body part: CHEST. Body part: HEAD. "
    "Frame 3 of 12. Describe the findings in this image as JSON. "
    '{"findings": [{"label": "nodule", "description": "a round opacity in the right upper lobe", '
    '"box": [120, 340, 560, 780], "confidence": 0.7, "laterality": "right", "location": "lung"}]} '
    '{"findings": []} '
    '[{"bbox_2d": [12, 40, 96, 120], "label": "effusion"}] '
    "<|object_ref_start|>mass<|object_ref_end|><|box_start|>(102,230),(310,421)<|box_end|> "
    "The heart is enlarged. No pneumothorax. Left pleural effusion. Fracture of the sixth rib. "
)


_BUILT: dict[str, Path] = {}


def built_once(builder: Any, factory: Any, name: str) -> Path:
    """``builder``'s model, built once per test session (pytest's ``tmp_path_factory`` lives as
    long): several test files load the same tiny checkpoint without paying its build again.
    Tests must not change the folder, named ``name`` (the model's name in its algorithm)."""
    if name not in _BUILT or not _BUILT[name].is_dir():
        _BUILT[name] = builder(factory.mktemp("tiny-models") / name)
    return _BUILT[name]


def hub_offline() -> Iterator[None]:
    """The body of a fixture: HF_HUB_OFFLINE=1, no hub access, ever. huggingface_hub reads it
    once, at its import, so where another test imported it first, its flag is set as well."""
    before = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    constants = sys.modules.get("huggingface_hub.constants")
    flag = getattr(constants, "HF_HUB_OFFLINE", None)
    if constants is not None:
        constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = before
        if constants is not None:
            constants.HF_HUB_OFFLINE = flag


def tiny_tokenizer() -> Any:
    """A byte-level BPE tokenizer with Qwen's special tokens, ChatML template, left padding."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator([_CORPUS] * 8, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        padding_side="left",
        chat_template=CHAT_TEMPLATE,
    )


def _token_ids(tokenizer: Any) -> dict[str, int]:
    return {token: tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS}


def _text_config(tokenizer: Any, **extra: Any) -> dict[str, Any]:
    ids = _token_ids(tokenizer)
    return {
        "vocab_size": len(tokenizer),
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 4096,
        "bos_token_id": None,
        "eos_token_id": ids[EOS_TOKEN],
        "pad_token_id": ids[PAD_TOKEN],
        **extra,
    }


def _build(model_class: Any, config: Any, tokenizer: Any) -> Any:
    """The model with seeded random weights (the global RNG is left as it was)."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        model = model_class(config)
        generator = torch.Generator().manual_seed(SEED)
        with torch.no_grad():
            for _, parameter in sorted(model.named_parameters()):
                if parameter.dim() > 1:  # matrices; norms stay 1 and biases 0
                    parameter.normal_(0.0, INIT_STD, generator=generator)
    ids = _token_ids(tokenizer)
    model.generation_config.eos_token_id = ids[EOS_TOKEN]
    model.generation_config.pad_token_id = ids[PAD_TOKEN]
    return model.eval()


def tiny_qwen2_5_vl(path: Path) -> Path:
    """A ~0.2 M-parameter Qwen2.5-VL (model, tokenizer, image processor) saved in ``path``.

    A 128x128 image becomes 16 image tokens. The processor is the backend's torchvision-free
    one, saved under the stock class name, so the folder looks like a real checkpoint.
    """
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
    )
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
        Qwen2VLImageProcessorPil,
    )

    from apolo_node.vision.transformers_backend import video_free_processor

    path = Path(path)
    tokenizer = tiny_tokenizer()
    ids = _token_ids(tokenizer)
    image_processor = Qwen2VLImageProcessorPil(
        min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 16, patch_size=14, merge_size=2, temporal_patch_size=2
    )
    processor = video_free_processor(Qwen2_5_VLProcessor)(
        image_processor=image_processor, tokenizer=tokenizer, chat_template=CHAT_TEMPLATE
    )
    config = Qwen2_5_VLConfig(
        text_config=_text_config(
            tokenizer,
            rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [2, 3, 3]},
        ),
        vision_config={
            "depth": 2,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "out_hidden_size": 64,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "window_size": 112,
            "fullatt_block_indexes": [1],
        },
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True,
    )
    model = _build(Qwen2_5_VLForConditionalGeneration, config, tokenizer)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


def tiny_causal_lm(path: Path) -> Path:
    """A ~0.1 M-parameter text-only Qwen3 causal LM with the same tokenizer, saved in ``path``."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    path = Path(path)
    tokenizer = tiny_tokenizer()
    config = Qwen3Config(
        **_text_config(tokenizer, head_dim=16, rope_parameters={"rope_type": "default", "rope_theta": 1e6}),
        tie_word_embeddings=True,
    )
    model = _build(Qwen3ForCausalLM, config, tokenizer)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


# A checkpoint whose config.json maps its classes to code in the folder, as hub repositories
# with custom code do: transformers runs that code only with trust_remote_code.
_REMOTE_CONFIG = '''from transformers import Qwen2_5_VLConfig


class TinyRemoteConfig(Qwen2_5_VLConfig):
    """Qwen2.5-VL's config, from the checkpoint's own code."""
'''
_REMOTE_MODEL = '''from transformers import Qwen2_5_VLForConditionalGeneration

from .configuration_tiny_remote import TinyRemoteConfig


class TinyRemoteModel(Qwen2_5_VLForConditionalGeneration):
    """Qwen2.5-VL, from the checkpoint's own code."""

    config_class = TinyRemoteConfig
'''


def with_remote_code(folder: Path) -> Path:
    """``folder`` (a tiny Qwen2.5-VL) turned into a custom-code checkpoint: its config.json's
    ``auto_map`` names classes in files beside it, which only ``trust_remote_code`` loads."""
    import json

    folder = Path(folder)
    (folder / "configuration_tiny_remote.py").write_text(_REMOTE_CONFIG)
    (folder / "modeling_tiny_remote.py").write_text(_REMOTE_MODEL)
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {
        "AutoConfig": "configuration_tiny_remote.TinyRemoteConfig",
        "AutoModelForImageTextToText": "modeling_tiny_remote.TinyRemoteModel",
    }
    (folder / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
    return folder
