"""Every public entry point, fed bad input, fails with a ChameleonError subclass: never a bare
KeyError, IndexError, RuntimeError, AttributeError or TypeError from deep inside.

Each case is one bad input to one entry point (wrong types, missing or empty or garbage files,
out-of-range ids, bad options). ``CASES`` lists them; the CLI cases run ``main([...])`` and expect
exit status 2 with a one-line ``error:`` (or argparse's usage error), never a traceback.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import PIL.Image
import pytest
import torch

import chameleon_sdk as cs
from chameleon_sdk import plugin_api
from chameleon_sdk.cli import main
from chameleon_sdk.training.data import Batch


def _png(size=(16, 16), color=(200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    PIL.Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def ctx(tmp_path_factory, image_pipe):
    """The session's pipeline (text + tiny images + a tiny model), a saved copy, and bad files."""
    tmp = tmp_path_factory.mktemp("sweep")
    with cs.use_registry(image_pipe.registry):
        pipe = image_pipe
        saved = pipe.save_pretrained(tmp / "pipeline")
        files = SimpleNamespace(
            missing=tmp / "missing",
            empty=tmp / "empty.json",
            garbage=tmp / "garbage.json",
            binary=tmp / "binary.jsonl",
            toml=tmp / "garbage.toml",
            yaml=tmp / "config.yaml",
            dir=tmp / "a-directory",
            png=tmp / "ok.png",
            truncated_png=tmp / "truncated.png",
            not_png=tmp / "not.png",
            array_jsonl=tmp / "array.jsonl",
            bad_doc_jsonl=tmp / "bad-doc.jsonl",
            empty_dir=tmp / "empty-dir",
        )
        files.empty.write_bytes(b"")
        files.garbage.write_bytes(b"\x00\x01{{not json at all")
        files.binary.write_bytes(bytes(range(256)) * 4)
        files.toml.write_text("this is = = not toml [")
        files.yaml.write_text("a: 1\n")
        files.dir.mkdir()
        files.empty_dir.mkdir()
        files.png.write_bytes(_png())
        files.truncated_png.write_bytes(_png()[:40])
        files.not_png.write_bytes(b"GIF89a but not really an image")
        files.array_jsonl.write_text("[1, 2, 3]\n")
        files.bad_doc_jsonl.write_text(json.dumps({"segments": [{"text": 5}]}) + "\n")
        tiny_image = {**pipe.config.modalities[0].options}
        yield SimpleNamespace(
            pipe=pipe, model=pipe.model, vocab=pipe.vocabulary, saved=saved, f=files, tmp=tmp, tiny_image=tiny_image
        )


def _batch() -> Batch:
    ids = torch.zeros(1, 4, dtype=torch.long)
    return Batch(input_ids=ids, targets=ids, document_ids=ids)


def _fresh_pipe(c):
    return cs.Pipeline.from_config({"text_tokenizer": {"name": "sentencepiece", "options": {"vocab_size": 300}}})


