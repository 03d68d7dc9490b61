"""The ``transformers`` vision backend: a Hugging Face image-text-to-text model in this process.

``[vision] model`` names a hub id or a local folder; ``AutoProcessor`` and
``AutoModelForImageTextToText`` load it (with ``trust_remote_code`` only where its profile says
so), the model's own chat template frames its family's prompt (``vision.profiles``, chosen by
``[vision] profile`` or from the folder's ``config.json``), and ``generate`` answers greedily, a
chunk of ``batch_size`` left-padded images at a time. Each answer is read by the profile
(``grounding.parse``, its trace apart): Qwen2.5-VL gives ``bbox_2d`` in pixels of the image its
processor resized (``image_grid_thw`` patches of 14 pixels), every other model in thousandths.

torch and transformers are an extra (``pip install 'apolo-node[ml]'``) imported only when a
model is loaded, so importing this module costs nothing. Qwen-VL processors load a video
processor that needs torchvision even to read images; without torchvision they are loaded
through a subclass that leaves video out (``video_free_processor``).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from apolo_node.config import VisionSettings
from apolo_node.findings import Algorithm
from apolo_node.hf_local import (
    DTYPES,
    first_line,
    ml_problem,
    progress_bars_off,
    resolve_device,
    torch_dtype,
)
from apolo_node.imaging import ModelImage
from apolo_node.logs import event, get_logger
from apolo_node.vision import grounding, profiles
from apolo_node.vision.backend import (
    BackendUnavailable,
    Context,
    Described,
    VisionBackend,
)

log = get_logger("vision.transformers")

ALGORITHM_TEXT_MAX = 64  # TID 4019 Algorithm Name and Version are LO
# Models whose bbox_2d are pixels of the processor's resized input (others: thousandths).
PIXEL_GROUNDED = frozenset({"qwen2_5_vl"})
# model_type -> the processor class that would load a torchvision-only video processor.
QWEN_VL_PROCESSORS = {
    "qwen2_vl": "Qwen2VLProcessor",
    "qwen2_5_vl": "Qwen2_5_VLProcessor",
    "qwen3_vl": "Qwen3VLProcessor",
    "qwen3_vl_moe": "Qwen3VLProcessor",
}


def available() -> str | None:
    """None when torch and transformers 5 import; else what is missing and how to install it."""
    return ml_problem("the transformers vision backend")


def input_size(grid_thw: Sequence[int] | Any, patch_size: int) -> tuple[int, int]:
    """(width, height) in pixels of the image a Qwen-VL processor made, from its grid.

    ``grid_thw`` is one row of ``image_grid_thw``: (frames, rows, columns) of patches, each
    ``patch_size`` pixels square, so rows 8 and columns 12 of 14-pixel patches is 168 x 112.
    """
    values = [int(v) for v in grid_thw]
    if len(values) != 3 or min(values) < 1:
        raise ValueError(f"grid_thw must be 3 positive patch counts (t, h, w), got {values}")
    if isinstance(patch_size, bool) or not isinstance(patch_size, int) or patch_size < 1:
        raise ValueError(f"patch_size must be a positive int (pixels), got {patch_size!r}")
    _, rows, columns = values
    return (columns * patch_size, rows * patch_size)


_VIDEO_FREE: dict[type, type] = {}


def video_free_processor(base: type) -> type:
    """``base`` (a Qwen-VL processor class) taking only an image processor and a tokenizer.

    transformers builds a processor's parts from its ``__init__`` signature, so a subclass
    without ``video_processor`` never reaches the torchvision-only video processor. It keeps the
    base's name, so what it saves is a stock checkpoint that loads anywhere.
    """
    shim = _VIDEO_FREE.get(base)
    if shim is None:

        def __init__(self: Any, image_processor: Any = None, tokenizer: Any = None,
                     chat_template: Any = None, **kwargs: Any) -> None:
            base.__init__(self, image_processor, tokenizer, None, chat_template=chat_template, **kwargs)

        shim = type(base.__name__, (base,), {
            "__init__": __init__,
            "__module__": __name__,
            "__qualname__": base.__name__,
            "__doc__": f"{base.__name__} without its video processor (no torchvision here).",
        })
        _VIDEO_FREE[base] = shim
    return shim


def _has_torchvision() -> bool:
    return importlib.util.find_spec("torchvision") is not None


def _register_video_free_processors(transformers: Any) -> None:
    """Route ``AutoProcessor`` for Qwen-VL configs to the video-free processors."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    for model_type, name in QWEN_VL_PROCESSORS.items():
        base = getattr(transformers, name, None)
        if base is None or model_type not in CONFIG_MAPPING:
            continue
        transformers.AutoProcessor.register(CONFIG_MAPPING[model_type], video_free_processor(base), exist_ok=True)


