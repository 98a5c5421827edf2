"""The ASGI application: routes, authentication, size limits and JSON errors (Starlette)."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib import resources
from typing import TYPE_CHECKING, Any, cast

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from chameleon_sdk.errors import ChameleonError, ConfigError
from chameleon_sdk.generation.engine import check_model
from chameleon_sdk.generation.events import Finished, TextDelta
from chameleon_sdk.model import ChameleonModel
from chameleon_sdk.serve.batcher import BatcherClosedError, ContinuousBatcher, QueueFullError
from chameleon_sdk.serve.openai_chat import ChatRequest, chat_chunk, chat_completion, new_id, usage_json
from chameleon_sdk.serve.options import ServeOptions
from chameleon_sdk.serve.requests import GenerationFailed, ServedGeneration
from chameleon_sdk.serve.schemas import GenerateRequest, event_json

if TYPE_CHECKING:
    from chameleon_sdk.pipeline import Pipeline

__all__ = ["build_app"]

log = logging.getLogger(__name__)

#: seconds a client is told to wait when the queue is full
RETRY_AFTER = 1
MODEL_FIELDS = ("dim", "num_layers", "num_heads", "vocab_size", "max_seq_len")
#: the options ``/v1/info`` reports
LIMITS = ("max_new_tokens", "max_body_bytes", "max_image_pixels", "max_rows", "max_queue", "request_timeout")


class ApiError(Exception):
    """An error answered as ``{"error": {"message", "type", "code"}}`` with ``status``."""

    def __init__(self, status: int, message: str, kind: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.kind, self.headers = status, message, kind, headers


def _error_response(status: int, message: str, kind: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "code": status}}, status, headers=headers)


def _as_api_error(exc: Exception) -> ApiError:
    """How each failure is answered; anything unexpected is a 500 with no details."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, QueueFullError):
        return ApiError(503, str(exc), "overloaded", {"Retry-After": str(RETRY_AFTER)})
    if isinstance(exc, BatcherClosedError):
        return ApiError(503, str(exc), "unavailable", {"Retry-After": str(RETRY_AFTER)})
    if isinstance(exc, GenerationFailed):
        if exc.status == "timeout":
            return ApiError(504, str(exc), "timeout")
        return ApiError(500, str(exc), "generation_failed")
    if isinstance(exc, ChameleonError):
        return ApiError(400, str(exc), "invalid_request")
    log.error("unexpected error while serving a request", exc_info=exc)
    return ApiError(500, "internal error (see the server log)", "internal_error")


class Server:
    """What the routes share: the pipeline, the options and the batcher."""

    def __init__(self, pipeline: Pipeline, options: ServeOptions) -> None:
        if pipeline.model is None:
            raise ConfigError("serve: the pipeline has no model (load one with a model/ folder, or set pipe.model)")
        check_model(pipeline.model)
        self.pipeline, self.options = pipeline, options
        self.model = cast(ChameleonModel, pipeline.model)
        self.batcher = ContinuousBatcher(
            self.model,
            max_rows=options.max_rows,
            max_context=options.max_context,
            max_queue=options.max_queue,
            compile=options.compile,
        )

    def authorize(self, request: Request) -> None:
        key = self.options.api_key
        if key is None:
            return
        given = request.headers.get("authorization", "")
        scheme, _, token = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.encode(), key.encode()):
            raise ApiError(401, "missing or wrong API key (Authorization: Bearer <key>)", "unauthorized",
                           {"WWW-Authenticate": "Bearer"})  # fmt: skip

    async def read_json(self, request: Request) -> Any:
        """The body as JSON, refusing more than ``max_body_bytes`` (before reading all of it)."""
        limit = self.options.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise ApiError(413, f"request body of {declared} bytes exceeds the limit of {limit}", "too_large")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise ApiError(413, f"request body exceeds the limit of {limit} bytes", "too_large")
        try:
            return json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ApiError(400, f"the request body is not valid JSON: {exc}", "invalid_request") from exc

    async def start(self, prompt: Any, options: dict[str, Any]) -> ServedGeneration:
        generation = ServedGeneration(self.pipeline, self.batcher, self.options)
        await generation.start(prompt, options)
        return generation

    def info(self) -> dict[str, Any]:
        pipe = self.pipeline
        config = self.model.config
        records = pipe.registry.records()
        model = {name: getattr(config, name) for name in MODEL_FIELDS}
        limits = {name: getattr(self.options, name) for name in LIMITS}
        return {
            "model": model,
            "dtype": str(next(self.model.parameters()).dtype).removeprefix("torch."),
            "compile": self.options.compile,
            "vocabulary_size": pipe.vocabulary.size,
            "modalities": sorted(pipe.modalities),
            "modes": ["text", "interleaved", *sorted(pipe.modalities)],
            "sampler": pipe.config.sampler.name,
            "plugins": [{"kind": r.kind, "name": r.name, "provider": r.provider} for r in records],
            "limits": {**limits, "max_context": self.batcher.max_context},
            "auth": self.options.api_key is not None,
        }


Handler = Callable[[Server, Request], Awaitable[Response]]


