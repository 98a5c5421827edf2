"""The native API through Starlette's TestClient: results, streaming, limits, errors."""

from __future__ import annotations

import base64
import io
import json

import PIL.Image
import pytest
from starlette.testclient import TestClient

import chameleon_sdk as cs
from chameleon_sdk.serve.batcher import QueueFullError

from .conftest import IMAGE_CODES, slow_down


def _png(size=(16, 16), colour=(200, 30, 30)) -> str:
    buf = io.BytesIO()
    PIL.Image.new("RGB", size, colour).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _client(pipe, **limits) -> TestClient:
    return TestClient(cs.serve.create_app(pipe, **limits))


def _sse(response) -> list[dict]:
    return [json.loads(line[len("data: ") :]) for line in response.text.splitlines() if line.startswith("data: ")]


def test_generate_returns_what_the_pipeline_generates(served_pipe):
    prompt = cs.Document.of("a red square", PIL.Image.new("RGB", (16, 16), (0, 0, 255)))
    expected = served_pipe.generate(prompt, max_new_tokens=12, sampler="greedy")
    with _client(served_pipe) as client:
        body = {"prompt": prompt.to_json(), "max_new_tokens": 12, "sampler": "greedy"}
        response = client.post("/v1/generate", json=body)
    assert response.status_code == 200, response.text
    data = response.json()
    assert cs.Document.from_json(data["document"]) == expected
    assert data["reason"] in ("stop", "max_tokens")
    assert data["usage"]["prompt_tokens"] == len(served_pipe.tokenize(prompt))
    assert data["usage"]["completion_tokens"] >= len(expected.text and "x")


def test_stream_text_deltas_make_the_final_document(served_pipe):
    with _client(served_pipe) as client:
        body = {"prompt": "a blue", "max_new_tokens": 16, "sampler": {"name": "sample", "options": {}}, "seed": 4}
        response = client.post("/v1/stream", json=body)
    assert response.headers["content-type"].startswith("text/event-stream")
    events = _sse(response)
    assert events[-1]["type"] == "finished"
    text = "".join(e["text"] for e in events if e["type"] == "text")
    assert cs.Document.from_json(events[-1]["document"]).text == text
    assert events[-1]["usage"]["completion_tokens"] > 0


def test_stream_image_mode_sends_previews_then_the_image(served_pipe):
    with _client(served_pipe, progress_every=16) as client:
        body = {"prompt": "a circle", "mode": "image", "max_new_tokens": IMAGE_CODES + 1, "guidance": True}
        events = _sse(client.post("/v1/stream", json=body))
    kinds = [e["type"] for e in events]
    assert kinds == ["started", "progress", "progress", "progress", "progress", "done", "finished"]
    assert [e["num_codes"] for e in events if e["type"] == "progress"] == [16, 32, 48, 64]
    header, _, data = events[-2]["payload"].partition(",")
    assert header == "data:image/png;base64"
    assert PIL.Image.open(io.BytesIO(base64.b64decode(data))).size == (16, 16)
    assert events[-1]["reason"] == "done"


def test_info_and_health(served_pipe):
    with _client(served_pipe) as client:
        info = client.get("/v1/info").json()
        health = client.get("/healthz").json()
        page = client.get("/")
    assert info["modes"] == ["text", "interleaved", "image"]
    assert info["vocabulary_size"] == served_pipe.vocabulary.size
    assert info["dtype"] == "float32"  # the fixture's weights, as given to create_app
    assert info["compile"] is False
    assert {"kind": "sampler", "name": "greedy", "provider": info["plugins"][0]["provider"]} in [
        {**p, "provider": info["plugins"][0]["provider"]} for p in info["plugins"]
    ]
    assert health == {"status": "ok", "running": 0, "waiting": 0, "rows_in_use": 0, "steps": 0}
    assert page.status_code == 200 and "<title>" in page.text and "/v1/stream" in page.text


def test_api_key_is_required_on_api_routes(served_pipe):
    with _client(served_pipe, api_key="s3cret") as client:
        assert client.get("/healthz").status_code == 200
        refused = client.post("/v1/generate", json={"prompt": "a"})
        wrong = client.get("/v1/info", headers={"Authorization": "Bearer nope"})
        fine = client.get("/v1/info", headers={"Authorization": "Bearer s3cret"})
    assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
    assert refused.json()["error"]["type"] == "unauthorized"
    assert wrong.status_code == 401 and fine.status_code == 200


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"prompt": "a", "max_new_tokens": 10_000}, 400, "exceeds this server's limit"),
        ({"prompt": "a", "temperature": 1}, 400, "unknown request field 'temperature'"),
        ({"prompt": "a", "mode": "video"}, 400, "unknown generation mode 'video'"),
        ({"prompt": "a", "guidance": {"scale": 2}}, 400, "unknown guidance field 'scale'"),
        ({"prompt": {"segments": [{"image_base64": "%%%"}]}}, 400, "not valid base64"),
        ({"prompt": {"segments": [{"image_base64": _png((64, 64))}]}}, 400, "decompression bomb"),
        ({"prompt": "x" * 5000}, 413, "exceeds the limit"),
        ({}, 400, "needs a 'prompt'"),
    ],
)
def test_bad_requests_get_json_errors(served_pipe, body, status, words):
    with _client(served_pipe, max_new_tokens=64, max_image_pixels=32 * 32, max_body_bytes=4096) as client:
        response = client.post("/v1/generate", json=body)
    assert response.status_code == status
    assert words in response.json()["error"]["message"]


