"""The ``transformers`` answerer: a causal language model run in this process.

``[reasoning] model`` names a hub id (offline, it must be in the cache) or a local folder;
``AutoTokenizer`` and ``AutoModelForCausalLM`` load it, its own chat template frames
``prompts.messages``, and ``generate`` answers greedily. A thinking model's ``<think>...</think>``
goes to the trace (``citations.split_trace``), the rest is the answer, whose citations are
checked against the evidence. torch and transformers are the ``ml`` extra, imported only here.
"""

from __future__ import annotations

import time
from pathlib import Path

from apolo_node.config import ReasoningSettings
from apolo_node.hf_local import (
    DTYPES,
    first_line,
    ml_problem,
    progress_bars_off,
    resolve_device,
    torch_dtype,
)
from apolo_node.logs import event, get_logger
from apolo_node.reasoning import prompts
from apolo_node.reasoning.backend import Answer, Answerer, ReasoningUnavailable, Turn
from apolo_node.reasoning.citations import THINK_CLOSE, THINK_OPEN, resolve, split_trace
from apolo_node.reasoning.evidence import Evidence

log = get_logger("reasoning.transformers")

CUT_OFF = (
    "The model's answer was cut off while it was still reasoning; see the trace, and raise "
    "[reasoning] max_new_tokens for a complete answer."
)


def available() -> str | None:
    """None when torch and transformers 5 import; else what is missing and how to install it."""
    return ml_problem("the transformers answerer")


class TransformersAnswerer(Answerer):
    """A causal LM on this machine's CPU or GPU, prompted through its chat template."""

    def __init__(
        self, model: str, *, device: str = "auto", dtype: str = "auto", max_new_tokens: int = 1024
    ) -> None:
        if not isinstance(model, str) or not model.strip():
            raise ValueError(f"[reasoning] model must be a hub id or a local path, got {model!r}")
        if dtype not in DTYPES:
            raise ValueError(f"[reasoning] dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise ValueError(f"[reasoning] max_new_tokens must be an integer >= 1, got {max_new_tokens!r}")
        problem = available()
        if problem:
            raise ReasoningUnavailable(problem)
        import torch
        import transformers

        self._torch = torch
        self.device = resolve_device(device, torch, "reasoning", ReasoningUnavailable)
        self.max_new_tokens = max_new_tokens
        path = Path(model).expanduser()
        looks_local = path.is_dir() or model.startswith(("/", ".", "~")) or model.count("/") > 1
        if looks_local and not path.is_dir():
            raise ReasoningUnavailable(
                f"[reasoning] model {model!r} is a path, but no such folder exists (a local model is a "
                "folder holding config.json; a hub id looks like 'org/name')"
            )
        source = str(path) if looks_local else model
        started = time.perf_counter()
        try:
            with progress_bars_off():
                self.tokenizer = transformers.AutoTokenizer.from_pretrained(source)
                self.model = transformers.AutoModelForCausalLM.from_pretrained(
                    source, dtype=torch_dtype(torch, dtype)
                )
        except Exception as exc:  # noqa: BLE001 - any load failure: one clean line naming the setting
            raise ReasoningUnavailable(
                f"[reasoning] model {model!r} could not be loaded as a causal language model "
                f"(a hub id, offline only if already in the cache, or a local folder): {first_line(exc)}"
            ) from None
        if not getattr(self.tokenizer, "chat_template", None):
            raise ReasoningUnavailable(
                f"[reasoning] model {model!r} has no chat template: use an instruction-tuned (chat) model"
            )
        self.model.to(self.device).eval()
        self.name = f"transformers:{path.resolve().name if looks_local else model}"[:128]
        self._stops = self._stop_ids()
        event(log, "reasoning.transformers.loaded", model=self.name, device=self.device,
              dtype=str(self.model.dtype).removeprefix("torch."), seconds=round(time.perf_counter() - started, 3))

    @classmethod
    def from_settings(cls, settings: ReasoningSettings) -> TransformersAnswerer:
        """The answerer that ``[reasoning]`` with ``backend = "transformers"`` describes."""
        return cls(settings.model, device=settings.device, dtype=settings.dtype, max_new_tokens=settings.max_new_tokens)

    def __repr__(self) -> str:
        return f"TransformersAnswerer(model={self.name!r}, device={self.device!r})"

    def _stop_ids(self) -> frozenset[int]:
        generation, tokenizer = self.model.generation_config, self.tokenizer
        stops: set[int] = set()
        for value in (generation.eos_token_id, tokenizer.eos_token_id, generation.pad_token_id, tokenizer.pad_token_id):
            stops.update(int(v) for v in (value if isinstance(value, (list, tuple)) else [value]) if v is not None)
        return frozenset(stops)

    def prompt(self, question: str, evidence: list[Evidence], earlier: Turn | None = None) -> str:
        """The model's input text: our messages through its chat template, ready for its answer."""
        text = self.tokenizer.apply_chat_template(
            prompts.messages(question, evidence, earlier), add_generation_prompt=True, tokenize=False
        )
        return str(text)

    def generate(self, prompt: str) -> str:
        """The model's raw output for ``prompt``, up to its first stop token; think tags kept."""
        started = time.perf_counter()
        inputs = self.tokenizer(prompt, return_tensors="pt", add_special_tokens=False).to(self.device)
        with self._torch.inference_mode():
            output = self.model.generate(
                **inputs, max_new_tokens=self.max_new_tokens, do_sample=False,
                pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id,
            )
        ids = output[0, inputs["input_ids"].shape[1]:].tolist()
        end = next((k for k, token in enumerate(ids) if token in self._stops), len(ids))
        text = self.tokenizer.decode(ids[:end], skip_special_tokens=False)
        for special in self.tokenizer.all_special_tokens:  # <think> survives even where it is special
            if special not in (THINK_OPEN, THINK_CLOSE):
                text = text.replace(special, "")
        event(log, "reasoning.transformers.generated", model=self.name, new_tokens=end,
              seconds=round(time.perf_counter() - started, 3))
        return text

    def _answer(self, question: str, evidence: list[Evidence], earlier: Turn | None = None) -> Answer:
        prompt = self.prompt(question, evidence, earlier)
        raw = self.generate(prompt)
        if prompt.rfind(THINK_OPEN) > prompt.rfind(THINK_CLOSE):
            raw = THINK_OPEN + raw  # the chat template opened the thinking block itself
        trace, text = split_trace(raw)
        if not text:
            text = CUT_OFF if raw.rfind(THINK_OPEN) > raw.rfind(THINK_CLOSE) else "The model gave no answer."
        cited = resolve(text, evidence)
        return Answer(text, trace or "(the model gave no reasoning trace)", cited.citations, cited.dropped, self.name)

    def close(self) -> None:
        """Drop the model; on a GPU, hand its memory back."""
        self.model = None
        if self.device.startswith("cuda"):
            self._torch.cuda.empty_cache()
