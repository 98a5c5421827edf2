"""A tiny served pipeline (sentencepiece text + an untrained 16 px image tokenizer) for the serve tests."""

from __future__ import annotations

import pytest

pytest.importorskip("starlette", reason="the serve extra (starlette) is not installed")

IMAGE_CODES = 64  # a 16 px image, downsampled twice -> 8 x 8


def slow_down(model, monkeypatch, seconds: float = 0.01) -> None:
    """Make every forward pass of ``model`` take ``seconds`` longer, so a test can act mid-generation."""
    import time

    forward = model.forward

    def slow(*args, **kwargs):
        time.sleep(seconds)
        return forward(*args, **kwargs)

    monkeypatch.setattr(model, "forward", slow)


@pytest.fixture
def served_pipe(tiny_image_pipe):
    return tiny_image_pipe


@pytest.fixture
def live_server():
    """A function ``start(app) -> base URL``: the app served by uvicorn on 127.0.0.1 (a free port) in a
    thread, stopped at the end of the test."""
    import threading
    import time

    import uvicorn

    servers = []

    def start(app) -> str:
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
            time.sleep(0.02)
        servers.append((server, thread))
        port = server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    yield start
    for server, thread in servers:
        server.should_exit = True
        thread.join(30)