def test_not_json_and_unknown_routes_are_json_errors(served_pipe):
    with _client(served_pipe) as client:
        bad = client.post("/v1/generate", content=b"{nope")
        missing = client.get("/v2/nothing")
        wrong_method = client.get("/v1/generate")
    assert bad.status_code == 400 and "not valid JSON" in bad.json()["error"]["message"]
    assert missing.status_code == 404 and missing.json()["error"]["code"] == 404
    assert wrong_method.status_code == 405 and "error" in wrong_method.json()


def test_full_queue_answers_503_with_retry_after(served_pipe, monkeypatch):
    app = cs.serve.create_app(served_pipe)

    def full(*args, **kwargs):
        raise QueueFullError("64 requests are already waiting for a batch row")

    monkeypatch.setattr(app.state.server.batcher, "submit", full)
    with TestClient(app) as client:
        response = client.post("/v1/generate", json={"prompt": "a"})
    assert response.status_code == 503 and response.headers["retry-after"] == "1"
    assert response.json()["error"]["type"] == "overloaded"


def test_request_timeout_stops_a_running_request(served_pipe):
    with _client(served_pipe, request_timeout=0.05) as client:
        data = client.post("/v1/generate", json={"prompt": "a", "max_new_tokens": 400, "stop": []}).json()
    assert data["reason"] == "max_time" and data["usage"]["completion_tokens"] < 400


def test_create_app_refuses_a_pipeline_without_model(served_pipe):
    served_pipe.model = None
    with pytest.raises(cs.ConfigError, match="no model"):
        cs.serve.create_app(served_pipe)


def test_a_closed_stream_frees_its_row(served_pipe, live_server, monkeypatch):
    import time

    import httpx

    slow_down(served_pipe.model, monkeypatch)  # 480 steps would take 5 s
    app = cs.serve.create_app(served_pipe)
    base = live_server(app)
    body = {"prompt": "go", "max_new_tokens": 480, "stop": []}
    with httpx.stream("POST", f"{base}/v1/stream", json=body, timeout=60) as response:
        first = next(response.iter_lines())
    assert first.startswith("data: ")
    deadline = time.monotonic() + 30
    while app.state.server.batcher.load()["running"] and time.monotonic() < deadline:
        time.sleep(0.01)
    load = app.state.server.batcher.load()
    assert load["running"] == 0 and load["steps"] < 480


def test_chat_messages_are_turns_closed_by_end_of_turn(served_pipe):
    """A multi-turn chat is the ChatPrompt of its turns (consecutive messages of one role make one
    turn), as chat fine-tuning lays conversations out; a single user message is the document with
    chat=True."""
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "a red"},
        {"role": "user", "content": [{"type": "text", "text": "square"}]},
        {"role": "assistant", "content": "a square"},
        {"role": "user", "content": "and then?"},
    ]
    prompt = cs.ChatPrompt.of(
        ("system", "be brief"), ("user", ["a red", "\n", "square"]), ("assistant", "a square"), ("user", "and then?")
    )
    expected = served_pipe.generate(prompt, max_new_tokens=10, sampler="greedy")
    with _client(served_pipe) as client:
        body = {"messages": messages, "max_tokens": 10, "temperature": 0}
        response = client.post("/v1/chat/completions", json=body)
        assert response.status_code == 200, response.text
        assert response.json()["choices"][0]["message"]["content"] == expected.text
        eot = served_pipe.vocabulary.specials["eot"]
        assert response.json()["usage"]["prompt_tokens"] == 1 + sum(  # bos, then each turn and its eot
            len(served_pipe.tokenize(turn.content, bos=False)) + 1 for turn in prompt.turns
        )
        one = served_pipe.generate("a red square", max_new_tokens=10, sampler="greedy", chat=True)
        single = cs.ChatPrompt.of(("user", "a red square"))
        assert served_pipe.generate(single, max_new_tokens=10, sampler="greedy") == one
        assert eot in served_pipe.prepare_stream(prompt).decoder.physical_prompts[0]
        bad = client.post("/v1/chat/completions", json={"messages": [*messages, {"role": "assistant", "content": "x"}]})
        assert bad.status_code == 400 and "must end with the user's turn" in bad.json()["error"]["message"]
        bad = client.post("/v1/chat/completions", json={"messages": [{"role": "tool", "content": "x"}]})
        assert bad.status_code == 400 and "role must be one of" in bad.json()["error"]["message"]
