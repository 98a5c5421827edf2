"""A tiny served pipeline (sentencepiece text + an untrained 16 px image tokenizer) for the serve tests."""

from __future__ import annotations

import pytest
import torch

import chameleon_sdk as cs

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
def served_pipe(registry, trained_sentencepiece, tiny_image_options):
    config = cs.PipelineConfig(
        text_tokenizer={"name": "sentencepiece", "options": {"model_file": str(trained_sentencepiece)}},
        modalities=({"name": "image", "options": tiny_image_options},),
        model=cs.ModelConfig(dim=32, num_layers=2, num_heads=4, max_seq_len=512),
        attention="eager",
    )
    pipe = cs.Pipeline.from_config(config)
    torch.manual_seed(0)
    pipe.model = pipe.build_model()
    return pipe


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