def _import_ml() -> tuple[Any, Any]:
    """torch and transformers, or BackendUnavailable saying what to install."""
    problem = available()
    if problem:
        raise BackendUnavailable(problem)
    import torch
    import transformers

    return torch, transformers


def _local_folder(model: str) -> Path | None:
    """The folder ``model`` names when it is a path rather than a hub id ("org/name"), else None."""
    path = Path(model).expanduser()
    if path.is_dir() or model.startswith(("/", ".", "~")) or model.count("/") > 1 or "\\" in model:
        return path
    return None


def raw_config(model: str) -> dict[str, Any] | None:
    """The model's config.json as JSON (local folder, or the hub cache / hub), read before any
    class is chosen, so a profile can say whether loading needs ``trust_remote_code``."""
    folder = _local_folder(model)
    try:
        if folder is not None:
            path = folder / "config.json"
        else:
            from transformers.utils import CONFIG_NAME, cached_file

            found = cached_file(model, CONFIG_NAME)
            if not found:
                return None
            path = Path(found)
        value = json.loads(path.read_text(encoding="utf-8"))
    except Exception:  # noqa: BLE001 - no readable config here: loading will say why
        return None
    return value if isinstance(value, dict) else None


def _load_processor(model: str, config: Any, transformers: Any, remote: bool = False) -> Any:
    """The model's processor; Qwen-VL ones through the video-free subclass without torchvision.

    A real checkpoint names its stock processor class in its files, which ``AutoProcessor``
    prefers to any registration, so the subclass is asked directly as well as registered.
    """
    name = QWEN_VL_PROCESSORS.get(getattr(config, "model_type", ""))
    if name and not _has_torchvision():
        return _video_free(name, model, transformers)
    try:
        return transformers.AutoProcessor.from_pretrained(model, trust_remote_code=remote)
    except OSError:
        # A Qwen-VL folder saved without a video processor (as a video-free one saves itself):
        # with torchvision installed the stock class asks for one; we never send video.
        if not name:
            raise
        return _video_free(name, model, transformers)


def _video_free(name: str, model: str, transformers: Any) -> Any:
    _register_video_free_processors(transformers)
    return video_free_processor(getattr(transformers, name)).from_pretrained(model)


def algorithm_for(model: str, config: Any) -> Algorithm:
    """TID 4019 identification: the hub id or the folder's name, and the weights' version.

    The version is the hub commit the files came from, else the first 12 hex digits of the
    SHA-256 of ``config.json``, so the same weights name themselves the same on every run.
    """
    folder = Path(model).expanduser()
    name = folder.resolve().name if folder.is_dir() else model.strip()
    version = getattr(config, "_commit_hash", None)
    if not version:
        from transformers.utils import CONFIG_NAME, cached_file

        config_file = folder / CONFIG_NAME if folder.is_dir() else Path(cached_file(model, CONFIG_NAME))
        version = hashlib.sha256(config_file.read_bytes()).hexdigest()[:12]
    return Algorithm(name=name[-ALGORITHM_TEXT_MAX:], version=str(version)[:ALGORITHM_TEXT_MAX])


