"""The official ``openai`` client, unchanged, against a live server on 127.0.0.1."""

from __future__ import annotations

import base64
import io

import PIL.Image
import pytest

import chameleon_sdk as cs

openai = pytest.importorskip("openai", reason="the openai client is a test extra")


def _image_part() -> dict:
    buf = io.BytesIO()
    PIL.Image.new("RGB", (16, 16), (30, 160, 30)).save(buf, format="JPEG")
    uri = "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()
    return {"type": "image_url", "image_url": {"url": uri}}


def _messages() -> list[dict]:
    return [{"role": "user", "content": [{"type": "text", "text": "what is in"}, _image_part()]}]


def _client(base: str, key: str = "k-123") -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0, timeout=60)


def test_chat_completion_with_an_image(served_pipe, live_server):
    base = live_server(cs.serve.create_app(served_pipe, api_key="k-123"))
    completion = _client(base).chat.completions.create(model="tiny", messages=_messages(), max_tokens=12, temperature=0)
    choice = completion.choices[0]
    assert completion.object == "chat.completion" and completion.model == "tiny"
    assert choice.message.role == "assistant" and choice.finish_reason in ("stop", "length")
    # the same prompt through the pipeline: the messages' content parts in order, as a chat turn
    image = cs.Image(PIL.Image.open(io.BytesIO(base64.b64decode(_image_part()["image_url"]["url"].split(",")[1]))))
    prompt = cs.Document.of("what is in", image.image)
    expected = served_pipe.generate(prompt, max_new_tokens=12, sampler="greedy", chat=True)
    assert choice.message.content == expected.text
    assert completion.usage.prompt_tokens == len(served_pipe.tokenize(prompt, end_of_turn=True))
    assert 0 < completion.usage.completion_tokens <= 12


def test_streaming_chat_completion(served_pipe, live_server):
    base = live_server(cs.serve.create_app(served_pipe, api_key="k-123"))
    client = _client(base)
    chunks = list(
        client.chat.completions.create(
            model="tiny", messages=_messages(), max_tokens=16, temperature=0, stream=True,
            stream_options={"include_usage": True},
        )
    )  # fmt: skip
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finals in (["stop"], ["length"])
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    whole = client.chat.completions.create(model="tiny", messages=_messages(), max_tokens=16, temperature=0)
    assert text == whole.choices[0].message.content


def test_client_errors_are_typed(served_pipe, live_server):
    base = live_server(cs.serve.create_app(served_pipe, api_key="k-123", max_new_tokens=32))
    with pytest.raises(openai.AuthenticationError):
        _client(base, key="wrong").chat.completions.create(model="tiny", messages=_messages())
    with pytest.raises(openai.BadRequestError, match="exceeds this server's limit of 32"):
        _client(base).chat.completions.create(model="tiny", messages=_messages(), max_tokens=100)
    with pytest.raises(openai.BadRequestError, match="data: URI"):
        _client(base).chat.completions.create(
            model="tiny",
            messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://x/y.png"}}]}],
        )
