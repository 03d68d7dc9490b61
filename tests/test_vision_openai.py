"""The ``openai`` vision backend against a real OpenAI-compatible HTTP server on 127.0.0.1."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator

import numpy as np
import pytest
from PIL import Image

from apolo_node.config import VisionSettings
from apolo_node.findings import Algorithm
from apolo_node.imaging import ModelImage, Transform
from apolo_node.vision import prompts
from apolo_node.vision.backend import Context, RawFinding
from apolo_node.vision.backends import make_backend
from apolo_node.vision.openai_backend import (
    OpenAIBackend,
    VisionServerError,
    available,
    normalise_base_url,
)
from tests.openai_server import (
    MODELS_PATH,
    OpenAIServer,
    Received,
    Reply,
    chat_completion,
    error_body,
    serve,
)
from tests.peers import free_port

KEY = "sk-test-0123456789abcdef"
ANSWER = {
    "findings": [
        {
            "label": "nodule",
            "description": "A round opacity.",
            "box": [100, 200, 300, 500],
            "confidence": 0.8,
            "laterality": "left",
            "location": "upper lobe",
        }
    ]
}


@pytest.fixture
def server() -> Iterator[OpenAIServer]:
    yield from serve(models={"test-model": "/models/Qwen2.5-VL-7B-Instruct"})


def model_image(width: int = 96, height: int = 64, shade: int = 0) -> ModelImage:
    pixels = np.full((height, width, 3), shade, dtype=np.uint8)
    pixels[height // 4 : height // 2, width // 4 : width // 2] = 200
    return ModelImage(
        image=Image.fromarray(pixels, "RGB"),
        sop_instance_uid="2.25.1",
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        frame=1,
        transform=Transform(columns=width * 2, rows=height * 2, width=width, height=height),
    )


def backend_for(server: OpenAIServer, **kwargs: object) -> OpenAIBackend:
    options: dict[str, object] = {
        "profile": "apolo",  # our JSON and schema; the served weights are a Qwen2.5-VL
        "api_key": KEY,
        "timeout": 0.3,
        "retries": 2,
        "backoff": 0.001,
    }
    options.update(kwargs)
    return OpenAIBackend(server.url, "test-model", **options)  # type: ignore[arg-type]


def test_a_request_carries_our_prompt_schema_image_and_key(
    server: OpenAIServer,
) -> None:
    server.queue(Reply(body=chat_completion(json.dumps(ANSWER))))
    backend = backend_for(server, max_new_tokens=321)
    image = model_image(96, 64)
    described = backend.describe(image, Context(modality="CT", body_part="CHEST"))
    backend.close()

    (request,) = server.received()
    assert request.headers["authorization"] == f"Bearer {KEY}"
    body = request.json
    assert body["model"] == "test-model"
    assert body["max_tokens"] == 321
    assert body["temperature"] == 0
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {
            "name": "findings",
            "schema": prompts.FINDINGS_SCHEMA,
            "strict": True,
        },
    }
    assert body["messages"][0] == {"role": "system", "content": prompts.SYSTEM_PROMPT}
    assert "Modality: CT." in request.text() and "Body part: CHEST." in request.text()
    (sent,) = request.images()
    assert sent.format == "PNG" and sent.size == (96, 64)
    assert np.array_equal(np.asarray(sent.convert("RGB")), np.asarray(image.image))

    assert described.unparsed == 0
    (finding,) = described.findings
    assert finding == RawFinding(
        label="nodule",
        description="A round opacity.",
        box=pytest.approx((0.1, 0.2, 0.3, 0.5)),  # type: ignore[arg-type]
        confidence=0.8,
        laterality="left",
        location="upper lobe",
    )


@pytest.mark.parametrize(
    "given",
    ["{url}", "{url}/", "{root}", "{root}/", "{url}/chat/completions"],
)
def test_the_base_url_may_end_in_v1_or_not(server: OpenAIServer, given: str) -> None:
    root = server.url.removesuffix("/v1")
    backend = OpenAIBackend(given.format(url=server.url, root=root), "test-model", timeout=1.0)
    assert backend.base_url == server.url
    backend.describe(model_image(), Context())
    backend.close()
    # the chat, and the model list that names the served weights' family (auto profile)
    assert sorted(r.path for r in server.requests) == ["/v1/chat/completions", MODELS_PATH]


def test_the_backend_registry_builds_it_from_settings(server: OpenAIServer) -> None:
    settings = VisionSettings(backend="openai", model="test-model", url=server.url)
    backend = make_backend(settings)
    assert isinstance(backend, OpenAIBackend) and backend.base_url == server.url
    backend.close()


def test_settings_make_the_backend_and_no_key_means_no_authorization(
    server: OpenAIServer,
) -> None:
    settings = VisionSettings(
        backend="openai",
        model="test-model",
        url=server.url,
        timeout=2.0,
        retries=1,
        max_new_tokens=77,
        batch_size=2,
    )
    backend = OpenAIBackend.from_settings(settings)
    assert (
        backend.timeout,
        backend.retries,
        backend.max_new_tokens,
        backend.batch_size,
    ) == (2.0, 1, 77, 2)
    backend.describe(model_image(), Context())
    backend.close()
    (request,) = server.received()
    assert "authorization" not in request.headers
    assert request.json["max_tokens"] == 77
    assert available() is None


def test_a_503_is_retried_and_then_succeeds(server: OpenAIServer) -> None:
    server.queue(
        Reply(503, error_body("overloaded", 503)),
        Reply(body=chat_completion(json.dumps(ANSWER))),
    )
    backend = backend_for(server)
    described = backend.describe(model_image(), Context())
    backend.close()
    assert len(server.received()) == 2
    assert [f.label for f in described.findings] == ["nodule"]


def test_a_small_retry_after_is_honoured(server: OpenAIServer) -> None:
    server.queue(Reply(429, error_body("slow down", 429), headers={"Retry-After": "0.4"}))
    backend = backend_for(server)
    backend.describe(model_image(), Context())
    backend.close()
    first, second = server.received()
    assert second.at - first.at >= 0.4  # the backoff alone would pause about a millisecond


def test_failures_past_the_retries_raise_naming_the_url_not_the_key(
    server: OpenAIServer, caplog: pytest.LogCaptureFixture
) -> None:
    server.queue(*[Reply(500, error_body(f"engine died; key was {KEY}", 500))] * 3)
    backend = backend_for(server, retries=2)
    with (
        caplog.at_level(logging.DEBUG, logger="apolo"),
        pytest.raises(VisionServerError) as info,
    ):
        backend.describe(model_image(), Context())
    backend.close()
    message = str(info.value)
    assert server.url in message and "HTTP 500" in message and "3 attempt" in message
    assert KEY not in message and KEY not in repr(backend) and KEY not in caplog.text
    assert len(server.received()) == 3
    assert any(r.getMessage() == "vision.openai.retry" for r in caplog.records)


def test_a_client_error_is_not_retried_and_its_text_is_scrubbed_of_the_key(
    server: OpenAIServer,
) -> None:
    server.queue(Reply(401, error_body(f"invalid key {KEY}", 401, "AuthenticationError")))
    backend = backend_for(server)
    with pytest.raises(VisionServerError, match=r"HTTP 401, not retried: .*invalid key <api_key>"):
        backend.describe(model_image(), Context())
    backend.close()
    assert len(server.received()) == 1


def test_a_refused_response_format_falls_back_once_and_is_remembered(
    server: OpenAIServer, caplog: pytest.LogCaptureFixture
) -> None:
    server.queue(
        Reply(
            400,
            error_body("1 validation error: response_format json_schema is not supported"),
        ),
        Reply(body=chat_completion(json.dumps(ANSWER))),
        Reply(body=chat_completion(json.dumps(ANSWER))),
    )
    backend = backend_for(server, retries=0)  # the fallback is not a retry
    with caplog.at_level(logging.INFO, logger="apolo"):
        first = backend.describe(model_image(), Context())
        second = backend.describe(model_image(), Context())
    backend.close()
    sent = [r.json for r in server.received()]
    assert ["response_format" in b for b in sent] == [True, False, False]
    assert [f.label for f in first.findings] == [f.label for f in second.findings] == ["nodule"]
    refusals = [
        r for r in caplog.records if r.getMessage() == "vision.openai.response_format_refused"
    ]
    assert len(refusals) == 1


def test_a_400_about_something_else_is_an_error_not_a_fallback(
    server: OpenAIServer,
) -> None:
    server.queue(Reply(400, error_body("max_tokens must be at least 1")))
    backend = backend_for(server)
    with pytest.raises(VisionServerError, match="HTTP 400"):
        backend.describe(model_image(), Context())
    backend.close()
    assert len(server.received()) == 1


def test_a_slow_server_times_out_is_retried_then_raises(server: OpenAIServer) -> None:
    server.queue(*[Reply(body=chat_completion("{}"), delay=1.0)] * 2)
    backend = backend_for(server, timeout=0.3, retries=1)
    started = time.monotonic()
    with pytest.raises(VisionServerError, match=r"2 attempt.*Timeout"):
        backend.describe(model_image(), Context())
    backend.close()
    assert len(server.received()) == 2
    assert time.monotonic() - started < 1.5  # two 0.3 s waits, not the server's 1 s each


def test_a_server_that_is_not_there_is_retried_then_raises() -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    backend = OpenAIBackend(url, "test-model", timeout=0.3, retries=1, backoff=0.001)
    with pytest.raises(VisionServerError, match=r"127\.0\.0\.1.*2 attempt.*ConnectError"):
        backend.describe(model_image(), Context())
    backend.close()


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (chat_completion("I am sorry, I cannot help with that."), "I am sorry"),
        (chat_completion(None, finish_reason="length"), "no content"),
        ({"id": "x", "object": "chat.completion", "choices": []}, "no choices"),
        ("not json at all", "not a JSON object"),
    ],
    ids=["garbage", "no-content", "no-choices", "not-json"],
)
def test_an_answer_without_findings_is_counted_unparsed(
    server: OpenAIServer, body: object, why: str
) -> None:
    server.queue(Reply(body=body))
    backend = backend_for(server)
    described = backend.describe(model_image(), Context())
    backend.close()
    assert described.findings == ()
    assert described.unparsed == 1
    assert any(why in text for text in described.free_text)


def test_a_batch_answers_in_order_when_the_server_answers_out_of_order(
    server: OpenAIServer,
) -> None:
    widths = [64, 80, 96]

    def respond(request: Received) -> Reply | None:
        if request.path != "/v1/chat/completions":
            return None
        width = request.images()[0].size[0]
        index = widths.index(width)
        answer = {"findings": [{"label": f"image {index}", "description": ""}]}
        return Reply(body=chat_completion(json.dumps(answer)), delay=0.3 - 0.1 * index)

    server.responder = respond
    backend = backend_for(server, batch_size=3, timeout=2.0)
    images = [model_image(w, 48) for w in widths]
    contexts = [Context(frame=i + 1, frames=3) for i in range(3)]
    described = backend.describe_batch(images, contexts)
    backend.close()

    assert [d.findings[0].label for d in described] == ["image 0", "image 1", "image 2"]
    answered = [r.images()[0].size[0] for r in server.answered if r.path != MODELS_PATH]
    assert answered == [96, 80, 64]  # the last image's answer came first
    arrivals = [r.at for r in server.received()]
    assert max(arrivals) - min(arrivals) < 0.1  # all three were sent at once


def test_describe_batch_needs_one_context_per_image(server: OpenAIServer) -> None:
    backend = backend_for(server)
    with pytest.raises(ValueError, match="one context per image, got 2 images and 1 contexts"):
        backend.describe_batch([model_image(), model_image()], [Context()])
    backend.close()


def test_the_algorithm_version_names_the_served_weights_fetched_once(
    server: OpenAIServer,
) -> None:
    backend = backend_for(server)
    assert backend.algorithm == Algorithm("test-model", "/models/Qwen2.5-VL-7B-Instruct")
    assert backend.algorithm.version == "/models/Qwen2.5-VL-7B-Instruct"
    backend.close()
    models = server.received(MODELS_PATH)
    assert len(models) == 1 and models[0].headers["authorization"] == f"Bearer {KEY}"


def test_the_algorithm_version_is_unknown_when_the_server_does_not_say(
    server: OpenAIServer,
) -> None:
    server.queue(Reply(404, error_body("no such route", 404)), path=MODELS_PATH)
    backend = backend_for(server)
    assert backend.algorithm == Algorithm("test-model", "unknown")
    backend.close()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"url": "ftp://host/v1"}, "url must be an http"),
        ({"model": " "}, "model must name the served model"),
        ({"timeout": 0}, "timeout must be a number of seconds > 0, got 0"),
        ({"retries": -1}, "retries must be an integer >= 0, got -1"),
        ({"batch_size": 0}, "batch_size must be an integer >= 1, got 0"),
    ],
)
def test_the_constructor_refuses_bad_arguments(kwargs: dict[str, object], match: str) -> None:
    args: dict[str, object] = {"url": "http://127.0.0.1:8000/v1", "model": "m"}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        OpenAIBackend(**args)  # type: ignore[arg-type]


def test_credentials_in_the_url_are_never_shown() -> None:
    backend = OpenAIBackend("http://user:hunter2@127.0.0.1:9/v1", "m", api_key=KEY)
    assert "hunter2" not in repr(backend) and KEY not in repr(backend)
    assert repr(backend) == "OpenAIBackend(url='http://127.0.0.1:9/v1', model='m', profile='auto', api_key=<set>)"
    backend.close()


def test_normalise_base_url() -> None:
    assert (
        normalise_base_url("https://gpu.example:8443/openai/v1/")
        == "https://gpu.example:8443/openai/v1"
    )
    assert normalise_base_url("http://h:8000") == "http://h:8000/v1"
