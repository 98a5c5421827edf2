"""What a modality plugin says about its payloads, read from the registered modality class.

Documents are built, written and read without a pipeline (``Document.of``, ``write_jsonl``,
``read_jsonl``, ``chameleon generate --out``), so these members are read from the class a
``register_modalities`` hook registered, never from a built (and possibly trained) instance:

- ``payload_types``: the Python types :meth:`Document.of` routes to the modality;
- ``payload_to_json(payload)`` / ``payload_from_json(data)``: static methods, JSON data and back;
- ``render_html(payload)`` / ``render_text(payload)``: static methods for ``.html`` and ``.md``/stdout.

Every one is optional; without them a payload is stored as it is (it must then be JSON data) and
rendered by a fallback that names the modality.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from typing import Any

from chameleon_sdk.errors import DocumentError, PluginNotFoundError
from chameleon_sdk.plugins import PluginRegistry, get_registry

__all__ = ["modality_for_payload", "payload_from_json", "payload_to_json", "render_html", "render_text"]


def _member(modality: str, name: str, registry: PluginRegistry | None) -> Any:
    """``name`` on the class registered as modality ``modality``, or ``None``."""
    try:
        record = (registry or get_registry()).get("modality", modality)
    except PluginNotFoundError:
        return None
    return getattr(record.factory, name, None)


def _call(modality: str, hook: str, value: Any, registry: PluginRegistry | None, where: str) -> tuple[bool, Any]:
    function: Callable[[Any], Any] | None = _member(modality, hook, registry)
    if function is None:
        return False, None
    try:
        return True, function(value)
    except DocumentError:
        raise
    except Exception as exc:  # a plugin's own error, named with the document position
        raise DocumentError(f"{where}: modality {modality!r} {hook} failed: {type(exc).__name__}: {exc}") from exc


def payload_to_json(modality: str, payload: Any, *, registry: PluginRegistry | None = None, where: str = "") -> Any:
    """JSON data for a payload: the modality's ``payload_to_json``, or the payload itself."""
    found, data = _call(modality, "payload_to_json", payload, registry, where or "payload_to_json")
    return data if found else payload


def payload_from_json(modality: str, data: Any, *, registry: PluginRegistry | None = None, where: str = "") -> Any:
    """The payload for JSON data: the modality's ``payload_from_json``, or the data itself."""
    found, payload = _call(modality, "payload_from_json", data, registry, where or "payload_from_json")
    return payload if found else data


def render_text(modality: str, payload: Any, *, registry: PluginRegistry | None = None) -> str:
    """Plain text for a payload: the modality's ``render_text``, else ``[modality: a short repr]``."""
    found, text = _call(modality, "render_text", payload, registry, "render_text")
    return str(text) if found else f"[{modality}: {_short(payload)}]"


def render_html(modality: str, payload: Any, *, registry: PluginRegistry | None = None) -> str:
    """An HTML fragment for a payload: the modality's ``render_html``, else the escaped text fallback."""
    found, fragment = _call(modality, "render_html", payload, registry, "render_html")
    if found:
        return str(fragment)
    return f'<code class="segment">{html.escape(render_text(modality, payload, registry=registry))}</code>'


def _short(payload: Any) -> str:
    text = repr(payload)
    return text if len(text) <= 80 else text[:77] + "..."


def modality_for_payload(value: Any, *, registry: PluginRegistry | None = None) -> str | None:
    """The one registered modality whose ``payload_types`` include ``type(value)``; ``None`` if none does."""
    registry = registry or get_registry()
    names = [
        record.name
        for record in registry.records("modality")
        if isinstance(value, tuple(getattr(record.factory, "payload_types", ()) or ()))
    ]
    if len(names) > 1:
        raise DocumentError(
            f"a {type(value).__name__} is a payload of several modalities ({', '.join(names)}): "
            f"say which with Segment(modality, payload)"
        )
    return names[0] if names else None
