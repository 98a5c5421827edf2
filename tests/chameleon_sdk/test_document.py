"""Documents: construction, canonical form, JSONL round trips and precise errors."""

from __future__ import annotations

import json

import PIL.Image
import pytest
from hypothesis import given
from hypothesis import strategies as st

from chameleon_sdk import Document, DocumentError, Image, ImageDecodeError, Segment, Text, read_jsonl, write_jsonl


def _image(color=(255, 0, 0), size=(8, 6)):
    return PIL.Image.new("RGB", size, color)


def test_of_builds_segments_and_merges_text():
    img = _image()
    doc = Document.of("a ", "cat", img, "", Segment("digits", [1, 2]), "sits")
    assert doc.segments == (Text("a cat"), Image(img), Segment("digits", [1, 2]), Text("sits"))
    assert doc.text == "a catsits"
    assert len(doc) == 4


def test_of_rejects_unknown_payloads():
    with pytest.raises(DocumentError, match="item 1 is a int"):
        Document.of("x", 3)
    with pytest.raises(DocumentError, match="use Text"):
        Segment("image", _image())


def test_image_equality_compares_pixels():
    assert Image(_image()) == Image(_image())
    assert Image(_image()) != Image(_image((0, 0, 255)))


segments = st.one_of(
    st.text(max_size=20).map(Text),
    st.tuples(st.integers(0, 255), st.integers(0, 255), st.integers(0, 255)).map(lambda c: Image(_image(c))),
    st.lists(st.integers(0, 9), max_size=5).map(lambda p: Segment("digits", p)),
)


@given(st.lists(segments, max_size=6), st.sampled_from(["base64", "files"]))
def test_jsonl_round_trip(tmp_path_factory, segs, images):
    path = tmp_path_factory.mktemp("docs") / "docs.jsonl"
    docs = [Document(segs), Document.of("second")]
    write_jsonl(docs, path, images=images)
    assert list(read_jsonl(path)) == docs


def test_jsonl_files_mode_writes_relative_paths(tmp_path):
    write_jsonl([Document.of("x", _image())], tmp_path / "d.jsonl", images="files")
    line = json.loads((tmp_path / "d.jsonl").read_text())
    path = line["segments"][1]["image"]
    assert path.startswith("images/") and (tmp_path / path).is_file()


@pytest.mark.parametrize(
    ("line", "error", "match"),
    [
        ("{nope", DocumentError, "d.jsonl:2: invalid JSON"),
        ('{"segments": 3}', DocumentError, "d.jsonl:2: expected an object with a 'segments' list"),
        ('{"segments": [{"txt": "a"}]}', DocumentError, "d.jsonl:2, segment 0: expected one of"),
        ('{"segments": [{"image": "missing.png"}]}', ImageDecodeError, "cannot read image file"),
        ('{"segments": [{"image_base64": "!!"}]}', ImageDecodeError, "not valid base64"),
        ('{"segments": [{"image_base64": "aGVsbG8="}]}', ImageDecodeError, "cannot decode image"),
    ],
)
def test_bad_lines_name_file_and_line(tmp_path, line, error, match):
    path = tmp_path / "d.jsonl"
    path.write_text('{"segments": [{"text": "ok"}]}\n' + line + "\n")
    with pytest.raises(error, match=match):
        list(read_jsonl(path))