# name -> fn(ctx): each call must raise a ChameleonError
CASES: dict[str, Callable[[Any], Any]] = {
    # -- Pipeline construction ----------------------------------------------------------------
    "Pipeline.from_config(None)": lambda c: cs.Pipeline.from_config(None),
    "Pipeline.from_config(123)": lambda c: cs.Pipeline.from_config(123),
    "Pipeline.from_config(missing file)": lambda c: cs.Pipeline.from_config(c.f.missing),
    "Pipeline.from_config(empty .json)": lambda c: cs.Pipeline.from_config(c.f.empty),
    "Pipeline.from_config(garbage .json)": lambda c: cs.Pipeline.from_config(c.f.garbage),
    "Pipeline.from_config(garbage .toml)": lambda c: cs.Pipeline.from_config(c.f.toml),
    "Pipeline.from_config(.yaml)": lambda c: cs.Pipeline.from_config(c.f.yaml),
    "Pipeline.from_config(directory)": lambda c: cs.Pipeline.from_config(c.f.dir),
    "Pipeline.from_config(text_tokenizer=5)": lambda c: cs.Pipeline.from_config({"text_tokenizer": 5}),
    "Pipeline.from_config(unknown plugin)": lambda c: cs.Pipeline.from_config({"text_tokenizer": "nope"}),
    "Pipeline.from_config(unknown key)": lambda c: cs.Pipeline.from_config({"bogus": 1}),
    "Pipeline.from_config(modalities=5)": lambda c: cs.Pipeline.from_config({"modalities": 5}),
    "Pipeline.from_config(modalities=[None])": lambda c: cs.Pipeline.from_config({"modalities": [None]}),
    "Pipeline.from_config(vocabulary='x')": lambda c: cs.Pipeline.from_config({"vocabulary": "x"}),
    "Pipeline.from_config(model='big')": lambda c: cs.Pipeline.from_config({"model": "big"}),
    "Pipeline.from_config(model.dim='64')": lambda c: cs.Pipeline.from_config(
        {"model": {"dim": "64", "num_layers": 2, "num_heads": 4}}
    ),
    "Pipeline.from_config(model.dim=-1)": lambda c: cs.Pipeline.from_config(
        {"model": {"dim": -1, "num_layers": 2, "num_heads": 4}}
    ),
    "Pipeline.from_config(model missing keys)": lambda c: cs.Pipeline.from_config({"model": {"dim": 64}}),
    "Pipeline.from_config(tokenizer options wrong type)": lambda c: cs.Pipeline.from_config(
        {"text_tokenizer": {"name": "sentencepiece", "options": {"vocab_size": "many"}}}
    ),
    "Pipeline.from_config(tokenizer options unknown)": lambda c: cs.Pipeline.from_config(
        {"text_tokenizer": {"name": "sentencepiece", "options": {"vocab": 5}}}
    ),
    "Pipeline.from_config(tokenizer missing model_file)": lambda c: cs.Pipeline.from_config(
        {"text_tokenizer": {"name": "sentencepiece", "options": {"model_file": str(c.f.missing)}}}
    ),
    "Pipeline.from_config(tokenizer garbage model_file)": lambda c: cs.Pipeline.from_config(
        {"text_tokenizer": {"name": "sentencepiece", "options": {"model_file": str(c.f.garbage)}}}
    ),
    "Pipeline.from_config(image options wrong type)": lambda c: cs.Pipeline.from_config(
        {"modalities": [{"name": "image", "options": {"resolution": "big"}}]}
    ),
    "Pipeline.from_config(image pretrained missing)": lambda c: cs.Pipeline.from_config(
        {"modalities": [{"name": "image", "options": {"pretrained": str(c.f.missing)}}]}
    ),
    "Pipeline.from_config(duplicate modality)": lambda c: cs.Pipeline.from_config({"modalities": ["image", "image"]}),
    # -- untrained pipeline -------------------------------------------------------------------
    "untrained.tokenize": lambda c: _fresh_pipe(c).tokenize("hi"),
    "untrained.detokenize": lambda c: _fresh_pipe(c).detokenize([1, 2]),
    "untrained.build_model": lambda c: _fresh_pipe(c).build_model(),
    "untrained.fingerprint": lambda c: _fresh_pipe(c).fingerprint(),
    "untrained.generate": lambda c: _fresh_pipe(c).generate("hi"),
    "untrained.train_text_tokenizer(5)": lambda c: _fresh_pipe(c).train_text_tokenizer(5),
    "untrained.train_text_tokenizer([])": lambda c: _fresh_pipe(c).train_text_tokenizer([]),
    "untrained.train_text_tokenizer([5])": lambda c: _fresh_pipe(c).train_text_tokenizer([5, None]),
    # -- tokenize / detokenize ----------------------------------------------------------------
    "tokenize(123)": lambda c: c.pipe.tokenize(123),
    "tokenize(None)": lambda c: c.pipe.tokenize(None),
    "tokenize([str])": lambda c: c.pipe.tokenize(["a", "b"]),
    "tokenize(unknown modality segment)": lambda c: c.pipe.tokenize(cs.Document.of(cs.Segment("audio", [1]))),
    "tokenize(image segment holding a str)": lambda c: c.pipe.tokenize(cs.Document.of(cs.Segment("video", "x"))),
    "encode_segment(5)": lambda c: c.pipe.encode_segment(5),
    "detokenize([-1])": lambda c: c.pipe.detokenize([-1]),
    "detokenize([vocab size])": lambda c: c.pipe.detokenize([c.vocab.size]),
    "detokenize([10**12])": lambda c: c.pipe.detokenize([10**12]),
    "detokenize(['a'])": lambda c: c.pipe.detokenize(["a"]),
    "detokenize('abc')": lambda c: c.pipe.detokenize("abc"),
    "detokenize([1.5])": lambda c: c.pipe.detokenize([1.5]),
    "detokenize(None)": lambda c: c.pipe.detokenize(None),
    "detokenize(5)": lambda c: c.pipe.detokenize(5),
    "detokenize({'a': 1})": lambda c: c.pipe.detokenize({"a": 1}),
    "detokenize(ragged)": lambda c: c.pipe.detokenize([[1, 2], [3]]),
    "detokenize(float tensor)": lambda c: c.pipe.detokenize(torch.tensor([1.0, 2.0])),
    "detokenize(bool tensor)": lambda c: c.pipe.detokenize(torch.tensor([True])),
    "detokenize(unterminated image)": lambda c: c.pipe.detokenize([c.vocab.block("image").begin_id, 5]),
    "detokenize(end without begin)": lambda c: c.pipe.detokenize([c.vocab.block("image").end_id]),
    "detokenize(image code outside block)": lambda c: c.pipe.detokenize(c.vocab.codes_to_ids("image", [1]).tolist()),
    "detokenize(short image block)": lambda c: c.pipe.detokenize(
        [
            c.vocab.block("image").begin_id,
            *c.vocab.codes_to_ids("image", [1, 2]).tolist(),
            c.vocab.block("image").end_id,
        ]
    ),
    "detokenize(text inside image block)": lambda c: c.pipe.detokenize(
        [c.vocab.block("image").begin_id, 5, c.vocab.block("image").end_id]
    ),
    "detokenize(nested begin)": lambda c: c.pipe.detokenize([c.vocab.block("image").begin_id] * 2),
    # -- Document / JSONL ---------------------------------------------------------------------
    "Document.of(5)": lambda c: cs.Document.of(5),
    "Document.of(None)": lambda c: cs.Document.of(None),
    "Document.of(bytes)": lambda c: cs.Document.of(b"abc"),
    "Document([5])": lambda c: cs.Document([5]),
    "Document('abc')": lambda c: cs.Document("abc"),
    "Document(5)": lambda c: cs.Document(5),
    "Text(5)": lambda c: cs.Text(5),
    "Text(None)": lambda c: cs.Text(None),
    "Image('x.png')": lambda c: cs.Image("x.png"),
    "Image(None)": lambda c: cs.Image(None),
    "Segment(5, x)": lambda c: cs.Segment(5, [1]),
    "Segment('text', x)": lambda c: cs.Segment("text", "x"),
    "Segment('image', x)": lambda c: cs.Segment("image", "x"),
    "Document.from_json(None)": lambda c: cs.Document.from_json(None),
    "Document.from_json([])": lambda c: cs.Document.from_json([]),
    "Document.from_json(segments=5)": lambda c: cs.Document.from_json({"segments": 5}),
    "Document.from_json(segment 5)": lambda c: cs.Document.from_json({"segments": [5]}),
    "Document.from_json(text=5)": lambda c: cs.Document.from_json({"segments": [{"text": 5}]}),
    "Document.from_json(unknown keys)": lambda c: cs.Document.from_json({"segments": [{"video": "x"}]}),
    "Document.from_json(bad base64)": lambda c: cs.Document.from_json({"segments": [{"image_base64": "!!!"}]}),
    "Document.from_json(base64 of garbage)": lambda c: cs.Document.from_json(
        {"segments": [{"image_base64": base64.b64encode(b"garbage").decode()}]}
    ),
    "Document.from_json(base64 of truncated png)": lambda c: cs.Document.from_json(
        {"segments": [{"image_base64": base64.b64encode(_png()[:50]).decode()}]}
    ),
    "Document.from_json(image path, no base_dir)": lambda c: cs.Document.from_json({"segments": [{"image": "a.png"}]}),
    "Document.from_json(image path missing)": lambda c: cs.Document.from_json(
        {"segments": [{"image": "missing.png"}]}, base_dir=c.tmp
    ),
    "Document.from_json(image path is a dir)": lambda c: cs.Document.from_json(
        {"segments": [{"image": "a-directory"}]}, base_dir=c.tmp
    ),
    "Document.from_json(modality text)": lambda c: cs.Document.from_json(
        {"segments": [{"modality": "text", "payload": "x"}]}
    ),
    "Document.to_json(base_dir=5)": lambda c: cs.Document.of(PIL.Image.new("RGB", (2, 2))).to_json(base_dir=5),
    "read_jsonl(missing)": lambda c: list(cs.read_jsonl(c.f.missing)),
    "read_jsonl(directory)": lambda c: list(cs.read_jsonl(c.f.dir)),
    "read_jsonl(binary)": lambda c: list(cs.read_jsonl(c.f.binary)),
    "read_jsonl(garbage)": lambda c: list(cs.read_jsonl(c.f.garbage)),
    "read_jsonl(array line)": lambda c: list(cs.read_jsonl(c.f.array_jsonl)),
    "read_jsonl(bad document)": lambda c: list(cs.read_jsonl(c.f.bad_doc_jsonl)),
    "read_jsonl(None)": lambda c: list(cs.read_jsonl(None)),
    "read_jsonl(5)": lambda c: list(cs.read_jsonl(5)),
    "write_jsonl([5])": lambda c: cs.write_jsonl([5], c.tmp / "out.jsonl"),
    "write_jsonl(None)": lambda c: cs.write_jsonl(None, c.tmp / "out.jsonl"),
    "write_jsonl(str)": lambda c: cs.write_jsonl("not documents", c.tmp / "out.jsonl"),
    "write_jsonl(images='x')": lambda c: cs.write_jsonl([], c.tmp / "out.jsonl", images="x"),
    "write_jsonl(unserialisable payload)": lambda c: cs.write_jsonl(
        [cs.Document.of(cs.Segment("audio", object()))], c.tmp / "out.jsonl"
    ),
    "write_jsonl(path=None)": lambda c: cs.write_jsonl([], None),
    # -- configs ------------------------------------------------------------------------------
    "ModelConfig(dim='64')": lambda c: cs.ModelConfig(dim="64", num_layers=2, num_heads=4),
    "ModelConfig(dim=64.5)": lambda c: cs.ModelConfig(dim=64.5, num_layers=2, num_heads=4),
    "ModelConfig(dim=None)": lambda c: cs.ModelConfig(dim=None, num_layers=2, num_heads=4),
    "ModelConfig(num_layers=True)": lambda c: cs.ModelConfig(dim=64, num_layers=True, num_heads=4),
    "ModelConfig(num_heads=0)": lambda c: cs.ModelConfig(dim=64, num_layers=2, num_heads=0),
    "ModelConfig(num_heads=5)": lambda c: cs.ModelConfig(dim=64, num_layers=2, num_heads=5),
    "ModelConfig(num_kv_heads=3)": lambda c: cs.ModelConfig(dim=64, num_layers=2, num_heads=4, num_kv_heads=3),
    "ModelConfig(dropout=1.5)": lambda c: cs.ModelConfig(dim=64, num_layers=2, num_heads=4, dropout=1.5),
    "ModelConfig(dropout='x')": lambda c: cs.ModelConfig(dim=64, num_layers=2, num_heads=4, dropout="x"),
    "ModelConfig(rope_theta=[1])": lambda c: cs.ModelConfig(dim=64, num_layers=2, num_heads=4, rope_theta=[1]),
    "ModelConfig(max_seq_len=-4)": lambda c: cs.ModelConfig(dim=64, num_layers=2, num_heads=4, max_seq_len=-4),
    "ModelConfig(head_dim odd)": lambda c: cs.ModelConfig(dim=12, num_layers=2, num_heads=4),
    "PipelineConfig(text_tokenizer=5)": lambda c: cs.PipelineConfig(text_tokenizer=5),
    "PipelineConfig(modalities=5)": lambda c: cs.PipelineConfig(modalities=5),
    "PipelineConfig(modalities=[5])": lambda c: cs.PipelineConfig(modalities=[5]),
    "PipelineConfig(vocabulary='x')": lambda c: cs.PipelineConfig(vocabulary="x"),
    "PipelineConfig(model={})": lambda c: cs.PipelineConfig(model={"dim": 64}),
    "PipelineConfig(model=5)": lambda c: cs.PipelineConfig(model=5),
    "PipelineConfig(stability=[{}])": lambda c: cs.PipelineConfig(stability=[{}]),
    "PipelineConfig(callbacks=5)": lambda c: cs.PipelineConfig(callbacks=5),
    "ComponentSpec(name=5)": lambda c: cs.ComponentSpec(name=5),
    "ComponentSpec(name='')": lambda c: cs.ComponentSpec(name=""),
    "ComponentSpec(options=5)": lambda c: cs.ComponentSpec(name="x", options=5),
    "ComponentSpec.of(5)": lambda c: cs.ComponentSpec.of(5),
    "ComponentSpec.of({})": lambda c: cs.ComponentSpec.of({}),
    "from_dict(ModelConfig, 'x')": lambda c: cs.from_dict(cs.ModelConfig, "x"),
    "from_dict(ModelConfig, {dim: 'x'})": lambda c: cs.from_dict(
        cs.ModelConfig, {"dim": "x", "num_layers": 2, "num_heads": 4}
    ),
    "from_dict(ModelConfig, {dim: 1.0})": lambda c: cs.from_dict(
        cs.ModelConfig, {"dim": 64.0, "num_layers": 2, "num_heads": 4}
    ),
    "from_dict(int, {})": lambda c: cs.from_dict(int, {}),
    "from_dict(None, {})": lambda c: cs.from_dict(None, {}),
    "from_dict(DataConfig, sources='x')": lambda c: cs.from_dict(cs.DataConfig, {"sources": "x"}),
    "from_dict(DataConfig, sources=[5])": lambda c: cs.from_dict(cs.DataConfig, {"sources": [5]}),
    "load_config(missing)": lambda c: cs.load_config(c.f.missing),
    "load_config(empty json)": lambda c: cs.load_config(c.f.empty),
    "load_config(garbage json)": lambda c: cs.load_config(c.f.garbage),
    "load_config(garbage toml)": lambda c: cs.load_config(c.f.toml),
    "load_config(.yaml)": lambda c: cs.load_config(c.f.yaml),
    "load_config(directory)": lambda c: cs.load_config(c.f.dir),
    "load_config(None)": lambda c: cs.load_config(None),
    "load_config(cls=int)": lambda c: cs.load_config(c.saved / "pipeline.json", int),
    "save_config(object())": lambda c: cs.save_config(object(), c.tmp / "cfg.json"),
    "save_config(path=None)": lambda c: cs.save_config(cs.PipelineConfig(), None),
    "DataConfig(sources=[])": lambda c: cs.DataConfig(sources=[]),
    "DataConfig(sources='x')": lambda c: cs.DataConfig(sources="x"),
    "DataConfig(sources=[5])": lambda c: cs.DataConfig(sources=[5]),
    "DataConfig(seq_len='512')": lambda c: cs.DataConfig(sources=[cs.SourceConfig(path="x")], seq_len="512"),
    "DataConfig(batch_size=0)": lambda c: cs.DataConfig(sources=[cs.SourceConfig(path="x")], batch_size=0),
    "DataConfig(batch_size=2.5)": lambda c: cs.DataConfig(sources=[cs.SourceConfig(path="x")], batch_size=2.5),
    "DataConfig(stage2_fraction=2)": lambda c: cs.DataConfig(sources=[cs.SourceConfig(path="x")], stage2_fraction=2),
    "DataConfig(seed='x')": lambda c: cs.DataConfig(sources=[cs.SourceConfig(path="x")], seed="x"),
    "SourceConfig(path=5)": lambda c: cs.SourceConfig(path=5),
    "SourceConfig(weight='x')": lambda c: cs.SourceConfig(path="x", weight="x"),
    "SourceConfig(weight=-1)": lambda c: cs.SourceConfig(path="x", weight=-1),
    "Guidance(scale_text='x')": lambda c: cs.Guidance(scale_text="x"),
    "Guidance(scale_text=-1)": lambda c: cs.Guidance(scale_text=-1),
    "Guidance(rows=4)": lambda c: cs.Guidance(rows=4),
    "Guidance(modality=5)": lambda c: cs.Guidance(modality=5),
    "ImageTokenizerTrainingConfig(tokenizer=5)": lambda c: cs.ImageTokenizerTrainingConfig(
        data="d", output="o", tokenizer=5
    ),
    "ImageTokenizerTrainingConfig(data=5)": lambda c: cs.ImageTokenizerTrainingConfig(data=5, output="o"),
    # -- vocabulary ---------------------------------------------------------------------------
    "Vocabulary.appended(text_size=0)": lambda c: cs.Vocabulary.appended(text_size=0, bos_id=0, eos_id=1, pad_id=2),
    "Vocabulary.appended(text_size='x')": lambda c: cs.Vocabulary.appended(text_size="x", bos_id=0, eos_id=1, pad_id=2),
    "Vocabulary.appended(bos_id=-1)": lambda c: cs.Vocabulary.appended(text_size=10, bos_id=-1, eos_id=1, pad_id=2),
    "Vocabulary.appended(bos_id=99)": lambda c: cs.Vocabulary.appended(text_size=10, bos_id=99, eos_id=1, pad_id=2),
    "Vocabulary.appended(bos_id='x')": lambda c: cs.Vocabulary.appended(text_size=10, bos_id="x", eos_id=1, pad_id=2),
    "Vocabulary.appended(codebook 0)": lambda c: cs.Vocabulary.appended(
        text_size=10, bos_id=0, eos_id=1, pad_id=2, modalities={"image": 0}
    ),
    "Vocabulary.appended(codebook 'x')": lambda c: cs.Vocabulary.appended(
        text_size=10, bos_id=0, eos_id=1, pad_id=2, modalities={"image": "x"}
    ),
    "Vocabulary.appended(modalities=5)": lambda c: cs.Vocabulary.appended(
        text_size=10, bos_id=0, eos_id=1, pad_id=2, modalities=5
    ),
    "Vocabulary.chameleon(image codebook 5)": lambda c: cs.Vocabulary.chameleon(extra_modalities={"image": 5}),
    "Vocabulary.chameleon(extra codebook -1)": lambda c: cs.Vocabulary.chameleon(extra_modalities={"audio": -1}),
    "Vocabulary(size=-5)": lambda c: cs.Vocabulary(layout="x", size=-5, specials={"bos": 0, "eos": 1, "pad": 2}),
    "Vocabulary(size='x')": lambda c: cs.Vocabulary(layout="x", size="x", specials={"bos": 0, "eos": 1, "pad": 2}),
    "Vocabulary(specials=5)": lambda c: cs.Vocabulary(layout="x", size=5, specials=5),
    "Vocabulary(specials missing)": lambda c: cs.Vocabulary(layout="x", size=5, specials={"bos": 0}),
    "Vocabulary.from_json(5)": lambda c: cs.Vocabulary.from_json(5),
    "Vocabulary.from_json({})": lambda c: cs.Vocabulary.from_json({}),
    "Vocabulary.from_json(size -5)": lambda c: cs.Vocabulary.from_json({**c.vocab.to_json(), "size": -5}),
    "Vocabulary.from_json(size 'x')": lambda c: cs.Vocabulary.from_json({**c.vocab.to_json(), "size": "x"}),
    "Vocabulary.from_json(codes str)": lambda c: cs.Vocabulary.from_json(
        {**c.vocab.to_json(), "modalities": {"image": {"begin_id": 1, "end_id": 2, "code_ids": "x"}}}
    ),
    "Vocabulary.from_json(codes float)": lambda c: cs.Vocabulary.from_json(
        {**c.vocab.to_json(), "modalities": {"image": {"begin_id": 1, "end_id": 2, "code_ids": [1.5]}}}
    ),
    "Vocabulary.from_json(code range)": lambda c: cs.Vocabulary.from_json(
        {
            **c.vocab.to_json(),
            "modalities": {"image": {"begin_id": 1, "end_id": 2, "code_ids": {"start": -9, "size": 2}}},
        }
    ),
    "vocab.block('nope')": lambda c: c.vocab.block("nope"),
    "vocab.block(5)": lambda c: c.vocab.block(5),
    "vocab.codes_to_ids('nope')": lambda c: c.vocab.codes_to_ids("nope", [1]),
    "vocab.codes_to_ids(code -1)": lambda c: c.vocab.codes_to_ids("image", [-1]),
    "vocab.codes_to_ids(code 16)": lambda c: c.vocab.codes_to_ids("image", [16]),
    "vocab.codes_to_ids(str codes)": lambda c: c.vocab.codes_to_ids("image", ["a"]),
    "vocab.codes_to_ids(float codes)": lambda c: c.vocab.codes_to_ids("image", [1.5]),
    "vocab.codes_to_ids(None)": lambda c: c.vocab.codes_to_ids("image", None),
    "vocab.ids_to_codes(text id)": lambda c: c.vocab.ids_to_codes("image", [5]),
    "vocab.ids_to_codes(-1)": lambda c: c.vocab.ids_to_codes("image", [-1]),
    "vocab.ids_to_codes(big)": lambda c: c.vocab.ids_to_codes("image", [10**9]),
    "vocab.code_mask('nope')": lambda c: c.vocab.code_mask("nope"),
    # -- checkpoints --------------------------------------------------------------------------
    "load_model(missing)": lambda c: cs.load_model(c.f.missing),
    "load_model(empty dir)": lambda c: cs.load_model(c.f.empty_dir),
    "load_model(garbage file)": lambda c: cs.load_model(c.f.garbage),
    "load_model(None)": lambda c: cs.load_model(None),
    "load_model(5)": lambda c: cs.load_model(5),
    "load_model(format='nope')": lambda c: cs.load_model(c.saved / "model", format="nope"),
    "load_model(format=5)": lambda c: cs.load_model(c.saved / "model", format=5),
    "load_model(wrong format)": lambda c: cs.load_model(c.saved / "model", format="hf"),
    "load_model(original on native dir)": lambda c: cs.load_model(c.saved / "model", format="original"),
    "load_model(options unknown)": lambda c: cs.load_model(c.saved / "model", options={"bogus": 1}),
    "load_model(options=5)": lambda c: cs.load_model(c.saved / "model", options=5),
    "load_model(dtype='float16')": lambda c: cs.load_model(c.saved / "model", dtype="float16"),
    "load_model(pipeline dir)": lambda c: cs.load_model(c.saved),
    "save_model(object())": lambda c: cs.save_model(object(), c.tmp / "m"),
    "save_model(None)": lambda c: cs.save_model(None, c.tmp / "m"),
    "save_model(nn.Linear)": lambda c: cs.save_model(torch.nn.Linear(2, 2), c.tmp / "m"),
    "save_model(format='nope')": lambda c: cs.save_model(c.model, c.tmp / "m", format="nope"),
    "save_model(nn.Linear, format='original')": lambda c: cs.save_model(
        torch.nn.Linear(2, 2), c.tmp / "m", format="original"
    ),
    "save_model(hf without qk-norm)": lambda c: cs.save_model(c.model, c.tmp / "m", format="hf"),
    "save_model(path=None)": lambda c: cs.save_model(c.model, None),
    "save_model(options unknown)": lambda c: cs.save_model(c.model, c.tmp / "m", options={"bogus": 1}),
    "detect_format(missing)": lambda c: cs.detect_format(c.f.missing),
    "detect_format(empty dir)": lambda c: cs.detect_format(c.f.empty_dir),
    "detect_format(None)": lambda c: cs.detect_format(None),
    "read_json(missing)": lambda c: plugin_api.read_json(c.f.missing),
    "read_json(garbage)": lambda c: plugin_api.read_json(c.f.garbage),
    "read_json(empty)": lambda c: plugin_api.read_json(c.f.empty),
    "read_json(binary)": lambda c: plugin_api.read_json(c.f.binary),
    "read_json(directory)": lambda c: plugin_api.read_json(c.f.dir),
    "read_json(None)": lambda c: plugin_api.read_json(None),
    "write_json(object())": lambda c: plugin_api.write_json(c.tmp / "x.json", object()),
    "write_json(path=5)": lambda c: plugin_api.write_json(5, {}),
    "read_safetensors(missing)": lambda c: plugin_api.read_safetensors(c.f.missing),
    "read_safetensors(garbage)": lambda c: plugin_api.read_safetensors(c.f.garbage),
    "read_safetensors(empty)": lambda c: plugin_api.read_safetensors(c.f.empty),
    "read_safetensors(empty dir)": lambda c: plugin_api.read_safetensors(c.f.empty_dir),
    "read_safetensors(None)": lambda c: plugin_api.read_safetensors(None),
    "read_safetensors(bad index)": lambda c: plugin_api.read_safetensors(c.f.garbage.with_name("x.index.json")),
    "write_safetensors(str values)": lambda c: plugin_api.write_safetensors({"a": "x"}, c.tmp),
    "write_safetensors(None)": lambda c: plugin_api.write_safetensors(None, c.tmp),
    "write_safetensors(int keys)": lambda c: plugin_api.write_safetensors({1: torch.ones(1)}, c.tmp),
    "write_safetensors(bad metadata)": lambda c: plugin_api.write_safetensors(
        {"a": torch.ones(1)}, c.tmp, metadata={"a": 1}
    ),
    "read_torch_weights(missing)": lambda c: plugin_api.read_torch_weights(c.f.missing),
    "read_torch_weights(garbage)": lambda c: plugin_api.read_torch_weights(c.f.garbage),
    "read_torch_weights(empty)": lambda c: plugin_api.read_torch_weights(c.f.empty),
    "read_torch_weights(list)": lambda c: (
        torch.save([1, 2], c.tmp / "list.pt"),
        plugin_api.read_torch_weights(c.tmp / "list.pt"),
    ),
    "read_torch_file(directory)": lambda c: plugin_api.read_torch_file(c.f.dir),
    "load_weights(None)": lambda c: plugin_api.load_weights(c.model, None, source="x"),
    "load_weights({})": lambda c: plugin_api.load_weights(c.model, {}, source="x"),
    "load_weights(wrong shape)": lambda c: plugin_api.load_weights(
        c.model, {k: v[..., :1] if v.dim() else v for k, v in c.model.state_dict().items()}, source="x"
    ),
    "load_weights(str values)": lambda c: plugin_api.load_weights(c.model, {"a": "x"}, source="x"),
    "verify_manifest(None)": lambda c: plugin_api.verify_manifest(None),
    "write_manifest(files=[missing])": lambda c: plugin_api.write_manifest(c.f.empty_dir, files=["nope"]),
    "Pipeline.from_pretrained(missing)": lambda c: cs.Pipeline.from_pretrained(c.f.missing),
    "Pipeline.from_pretrained(empty dir)": lambda c: cs.Pipeline.from_pretrained(c.f.empty_dir),
    "Pipeline.from_pretrained(None)": lambda c: cs.Pipeline.from_pretrained(None),
    "Pipeline.from_pretrained(model dir)": lambda c: cs.Pipeline.from_pretrained(c.saved / "model"),
    "Pipeline.from_pretrained(a file)": lambda c: cs.Pipeline.from_pretrained(c.f.garbage),
    "Pipeline.save_pretrained(None)": lambda c: c.pipe.save_pretrained(None),
    # -- image tokenizer and images -----------------------------------------------------------
    "load_image_tokenizer(missing)": lambda c: cs.load_image_tokenizer(c.f.missing),
    "load_image_tokenizer(empty dir)": lambda c: cs.load_image_tokenizer(c.f.empty_dir),
    "load_image_tokenizer(garbage file)": lambda c: cs.load_image_tokenizer(c.f.garbage),
    "load_image_tokenizer(model dir)": lambda c: cs.load_image_tokenizer(c.saved / "model"),
    "load_image_tokenizer(None)": lambda c: cs.load_image_tokenizer(None),
    "load_image_tokenizer(name='nope')": lambda c: cs.load_image_tokenizer(
        c.saved / "modalities" / "image", name="nope"
    ),
    "load_image_tokenizer(options unknown)": lambda c: cs.load_image_tokenizer(
        c.saved / "modalities" / "image", options={"bogus": 1}
    ),
    "load_image_tokenizer(options=5)": lambda c: cs.load_image_tokenizer(c.saved / "modalities" / "image", options=5),
    "load_image_tokenizer(format='nope')": lambda c: cs.load_image_tokenizer(
        c.saved / "modalities" / "image", format="nope"
    ),
    "read_image_tokenizer(missing)": lambda c: cs.read_image_tokenizer(c.f.missing),
    "read_image_tokenizer(None)": lambda c: cs.read_image_tokenizer(None),
    "save_image_tokenizer(object())": lambda c: cs.save_image_tokenizer(object(), c.tmp / "t"),
    "save_image_tokenizer(format='original')": lambda c: cs.save_image_tokenizer(
        c.pipe.modalities["image"], c.tmp / "t", format="original"
    ),
    "train_image_tokenizer(5)": lambda c: cs.train_image_tokenizer(5),
    "train_image_tokenizer(missing config)": lambda c: cs.train_image_tokenizer(c.f.missing),
    "train_image_tokenizer({})": lambda c: cs.train_image_tokenizer({}),
    "train_image_tokenizer(missing data)": lambda c: cs.train_image_tokenizer(
        {
            "data": str(c.f.missing),
            "output": str(c.tmp / "tok"),
            "tokenizer": {"name": "image", "options": c.tiny_image},
        }
    ),
    "train_image_tokenizer(bad training option)": lambda c: cs.train_image_tokenizer(
        {
            "data": str(c.f.dir),
            "output": str(c.tmp / "tok"),
            "tokenizer": {"name": "image", "options": c.tiny_image},
            "training": {"steps": "many"},
        }
    ),
    "image.encode('x')": lambda c: c.pipe.modalities["image"].encode("x"),
    "image.encode(None)": lambda c: c.pipe.modalities["image"].encode(None),
    "image.decode(code 99)": lambda c: c.pipe.modalities["image"].decode(torch.full((64,), 99)),
    "image.decode(float codes)": lambda c: c.pipe.modalities["image"].decode(torch.zeros(64)),
    "image.decode(3 codes)": lambda c: c.pipe.modalities["image"].decode(torch.zeros(3, dtype=torch.long)),
    "open_image(missing)": lambda c: cs.open_image(c.f.missing),
    "open_image(empty)": lambda c: cs.open_image(c.f.empty),
    "open_image(garbage)": lambda c: cs.open_image(c.f.garbage),
    "open_image(truncated png)": lambda c: cs.open_image(c.f.truncated_png),
    "open_image(not an image)": lambda c: cs.open_image(c.f.not_png),
    "open_image(directory)": lambda c: cs.open_image(c.f.dir),
    "open_image(b'')": lambda c: cs.open_image(b""),
    "open_image(None)": lambda c: cs.open_image(None),
    "open_image(5)": lambda c: cs.open_image(5),
    "open_image(over pixel limit)": lambda c: cs.open_image(c.f.png, max_pixels=10),
    "open_image(max_pixels='x')": lambda c: cs.open_image(c.f.png, max_pixels="x"),
    "to_rgb('x')": lambda c: plugin_api.to_rgb("x"),
    "to_rgb(None)": lambda c: plugin_api.to_rgb(None),
    # -- generation ---------------------------------------------------------------------------
    "generate(no model)": lambda c: cs.Pipeline(
        c.pipe.config, text_tokenizer=c.pipe.text_tokenizer, modalities={}
    ).generate("x"),
    "generate(prompt=123)": lambda c: c.pipe.generate(123, max_new_tokens=2),
    "generate(prompt=None)": lambda c: c.pipe.generate(None, max_new_tokens=2),
    "generate(prompt=[])": lambda c: c.pipe.generate([], max_new_tokens=2),
    "generate(prompt=[5])": lambda c: c.pipe.generate([5], max_new_tokens=2),
    "generate(max_new_tokens=0)": lambda c: c.pipe.generate("a", max_new_tokens=0),
    "generate(max_new_tokens=-1)": lambda c: c.pipe.generate("a", max_new_tokens=-1),
    "generate(max_new_tokens='5')": lambda c: c.pipe.generate("a", max_new_tokens="5"),
    "generate(max_new_tokens=2.5)": lambda c: c.pipe.generate("a", max_new_tokens=2.5),
    "generate(mode='video')": lambda c: c.pipe.generate("a", mode="video", max_new_tokens=2),
    "generate(mode=5)": lambda c: c.pipe.generate("a", mode=5, max_new_tokens=2),
    "generate(mode=[two modes, one prompt])": lambda c: c.pipe.generate("a", mode=["text", "text"], max_new_tokens=2),
    "generate(image mode, budget too small)": lambda c: c.pipe.generate("a", mode="image", max_new_tokens=3),
    "generate(sampler='nope')": lambda c: c.pipe.generate("a", sampler="nope", max_new_tokens=2),
    "generate(sampler=5)": lambda c: c.pipe.generate("a", sampler=5, max_new_tokens=2),
    "generate(sampler options wrong)": lambda c: c.pipe.generate(
        "a", sampler={"name": "sample", "options": {"temperature": "hot"}}, max_new_tokens=2
    ),
    "generate(sampler temperature -1)": lambda c: c.pipe.generate(
        "a", sampler={"name": "sample", "options": {"temperature": -1.0}}, max_new_tokens=2
    ),
    "generate(samplers=5)": lambda c: c.pipe.generate("a", samplers=5, max_new_tokens=2),
    "generate(samplers={'image': 'nope'})": lambda c: c.pipe.generate(
        "a", samplers={"image": "nope"}, max_new_tokens=2
    ),
    "generate(guidance='x')": lambda c: c.pipe.generate("a", guidance="x", max_new_tokens=2),
    "generate(guidance=modality nope)": lambda c: c.pipe.generate(
        "a", mode="image", guidance=cs.Guidance(modality="nope"), max_new_tokens=70
    ),
    "generate(stop=5)": lambda c: c.pipe.generate("a", stop=5, max_new_tokens=2),
    "generate(stop=[5])": lambda c: c.pipe.generate("a", stop=[5], max_new_tokens=2),
    "generate(seed='x')": lambda c: c.pipe.generate("a", seed="x", max_new_tokens=2),
    "generate(max_time='x')": lambda c: c.pipe.generate("a", max_time="x", max_new_tokens=2),
    "generate(max_time=-1)": lambda c: c.pipe.generate("a", max_time=-1, max_new_tokens=2),
    "generate(progress_every='x')": lambda c: c.pipe.generate("a", progress_every="x", max_new_tokens=2),
    "generate(progress_every=-1)": lambda c: c.pipe.generate("a", progress_every=-1, max_new_tokens=2),
    "generate(unknown option)": lambda c: c.pipe.generate("a", max_new_tokenz=2),
    "generate(model=5)": lambda c: c.pipe.generate("a", model=5, max_new_tokens=2),
    "generate(past max_seq_len)": lambda c: c.pipe.generate("a", max_new_tokens=1000),
    "generate(prompt past max_seq_len)": lambda c: c.pipe.generate("a " * 400, max_new_tokens=1),
    "stream(prompt=123)": lambda c: list(c.pipe.stream(123, max_new_tokens=2)),
    "stream(max_new_tokens=0)": lambda c: list(c.pipe.stream("a", max_new_tokens=0)),
    "generate_tokens(model=None)": lambda c: cs.generate_tokens(None, [1, 2], max_new_tokens=2),
    "generate_tokens(model=nn.Linear)": lambda c: cs.generate_tokens(torch.nn.Linear(2, 2), [1], max_new_tokens=2),
    "generate_tokens('abc')": lambda c: cs.generate_tokens(c.model, "abc", max_new_tokens=2),
    "generate_tokens(None)": lambda c: cs.generate_tokens(c.model, None, max_new_tokens=2),
    "generate_tokens([])": lambda c: cs.generate_tokens(c.model, [], max_new_tokens=2),
    "generate_tokens([[]])": lambda c: cs.generate_tokens(c.model, [[]], max_new_tokens=2),
    "generate_tokens([[1.5]])": lambda c: cs.generate_tokens(c.model, [[1.5]], max_new_tokens=2),
    "generate_tokens([1.5])": lambda c: cs.generate_tokens(c.model, [1.5], max_new_tokens=2),
    "generate_tokens([[1], 'ab'])": lambda c: cs.generate_tokens(c.model, [[1], "ab"], max_new_tokens=2),
    "generate_tokens([-1])": lambda c: cs.generate_tokens(c.model, [-1], max_new_tokens=2),
    "generate_tokens([10**9])": lambda c: cs.generate_tokens(c.model, [10**9], max_new_tokens=2),
    "generate_tokens(3-D tensor)": lambda c: cs.generate_tokens(
        c.model, torch.zeros(1, 1, 1, dtype=torch.long), max_new_tokens=2
    ),
    "generate_tokens(float tensor)": lambda c: cs.generate_tokens(c.model, torch.zeros(3), max_new_tokens=2),
    "generate_tokens(empty tensor)": lambda c: cs.generate_tokens(
        c.model, torch.zeros(0, dtype=torch.long), max_new_tokens=2
    ),
    "generate_tokens(max_new_tokens='2')": lambda c: cs.generate_tokens(c.model, [1], max_new_tokens="2"),
    "generate_tokens(max_new_tokens=0)": lambda c: cs.generate_tokens(c.model, [1], max_new_tokens=0),
    "generate_tokens(mode=5)": lambda c: cs.generate_tokens(c.model, [1], max_new_tokens=2, mode=5),
    "generate_tokens(mode='video')": lambda c: cs.generate_tokens(c.model, [1], max_new_tokens=2, mode="video"),
    "generate_tokens(mode list length)": lambda c: cs.generate_tokens(
        c.model, [1], max_new_tokens=2, mode=["text"] * 3
    ),
    "generate_tokens(sampler='nope')": lambda c: cs.generate_tokens(c.model, [1], max_new_tokens=2, sampler="nope"),
    "generate_tokens(stop_ids=['a'])": lambda c: cs.generate_tokens(c.model, [1], max_new_tokens=2, stop_ids=["a"]),
    "generate_tokens(stop_ids=5)": lambda c: cs.generate_tokens(c.model, [1], max_new_tokens=2, stop_ids=5),
    "generate_tokens(guidance=5)": lambda c: cs.generate_tokens(c.model, [1], max_new_tokens=2, guidance=5),
    "generate_tokens(seed='x')": lambda c: cs.generate_tokens(c.model, [1], max_new_tokens=2, seed="x"),
    "generate_tokens(max_time='x')": lambda c: cs.generate_tokens(c.model, [1], max_new_tokens=2, max_time="x"),
    "generate_tokens(constraints=5)": lambda c: cs.generate_tokens(c.model, [1], max_new_tokens=2, constraints=5),
    "generate_tokens(vocabulary='x')": lambda c: cs.generate_tokens(c.model, [1], max_new_tokens=2, vocabulary="x"),
    "generate_tokens(vocabulary too big)": lambda c: cs.generate_tokens(
        c.model, [1], max_new_tokens=2, vocabulary=cs.Vocabulary.chameleon()
    ),
    "generate_tokens(past max_seq_len)": lambda c: cs.generate_tokens(c.model, [1] * 100, max_new_tokens=100),
    "FixedLengthBlock(variable block)": lambda c: plugin_api.FixedLengthBlock(
        c.vocab, plugin_api.ModalityBlock(modality="image", begin_id=1, end_id=2, code_ids=torch.arange(3))
    ),
    # -- the model ----------------------------------------------------------------------------
    "build_model(config=5)": lambda c: cs.build_model(5),
    "build_model(config=dict)": lambda c: cs.build_model({"dim": 32}),
    "build_model(vocab_size None)": lambda c: cs.build_model(cs.ModelConfig(dim=32, num_layers=1, num_heads=4)),
    "build_model(attention='nope')": lambda c: cs.build_model(
        cs.ModelConfig(dim=32, num_layers=1, num_heads=4, vocab_size=8), attention="nope"
    ),
    "build_model(stability=['nope'])": lambda c: cs.build_model(
        cs.ModelConfig(dim=32, num_layers=1, num_heads=4, vocab_size=8), stability=["nope"]
    ),
    "build_model(stability=5)": lambda c: cs.build_model(
        cs.ModelConfig(dim=32, num_layers=1, num_heads=4, vocab_size=8), stability=5
    ),
    "model(float ids)": lambda c: c.model(torch.zeros(1, 3)),
    "model(1-D ids)": lambda c: c.model(torch.zeros(3, dtype=torch.long)),
    "model(ids out of range)": lambda c: c.model(torch.full((1, 3), 10**6)),
    "model(negative ids)": lambda c: c.model(torch.full((1, 3), -1)),
    "model(list ids)": lambda c: c.model([[1, 2]]),
    "model(document_ids shape)": lambda c: c.model(torch.zeros(1, 3, dtype=torch.long), document_ids=torch.zeros(1, 2)),
    "model(past max_seq_len)": lambda c: c.model(torch.zeros(1, 200, dtype=torch.long)),
    "model.loss(shape mismatch)": lambda c: c.model.loss(torch.zeros(1, 3, 8), torch.zeros(1, 2, dtype=torch.long)),
    "model.loss(targets out of range)": lambda c: c.model.loss(
        torch.zeros(1, 3, c.vocab.size), torch.full((1, 3), c.vocab.size + 5)
    ),
    "model.new_cache(batch=0)": lambda c: c.model.new_cache(0),
    "model.new_cache(batch='x')": lambda c: c.model.new_cache("x"),
    "model(cache overflow)": lambda c: c.model(torch.zeros(1, 9, dtype=torch.long), cache=c.model.new_cache(1, 4)),
    "model(cache batch mismatch)": lambda c: c.model(
        torch.zeros(2, 1, dtype=torch.long), cache=c.model.new_cache(1, 4)
    ),
    "model_preset('nope')": lambda c: cs.model_preset("nope"),
    "model_preset(5)": lambda c: cs.model_preset(5),
    # -- training -----------------------------------------------------------------------------
    "train(data=5)": lambda c: c.pipe.train(5, steps=1),
    "train(data={})": lambda c: c.pipe.train({}, steps=1),
    "train(data sources missing file)": lambda c: c.pipe.train({"sources": [{"path": str(c.f.missing)}]}, steps=1),
    "train(data sources binary file)": lambda c: c.pipe.train({"sources": [{"path": str(c.f.binary)}]}, steps=1),
    "train(data sources bad document)": lambda c: c.pipe.train(
        {"sources": [{"path": str(c.f.bad_doc_jsonl)}]}, steps=1
    ),
    "train(data sources empty file)": lambda c: c.pipe.train({"sources": [{"path": str(c.f.empty)}]}, steps=1),
    "train(steps=0)": lambda c: c.pipe.train({"sources": [{"path": str(c.f.bad_doc_jsonl)}]}, steps=0),
    "train(steps='5')": lambda c: c.pipe.train({"sources": [{"path": str(c.f.bad_doc_jsonl)}]}, steps="5"),
    "train(trainer option wrong)": lambda c: cs.Pipeline(
        cs.PipelineConfig(trainer={"name": "local", "options": {"lr": "fast"}}),
        text_tokenizer=c.pipe.text_tokenizer,
        modalities=c.pipe.modalities,
        model=c.model,
    ).train(_ListSource(), steps=1),
    "train(trainer='nope')": lambda c: cs.Pipeline(
        cs.PipelineConfig(trainer="nope"), text_tokenizer=c.pipe.text_tokenizer, modalities={}, model=c.model
    ).train(_ListSource(), steps=1),
    "train(callback='nope')": lambda c: cs.Pipeline(
        cs.PipelineConfig(callbacks=["nope"]), text_tokenizer=c.pipe.text_tokenizer, modalities={}, model=c.model
    ).train(_ListSource(), steps=1),
    "train(out_dir=5)": lambda c: c.pipe.train(_ListSource(), steps=1, out_dir=5),
    "train(batch ids out of range)": lambda c: c.pipe.train(_ListSource(value=10**6), steps=1),
    "train(source not a BatchSource)": lambda c: c.pipe.train(object(), steps=1),
    "MixtureData(pipe=None)": lambda c: cs.MixtureData(
        None, cs.DataConfig(sources=[cs.SourceConfig(path="x")]), total_steps=1
    ),
    "MixtureData(missing source)": lambda c: cs.MixtureData(
        c.pipe, cs.DataConfig(sources=[cs.SourceConfig(path=str(c.f.missing))]), total_steps=1
    ).batch_at(0),
    # -- plugins ------------------------------------------------------------------------------
    "registry.build(kind nope)": lambda c: cs.get_registry().build("nope", "x"),
    "registry.build(name nope)": lambda c: cs.get_registry().build("trainer", "nope"),
    "registry.build(kind=5)": lambda c: cs.get_registry().build(5, "x"),
    "registry.build(options=5)": lambda c: cs.get_registry().build("trainer", "local", 5),
    "registry.records(kind nope)": lambda c: cs.get_registry().records("nope"),
    "available_plugins(kind nope)": lambda c: cs.available_plugins("nope"),
    "register_plugin(5)": lambda c: cs.register_plugin(5),
    "register_plugin(None)": lambda c: cs.register_plugin(None),
    "unregister_plugin('nope')": lambda c: cs.unregister_plugin("nope"),
    "use_registry(5)": lambda c: cs.use_registry(5).__enter__(),
}