class TransformersBackend(VisionBackend):
    """A vision-language model run by transformers on this machine's CPU or GPU."""

    def __init__(
        self,
        model: str,
        *,
        device: str = "auto",
        dtype: str = "auto",
        max_new_tokens: int = 512,
        batch_size: int = 4,
        profile: str = "auto",
    ) -> None:
        if not isinstance(model, str) or not model.strip():
            raise ValueError(f"[vision] model must be a hub id or a local path, got {model!r}")
        profiles.choose(profile, model)  # an unknown profile is refused before anything loads
        if dtype not in DTYPES:
            raise ValueError(f"[vision] dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
        for key, value in (("max_new_tokens", max_new_tokens), ("batch_size", batch_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"[vision] {key} must be an integer >= 1, got {value!r}")
        torch, transformers = _import_ml()
        self._torch = torch
        self.model_ref = model
        self.device = resolve_device(device, torch, "vision", BackendUnavailable)
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        started = time.perf_counter()
        folder = _local_folder(model)
        if folder is not None and not folder.is_dir():
            raise BackendUnavailable(
                f"[vision] model {model!r} is a path, but no such folder exists (a local model is a "
                "folder holding config.json; a hub id looks like 'org/name')"
            )
        source = str(folder) if folder is not None else model
        self.profile = profiles.choose(profile, source, raw_config(source))
        remote = self.profile.trust_remote_code
        try:
            with progress_bars_off():
                config = transformers.AutoConfig.from_pretrained(source, trust_remote_code=remote)
                self.processor = _load_processor(source, config, transformers, remote)
                self.model = transformers.AutoModelForImageTextToText.from_pretrained(
                    source, config=config, dtype=torch_dtype(torch, dtype), trust_remote_code=remote
                )
                self.algorithm = algorithm_for(source, self.model.config)
        except Exception as exc:  # noqa: BLE001 - any load failure: one clean line naming the setting
            hint = (
                " (DeepSeek-VL2 checkpoints need DeepSeek's deepseek_vl2 package for their model "
                "class; or serve the model with vLLM and use backend = 'openai')"
                if self.profile.name == "deepseek_vl2" else ""
            )
            raise BackendUnavailable(
                f"[vision] model {model!r} could not be loaded as an image-text-to-text model "
                f"(a hub id, offline only if already in the cache, or a local folder; profile "
                f"{self.profile.name}): {first_line(exc)}{hint}"
            ) from None
        if not hasattr(self.processor, "image_processor"):
            raise BackendUnavailable(
                f"[vision] model {model!r} has no image processor (its processor loaded as "
                f"{type(self.processor).__name__}): it cannot read images"
            )
        self.model.to(self.device).eval()
        self.processor.tokenizer.padding_side = "left"  # batched generation continues every row's end
        self.model_type = str(self.model.config.model_type)
        self.patch_size = int(getattr(self.processor.image_processor, "patch_size", 14) or 14)
        self._stops = self._stop_ids()
        event(log, "vision.transformers.loaded", model=self.algorithm.name, version=self.algorithm.version,
              model_type=self.model_type, profile=self.profile.name, device=self.device, dtype=str(self.model.dtype).removeprefix("torch."),
              seconds=round(time.perf_counter() - started, 3))

    @classmethod
    def from_settings(cls, settings: VisionSettings) -> TransformersBackend:
        """The backend that ``[vision]`` with ``backend = "transformers"`` describes."""
        return cls(
            settings.model,
            device=settings.device,
            dtype=settings.dtype,
            max_new_tokens=settings.max_new_tokens,
            batch_size=settings.batch_size,
            profile=settings.profile,
        )

    def __repr__(self) -> str:
        return (
            f"TransformersBackend(model={self.model_ref!r}, device={self.device!r}, "
            f"profile={self.profile.name!r})"
        )

    def _stop_ids(self) -> frozenset[int]:
        """Token ids that end an answer: eos, and the pad that generate fills finished rows with."""
        generation = self.model.generation_config
        tokenizer = self.processor.tokenizer
        stops: set[int] = set()
        for value in (generation.eos_token_id, tokenizer.eos_token_id, generation.pad_token_id, tokenizer.pad_token_id):
            stops.update(int(v) for v in (value if isinstance(value, (list, tuple)) else [value]) if v is not None)
        return frozenset(stops)

    # -- describing ---------------------------------------------------------------------------
    def messages(self, image: ModelImage, context: Context) -> list[dict[str, Any]]:
        """The chat for one image as the model's profile asks: its system prompt (if any), then
        the image and its question in the family's order."""
        picture = image.image if image.image.mode == "RGB" else image.image.convert("RGB")
        return self.profile.messages(context, {"type": "image", "image": picture})

    def encode(self, images: Sequence[ModelImage], contexts: Sequence[Context]) -> Any:
        """The model inputs for one chunk, left-padded, on the model's device: what generate sees."""
        inputs = self.processor.apply_chat_template(
            [self.messages(i, c) for i, c in zip(images, contexts)],
            add_generation_prompt=True,
            tokenize=True,
            return_dict=True,
            return_tensors="pt",
            processor_kwargs={"padding": True},
        )
        return inputs.to(device=self.device, dtype=self.model.dtype)

    def describe_batch(self, images: Sequence[ModelImage], contexts: Sequence[Context]) -> list[Described]:
        if len(images) != len(contexts):
            raise ValueError(
                f"describe_batch needs one context per image, got {len(images)} images and {len(contexts)} contexts"
            )
        out: list[Described] = []
        for lo in range(0, len(images), self.batch_size):
            chunk = slice(lo, lo + self.batch_size)
            out.extend(self._describe_chunk(images[chunk], contexts[chunk]))
        return out

    def answers(
        self, images: Sequence[ModelImage], contexts: Sequence[Context]
    ) -> tuple[list[str], list[grounding.Coordinates]]:
        """The raw answer text of each image of one chunk, and the coordinates it is read with."""
        started = time.perf_counter()
        inputs = self.encode(images, contexts)
        with self._torch.inference_mode():
            output = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False)
        answers = [self._answer_ids(row) for row in output[:, inputs["input_ids"].shape[1]:].tolist()]
        tokenizer = self.processor.tokenizer
        texts = [tokenizer.decode(ids, skip_special_tokens=False).strip() for ids in answers]
        coords = [self.coordinates(inputs, k) for k in range(len(texts))]
        event(log, "vision.transformers.generated", model=self.algorithm.name, images=len(texts),
              new_tokens=sum(len(ids) for ids in answers), seconds=round(time.perf_counter() - started, 3))
        return texts, coords

    def _describe_chunk(self, images: Sequence[ModelImage], contexts: Sequence[Context]) -> list[Described]:
        texts, coords = self.answers(images, contexts)
        return [self.profile.parse(text, c) for text, c in zip(texts, coords)]

    def _answer_ids(self, ids: list[int]) -> list[int]:
        """The answer up to its first stop token; special tokens before it (grounding's
        <|box_start|>...) are kept, as ``skip_special_tokens`` would drop them."""
        end = next((k for k, token in enumerate(ids) if token in self._stops), len(ids))
        return ids[:end]

    def coordinates(self, inputs: Any, index: int) -> grounding.Coordinates:
        """How the answer to image ``index`` of ``inputs`` (from ``encode``) places its bbox_2d."""
        pixels = self.profile.bbox == "pixels" or (self.profile.bbox is None and self.model_type in PIXEL_GROUNDED)
        if pixels and "image_grid_thw" in inputs:
            width, height = input_size(inputs["image_grid_thw"][index].tolist(), self.patch_size)
            return grounding.Coordinates.pixels(width, height)
        return grounding.Coordinates.thousandths()

    def close(self) -> None:
        """Drop the model; on a GPU, hand its memory back."""
        self.model = None
        if self.device.startswith("cuda"):
            self._torch.cuda.empty_cache()
