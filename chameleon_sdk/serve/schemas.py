"""The wire format: request JSON -> prompt and generation options, documents and events -> JSON.

Images travel as base64 PNG or JPEG, bare or as ``data:image/...;base64,`` URIs. Every problem is a
:class:`~chameleon_sdk.errors.ChameleonError` naming the field, which the app answers with 400.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any

import attrs
import PIL.Image

from chameleon_sdk.document import Document, Image, Segment, Text, png_bytes
from chameleon_sdk.errors import DocumentError, GenerationError, ImageDecodeError
from chameleon_sdk.generation.events import (
    BlockDone,
    BlockProgress,
    BlockStarted,
    Finished,
    GenerationEvent,
    TextDelta,
)
from chameleon_sdk.generation.request import Guidance
from chameleon_sdk.generation.stream import DEFAULT_MAX_NEW_TOKENS
from chameleon_sdk.image_io import open_image

__all__ = ["GenerateRequest", "decode_image", "event_json", "image_data_uri", "parse_document"]

#: generation options a request may set (``Pipeline.stream``'s, less ``model``)
OPTIONS = (
    "mode", "max_new_tokens", "sampler", "samplers", "guidance", "stop", "seed", "max_time", "progress_every", "chat",
)  # fmt: skip


def decode_image(data: Any, where: str, *, max_pixels: int) -> PIL.Image.Image:
    """A PIL image from base64 text (a ``data:`` URI or bare), refusing more than ``max_pixels``."""
    if not isinstance(data, str):
        raise ImageDecodeError(f"{where}: expected a base64 string or data URI, got {type(data).__name__}")
    if data.startswith("data:"):
        header, _, data = data.partition(",")
        if not header.endswith(";base64"):
            raise ImageDecodeError(f"{where}: only base64 data URIs are accepted, got {header[:40]!r}")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ImageDecodeError(f"{where}: not valid base64: {exc}") from exc
    return open_image(raw, max_pixels=max_pixels, name=where)


def image_data_uri(image: PIL.Image.Image) -> str:
    return "data:image/png;base64," + base64.b64encode(png_bytes(image)).decode("ascii")


def parse_document(data: Any, where: str, *, max_pixels: int) -> Document:
    """A prompt: a string, or ``{"segments": [{"text"} | {"image_base64"} | {"modality", "payload"}]}``."""
    if isinstance(data, str):
        return Document.of(data)
    if not isinstance(data, Mapping) or not isinstance(data.get("segments"), list):
        raise DocumentError(f"{where}: expected a string or an object with a 'segments' list")
    segments: list[Text | Image | Segment] = []
    for i, raw in enumerate(data["segments"]):
        here = f"{where}.segments[{i}]"
        keys = set(raw) if isinstance(raw, Mapping) else set()
        if keys == {"text"} and isinstance(raw["text"], str):
            segments.append(Text(raw["text"]))
        elif keys == {"image_base64"}:
            segments.append(Image(decode_image(raw["image_base64"], here, max_pixels=max_pixels)))
        elif keys == {"modality", "payload"} and isinstance(raw["modality"], str):
            segments.append(Segment(raw["modality"], raw["payload"]))
        else:
            raise DocumentError(
                f"{here}: expected {{'text'}}, {{'image_base64'}} or {{'modality', 'payload'}}, got {raw!r:.80}"
            )
    return Document(segments)


@attrs.frozen(kw_only=True)
class GenerateRequest:
    """A parsed ``/v1/generate`` or ``/v1/stream`` body: the prompt and ``Pipeline.stream`` options."""

    prompt: Document
    options: dict[str, Any]

    @classmethod
    def parse(cls, body: Any, *, max_pixels: int, max_new_tokens: int) -> GenerateRequest:
        if not isinstance(body, Mapping):
            raise GenerationError("the request body must be a JSON object with a 'prompt'")
        unknown = sorted(set(body) - {"prompt", *OPTIONS})
        if unknown:
            raise GenerationError(f"unknown request field {unknown[0]!r}; valid fields: {['prompt', *OPTIONS]}")
        if "prompt" not in body:
            raise GenerationError("the request body needs a 'prompt' (a string or a document)")
        options = {k: body[k] for k in OPTIONS if body.get(k) is not None}
        options["max_new_tokens"] = limited_tokens(options.get("max_new_tokens"), max_new_tokens)
        if "guidance" in options:
            options["guidance"] = parse_guidance(options["guidance"])
        return cls(prompt=parse_document(body["prompt"], "prompt", max_pixels=max_pixels), options=options)


def limited_tokens(requested: Any, limit: int) -> int:
    """``max_new_tokens`` of a request: ``Pipeline.stream``'s default when absent (within the
    server's limit), refused above the limit."""
    if requested is None:
        return min(limit, DEFAULT_MAX_NEW_TOKENS)
    if isinstance(requested, bool) or not isinstance(requested, int) or requested <= 0:
        raise GenerationError(f"max_new_tokens must be a positive integer, got {requested!r}")
    if requested > limit:
        raise GenerationError(f"max_new_tokens={requested} exceeds this server's limit of {limit}")
    return requested


def parse_guidance(raw: Any) -> Guidance | None:
    """``true`` (the defaults), ``false``, or ``{"scale_text", "scale_image", "rows", "modality"}``."""
    if raw is True:
        return Guidance()
    if raw is False:
        return None
    if not isinstance(raw, Mapping):
        raise GenerationError(f"guidance must be true, false or an object of Guidance fields, got {raw!r:.60}")
    fields = {f.name for f in attrs.fields(Guidance)}
    unknown = sorted(set(raw) - fields)
    if unknown:
        raise GenerationError(f"unknown guidance field {unknown[0]!r}; valid fields: {sorted(fields)}")
    return Guidance(**raw)


def event_json(event: GenerationEvent) -> dict[str, Any]:
    """One event as JSON: ``type`` plus its fields; images and previews as PNG data URIs."""
    if isinstance(event, TextDelta):
        return {"type": "text", "row": event.row, "text": event.text}
    if isinstance(event, BlockProgress):
        return {"type": "progress", "modality": event.modality, "num_codes": event.num_codes,
                "preview": _payload_json(event.preview)}  # fmt: skip
    if isinstance(event, BlockStarted):
        return {"type": "started", "modality": event.modality}
    if isinstance(event, BlockDone):
        return {"type": "done", "modality": event.modality, "payload": _payload_json(event.payload)}
    if isinstance(event, Finished):
        return {"type": "finished", "reason": event.reason, "document": event.document.to_json()}
    raise GenerationError(f"no JSON form for event {type(event).__name__}")


def _payload_json(payload: Any) -> Any:
    return image_data_uri(payload) if isinstance(payload, PIL.Image.Image) else payload
