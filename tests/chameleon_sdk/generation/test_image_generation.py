"""Generating images end to end with the real VQGAN image plugin (tiny and untrained: shapes, not beauty)."""

from __future__ import annotations

import PIL.Image
import pytest
import torch

import chameleon_sdk as cs
from chameleon_sdk.cli import main

CODES = 64  # a 16 px image, downsampled twice -> 8 x 8


@pytest.fixture
def pipe(tiny_image_pipe):
    return tiny_image_pipe


def test_image_mode_streams_previews_and_a_decoded_image(pipe):
    events = list(
        pipe.stream("a red circle", mode="image", max_new_tokens=CODES + 1, progress_every=16, guidance=cs.Guidance())
    )
    assert isinstance(events[0], cs.ImageStarted)
    progress = [e for e in events if isinstance(e, cs.ImageProgress)]
    assert [p.num_codes for p in progress] == [16, 32, 48, 64]
    assert all(isinstance(p.preview, PIL.Image.Image) and p.preview.size == (16, 16) for p in progress)
    done, finished = events[-2], events[-1]
    assert isinstance(done, cs.ImageDone) and done.payload.size == (16, 16)
    assert finished.reason == "done" and finished.document == cs.Document.of(done.payload)


def test_interleaved_text_and_images(pipe):
    begin = pipe.vocabulary.block("image").begin_id

    def eager_to_draw(logits, *, seen=None, generator=None):
        choice = logits.argmax(-1)
        return torch.where(torch.isfinite(logits[:, begin]), torch.full_like(choice, begin), choice)

    doc = pipe.generate(
        "Here is a red circle:", mode="interleaved", max_new_tokens=2 * (CODES + 2) + 3, sampler=eager_to_draw
    )
    images = [s for s in doc if isinstance(s, cs.Image)]
    assert len(images) == 2 and all(i.image.size == (16, 16) for i in images)


def test_generated_image_tokens_round_trip_through_the_pipeline(pipe):
    ids = cs.generate_tokens(pipe.model, pipe.tokenize("a blue square"), max_new_tokens=CODES + 1, mode="image")
    block = pipe.vocabulary.block("image")
    doc = pipe.detokenize([block.begin_id, *ids.tolist()])
    (image,) = doc.segments
    assert isinstance(image, cs.Image) and image.image.size == (16, 16)
    again = pipe.tokenize(doc, bos=False)  # the decoded image encodes again to one whole block
    assert (again[0], again[-1], len(again)) == (block.begin_id, block.end_id, CODES + 2)


def test_cli_generate_with_an_image_prompt(pipe, tmp_path, capsys):
    directory = pipe.save_pretrained(tmp_path / "p")
    picture = tmp_path / "in.png"
    PIL.Image.new("RGB", (20, 12), (255, 0, 0)).save(picture)
    out = tmp_path / "out.html"
    args = [
        "generate",
        "--model",
        str(directory),
        "--image",
        str(picture),
        "--prompt",
        "draw it again",
        "--mode",
        "image",
        "--max-new-tokens",
        str(CODES + 1),
        "--quiet",
        "--out",
        str(out),
    ]
    assert main(args) == 0
    page = out.read_text(encoding="utf-8")
    assert page.count("data:image/png;base64,") == 2 and "draw it again" in page
    bad = [*args[:-2], "--out", str(tmp_path / "x.html")]
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    bad[bad.index(str(picture))] = str(tmp_path / "broken.png")
    assert main(bad) == 2
    assert "broken.png" in capsys.readouterr().err and not (tmp_path / "x.html").exists()
