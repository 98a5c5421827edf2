"""The OpenAI chat-completions wire format: requests -> a prompt and options, results -> responses.

The messages become a :class:`~chameleon_sdk.ChatPrompt`: one turn per role change (consecutive
messages of one role joined by a newline; text parts as text, ``image_url`` parts as images), each
turn closed by the end-of-turn token, as chat fine-tuning lays conversations out; the model answers
the last user turn in text mode. There is no other template: roles are not spelled out as text.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from typing import Any

import attrs

from chameleon_sdk.document import Document, Image, Text
from chameleon_sdk.errors import DocumentError, GenerationError
from chameleon_sdk.serve.schemas import decode_image, limited_tokens
from chameleon_sdk.training.chat import ROLES, ChatPrompt, Turn

__all__ = ["ChatRequest", "chat_chunk", "chat_completion"]

_IGNORED = {"model", "user", "n", "stream_options", "frequency_penalty", "presence_penalty", "logit_bias"}
_FIELDS = {"messages", "stream", "max_tokens", "max_completion_tokens", "temperature", "top_p", "stop", "seed"}


@attrs.frozen(kw_only=True)
class ChatRequest:
    """A parsed ``/v1/chat/completions`` body."""

    prompt: ChatPrompt
    options: dict[str, Any]
    model: str
    stream: bool
    include_usage: bool

    @classmethod
    def parse(cls, body: Any, *, max_pixels: int, max_new_tokens: int) -> ChatRequest:
        if not isinstance(body, Mapping):
            raise GenerationError("the request body must be a JSON object with 'messages'")
        unknown = sorted(set(body) - _FIELDS - _IGNORED)
        if unknown:
            raise GenerationError(f"unsupported field {unknown[0]!r}; supported: {sorted(_FIELDS | _IGNORED)}")
        if body.get("n", 1) != 1:
            raise GenerationError("only n=1 is supported")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise GenerationError("'messages' must be a non-empty list")
        prompt = _chat_prompt(messages, max_pixels)
        tokens = body.get("max_completion_tokens", body.get("max_tokens"))
        options: dict[str, Any] = {"mode": "text", "max_new_tokens": limited_tokens(tokens, max_new_tokens)}
        temperature, top_p = body.get("temperature"), body.get("top_p")
        if temperature == 0:
            options["sampler"] = "greedy"
        elif temperature is not None or top_p is not None:
            sampling = {k: v for k, v in (("temperature", temperature), ("top_p", top_p)) if v is not None}
            options["sampler"] = {"name": "sample", "options": sampling}
        stop = body.get("stop")
        if stop is not None:
            options["stop"] = [stop] if isinstance(stop, str) else stop
        if body.get("seed") is not None:
            options["seed"] = body["seed"]
        stream_options = body.get("stream_options") or {}
        return cls(
            prompt=prompt,
            options=options,
            model=str(body.get("model") or "chameleon"),
            stream=bool(body.get("stream", False)),
            include_usage=bool(isinstance(stream_options, Mapping) and stream_options.get("include_usage")),
        )


def _chat_prompt(messages: list[Any], max_pixels: int) -> ChatPrompt:
    """One turn per run of messages with the same role, their contents joined by a newline."""
    runs: list[tuple[str, list[Text | Image]]] = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        role = message.get("role") if isinstance(message, Mapping) else None
        role = "system" if role == "developer" else role  # OpenAI's newer name for the system message
        if role not in ROLES:
            raise GenerationError(f"{where}.role must be one of {list(ROLES)}, got {role!r}")
        segments = _content(message, where, max_pixels)
        if runs and runs[-1][0] == role:
            runs[-1][1].extend([Text("\n"), *segments])
        else:
            runs.append((role, segments))
    empty = [role for role, segments in runs if not segments]
    if empty:
        raise GenerationError(f"a {empty[0]} message has no content")
    try:
        return ChatPrompt([Turn(role, Document(segments)) for role, segments in runs])
    except DocumentError as exc:
        raise GenerationError(f"messages: {exc}") from exc


def _content(message: Any, where: str, max_pixels: int) -> list[Text | Image]:
    if not isinstance(message, Mapping) or "content" not in message:
        raise GenerationError(f"{where}: expected an object with 'role' and 'content'")
    content = message["content"]
    if isinstance(content, str):
        return [Text(content)] if content else []
    if not isinstance(content, list):
        raise GenerationError(f"{where}.content: expected a string or a list of content parts")
    parts: list[Text | Image] = []
    for j, part in enumerate(content):
        here = f"{where}.content[{j}]"
        kind = part.get("type") if isinstance(part, Mapping) else None
        if kind == "text" and isinstance(part.get("text"), str):
            parts.append(Text(part["text"]))
        elif kind == "image_url" and isinstance(part.get("image_url"), Mapping):
            url = part["image_url"].get("url")
            if not isinstance(url, str) or not url.startswith("data:"):
                raise GenerationError(f"{here}: image_url must be a data: URI (the server fetches no URLs)")
            parts.append(Image(decode_image(url, here, max_pixels=max_pixels)))
        else:
            raise GenerationError(f"{here}: expected a 'text' or 'image_url' content part, got {part!r:.80}")
    return parts


def finish_reason(reason: str) -> str:
    """Our :class:`Finished` reasons in OpenAI's words."""
    return "length" if reason in ("max_tokens", "max_time") else "stop"


def new_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def usage_json(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def chat_completion(request_id: str, model: str, text: str, reason: str, usage: dict[str, int]) -> dict[str, Any]:
    """A non-streaming ``chat.completion`` response."""
    return {
        "id": request_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish_reason(reason)}
        ],
        "usage": usage,
    }


def chat_chunk(
    request_id: str, model: str, delta: dict[str, str] | None, reason: str | None = None, usage: Any = None
) -> dict[str, Any]:
    """One ``chat.completion.chunk``; ``delta=None`` is the usage-only chunk (no choices)."""
    choices = [] if delta is None else [
        {"index": 0, "delta": delta, "finish_reason": None if reason is None else finish_reason(reason)}
    ]  # fmt: skip
    chunk = {"id": request_id, "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
             "choices": choices}  # fmt: skip
    if usage is not None:
        chunk["usage"] = usage
    return chunk
