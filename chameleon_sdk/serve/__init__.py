"""Serving a pipeline over HTTP: a web page, a native API and an OpenAI-compatible chat endpoint.

``create_app(pipe)`` returns an ASGI application (Starlette) to run with uvicorn or mount in your
own app; ``chameleon serve --model DIR`` does both. Starlette and uvicorn come with the ``serve``
extra and are imported only when an app is created.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs

from chameleon_sdk.serve.options import ServeOptions

if TYPE_CHECKING:
    from chameleon_sdk.pipeline import Pipeline

__all__ = ["ServeOptions", "create_app"]


def create_app(pipeline: Pipeline, options: ServeOptions | None = None, **limits: Any) -> Any:
    """An ASGI app serving ``pipeline`` (which must have a model).

    :param options: a :class:`ServeOptions`; or give its fields as keywords (``api_key="..."``,
        ``max_rows=16``, ...).
    :raises ConfigError: the ``serve`` extra is not installed, the options are wrong, or the pipeline
        has no model.
    """
    from chameleon_sdk.errors import ConfigError

    if options is None:
        unknown = sorted(set(limits) - set(attrs.fields_dict(ServeOptions)))
        if unknown:
            raise ConfigError(
                f"create_app: unknown option {unknown[0]!r}; options: {list(attrs.fields_dict(ServeOptions))}"
            )
        options = ServeOptions(**limits)
    elif limits:
        raise ConfigError("create_app: pass either options=ServeOptions(...) or keyword limits, not both")
    try:
        from chameleon_sdk.serve.app import build_app
    except ImportError as exc:
        raise ConfigError(f"serving needs the serve extra: pip install 'chameleon-sdk[serve]' ({exc})") from exc
    return build_app(pipeline, options)