def _api(server: Server, handler: Handler, *, auth: bool = True) -> Callable[[Request], Awaitable[Response]]:
    """A route: the API key checked first, every failure answered as JSON."""

    async def endpoint(request: Request) -> Response:
        try:
            if auth:
                server.authorize(request)
            return await handler(server, request)
        except Exception as exc:
            error = _as_api_error(exc)
            return _error_response(error.status, error.message, error.kind, error.headers)

    return endpoint


def _sse(payload: Any) -> str:
    return f"data: {json.dumps(payload)}\n\n"


async def _page(server: Server, request: Request) -> Response:
    html = resources.files("chameleon_sdk.serve").joinpath("static/index.html").read_text(encoding="utf-8")
    return HTMLResponse(html)


async def _healthz(server: Server, request: Request) -> Response:
    return JSONResponse({"status": "ok", **server.batcher.load()})


async def _info(server: Server, request: Request) -> Response:
    return JSONResponse(server.info())


async def _generate(server: Server, request: Request) -> Response:
    limits = server.options
    parsed = GenerateRequest.parse(
        await server.read_json(request), max_pixels=limits.max_image_pixels, max_new_tokens=limits.max_new_tokens
    )
    generation = await server.start(parsed.prompt, parsed.options)
    try:
        document = await _unless_disconnected(request, generation.result())
    finally:
        generation.cancel()
    usage = usage_json(generation.usage.prompt_tokens, generation.usage.completion_tokens)
    return JSONResponse({"document": document.to_json(), "reason": generation.reason, "usage": usage})


async def _unless_disconnected(request: Request, work: Awaitable[Any]) -> Any:
    """Await ``work``, cancelling it when the client goes away (its row is then freed)."""
    task = asyncio.ensure_future(work)
    while True:
        done, _ = await asyncio.wait({task}, timeout=0.25)
        if done:
            return task.result()
        if await request.is_disconnected():
            task.cancel()
            raise ApiError(499, "the client closed the connection", "cancelled")


async def _stream(server: Server, request: Request) -> Response:
    limits = server.options
    parsed = GenerateRequest.parse(
        await server.read_json(request), max_pixels=limits.max_image_pixels, max_new_tokens=limits.max_new_tokens
    )
    generation = await server.start(parsed.prompt, parsed.options)

    async def body() -> AsyncIterator[str]:
        try:
            async for event in generation.events():
                payload = event_json(event)
                if isinstance(event, Finished):
                    payload["usage"] = usage_json(generation.usage.prompt_tokens, generation.usage.completion_tokens)
                yield _sse(payload)
        except ChameleonError as exc:
            error = _as_api_error(exc)
            yield _sse({"type": "error", "message": error.message, "code": error.status})
        finally:
            generation.cancel()

    return StreamingResponse(body(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


async def _chat(server: Server, request: Request) -> Response:
    limits = server.options
    chat = ChatRequest.parse(
        await server.read_json(request), max_pixels=limits.max_image_pixels, max_new_tokens=limits.max_new_tokens
    )
    generation = await server.start(chat.prompt, chat.options)
    request_id = new_id()
    if not chat.stream:
        try:
            document = await _unless_disconnected(request, generation.result())
        finally:
            generation.cancel()
        usage = usage_json(generation.usage.prompt_tokens, generation.usage.completion_tokens)
        return JSONResponse(chat_completion(request_id, chat.model, document.text, generation.reason, usage))

    async def body() -> AsyncIterator[str]:
        try:
            yield _sse(chat_chunk(request_id, chat.model, {"role": "assistant", "content": ""}))
            async for event in generation.events():
                if isinstance(event, TextDelta):
                    yield _sse(chat_chunk(request_id, chat.model, {"content": event.text}))
                elif isinstance(event, Finished):
                    yield _sse(chat_chunk(request_id, chat.model, {}, event.reason))
            if chat.include_usage:
                usage = usage_json(generation.usage.prompt_tokens, generation.usage.completion_tokens)
                yield _sse(chat_chunk(request_id, chat.model, None, usage=usage))
            yield "data: [DONE]\n\n"
        except ChameleonError as exc:
            error = _as_api_error(exc)
            yield _sse({"error": {"message": error.message, "type": error.kind, "code": error.status}})
        finally:
            generation.cancel()

    return StreamingResponse(body(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


async def _http_error(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    detail = exc.detail if isinstance(exc, HTTPException) else "internal error"
    return _error_response(status, str(detail), "not_found" if status == 404 else "http_error")


def build_app(pipeline: Pipeline, options: ServeOptions) -> Starlette:
    """The Starlette app; its batcher's decode thread starts now and stops at the app's shutdown."""
    server = Server(pipeline, options)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        server.batcher.close()

    routes = [
        Route("/", _api(server, _page, auth=False), methods=["GET"]),
        Route("/healthz", _api(server, _healthz, auth=False), methods=["GET"]),
        Route("/v1/info", _api(server, _info), methods=["GET"]),
        Route("/v1/generate", _api(server, _generate), methods=["POST"]),
        Route("/v1/stream", _api(server, _stream), methods=["POST"]),
        Route("/v1/chat/completions", _api(server, _chat), methods=["POST"]),
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={HTTPException: _http_error, Exception: _http_error},
    )
    app.state.server = server
    return app