class _ListSource:
    """A BatchSource of one fixed batch (``value`` fills the ids)."""

    def __init__(self, value: int = 1) -> None:
        self.value = value

    def batch_at(self, step: int, micro: int = 0) -> Batch:
        ids = torch.full((1, 4), self.value, dtype=torch.long)
        return Batch(input_ids=ids, targets=ids, document_ids=torch.zeros_like(ids))

    def stage(self, step: int) -> int:
        return 1

    @property
    def counters(self) -> dict[str, int]:
        return {}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_raises_a_chameleon_error(ctx, case):
    with pytest.raises(cs.ChameleonError) as info:
        CASES[case](ctx)
    assert str(info.value).strip(), "an error must say what was wrong"


# -- the command line ---------------------------------------------------------------------------


def _generate(c: Any, *args: str, model: Any = None, out: str = "o.html") -> list[str]:
    """``chameleon generate --model M ARGS --out OUT`` (the saved pipeline unless ``model`` is given)."""
    return ["generate", "--model", str(c.saved if model is None else model), *args, "--out", str(c.tmp / out)]


CLI_CASES: dict[str, Callable[[Any], list[str]]] = {
    "unknown command": lambda c: ["nope"],
    "plugins --kind nope": lambda c: ["plugins", "--kind", "nope"],
    "generate, missing model": lambda c: _generate(c, "--prompt", "a", model=c.f.missing),
    "generate, model is a file": lambda c: _generate(c, "--prompt", "a", model=c.f.garbage),
    "generate, no prompt": lambda c: _generate(c),
    "generate, missing image": lambda c: _generate(c, "--image", str(c.f.missing)),
    "generate, garbage image": lambda c: _generate(c, "--image", str(c.f.garbage)),
    "generate, mode video": lambda c: _generate(c, "--prompt", "a", "--mode", "video"),
    "generate, max-new-tokens -5": lambda c: _generate(c, "--prompt", "a", "--max-new-tokens", "-5"),
    "generate, max-new-tokens x": lambda c: _generate(c, "--prompt", "a", "--max-new-tokens", "x"),
    "generate, temperature -1": lambda c: _generate(c, "--prompt", "a", "--temperature", "-1"),
    "generate, out .xyz": lambda c: _generate(c, "--prompt", "a", out="o.xyz"),
    "train, missing config": lambda c: ["train", str(c.f.missing)],
    "train, garbage toml": lambda c: ["train", str(c.f.toml)],
    "train, garbage json": lambda c: ["train", str(c.f.garbage)],
    "train, empty config": lambda c: ["train", str(c.f.empty)],
    "train, directory": lambda c: ["train", str(c.f.dir)],
    "train, --set garbage": lambda c: ["train", str(c.f.yaml), "--set", "nonsense"],
    "train-image-tokenizer, missing config": lambda c: ["train-image-tokenizer", str(c.f.missing)],
    "train-image-tokenizer, garbage config": lambda c: ["train-image-tokenizer", str(c.f.garbage)],
    "plot, missing metrics": lambda c: ["plot", str(c.f.missing), "-o", str(c.tmp / "p.png")],
    "plot, garbage metrics": lambda c: ["plot", str(c.f.binary), "-o", str(c.tmp / "p.png")],
}


@pytest.mark.parametrize("case", sorted(CLI_CASES))
def test_bad_command_lines_exit_2_with_a_message(ctx, case, capsys):
    argv = CLI_CASES[case](ctx)
    try:
        status = main(argv)
    except SystemExit as exit:  # argparse's usage errors
        status = exit.code
    assert status == 2
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert any(line.startswith("error:") for line in lines) or "usage:" in err, err
    assert "Traceback" not in err


def test_the_sweep_counts(ctx):
    """The numbers docs/reliability.md quotes."""
    assert len(CASES) >= 300 and len(CLI_CASES) >= 20
