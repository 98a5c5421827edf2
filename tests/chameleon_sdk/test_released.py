"""Released checkpoint folders through ``Pipeline.from_pretrained``, with ``transformers`` as the oracle."""

from __future__ import annotations

import shutil

import numpy as np
import PIL.Image
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import chameleon_sdk as cs
from chameleon_sdk import plugin_api
from chameleon_sdk.tiny_release import TINY_CORPUS, write_tiny_release

transformers = pytest.importorskip("transformers")

SLOW_OK = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    return write_tiny_release(tmp_path_factory.mktemp("release") / "hf", "hf")


@pytest.fixture(scope="module")
def hf_pipe(hf_dir):
    return cs.Pipeline.from_pretrained(hf_dir)


@pytest.fixture(scope="module")
def hf_oracle(hf_dir):
    """``transformers``' processor (PIL backend, as the docs say to compare) and model for the folder."""
    processor = transformers.ChameleonProcessor.from_pretrained(hf_dir)
    settings_ = processor.image_processor.to_dict()
    keep = ("size", "crop_size", "resample", "rescale_factor", "image_mean", "image_std")
    processor.image_processor = transformers.ChameleonImageProcessorPil(**{k: settings_[k] for k in keep})
    model = transformers.ChameleonForConditionalGeneration.from_pretrained(hf_dir).eval()
    return processor, model


def oracle_ids(processor, model, text: str, images: list, *, chat: bool = False) -> list[int]:
    """What ``transformers`` feeds its model: the processor's ids with each image's placeholders
    replaced by its codes as BPE ids (``get_image_tokens``)."""
    kwargs = {"images": images} if images else {}
    out = processor(text=text, return_for_text_completion=not chat, return_tensors="pt", **kwargs)
    ids = out["input_ids"][0].clone()
    if images:
        with torch.no_grad():
            codes = model.model.get_image_tokens(out["pixel_values"])
        ids[ids == processor.image_token_id] = codes.flatten().to(ids.dtype)
    return ids.tolist()


texts = st.text(alphabet=st.characters(codec="utf-8", categories=("L", "N", "P", "Zs", "S")), max_size=40)


def picture(seed: int, size: tuple[int, int], mode: str) -> PIL.Image.Image:
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "RGBA": 4, "LA": 2, "L": 1}[mode]
    array = rng.integers(0, 256, size=(size[1], size[0], channels), dtype=np.uint8)
    return PIL.Image.fromarray(array.squeeze(-1) if channels == 1 else array, mode)


@SLOW_OK
@given(text=texts)
def test_bpe_plugin_equals_transformers_tokenizer(hf_dir, hf_pipe, text):
    oracle = transformers.PreTrainedTokenizerFast(tokenizer_file=str(hf_dir / "tokenizer.json"))
    ids = hf_pipe.text_tokenizer.encode(text)
    assert ids == oracle.encode(text, add_special_tokens=False)
    assert hf_pipe.text_tokenizer.decode(ids) == oracle.decode(ids)


@SLOW_OK
@given(
    before=texts,
    after=texts,
    seed=st.integers(0, 10**6),
    size=st.tuples(st.integers(4, 40), st.integers(4, 40)),
    mode=st.sampled_from(["RGB", "RGBA", "LA", "L"]),
)
def test_tokenize_equals_transformers_processor(hf_pipe, hf_oracle, before, after, seed, size, mode):
    processor, model = hf_oracle
    image = picture(seed, size, mode)
    ours = hf_pipe.tokenize(cs.Document.of(*(x for x in (before, image, after) if not isinstance(x, str) or x)))
    assert ours == oracle_ids(processor, model, f"{before}<image>{after}", [image])


def test_chat_form_appends_end_of_turn_like_transformers(hf_pipe, hf_oracle):
    processor, model = hf_oracle
    image = picture(1, (18, 16), "RGB")
    doc = cs.Document.of("What is in this picture? ", image)
    chat = hf_pipe.tokenize(doc, end_of_turn=True)
    assert chat == oracle_ids(processor, model, "What is in this picture? <image>", [image], chat=True)
    assert chat[-1] == hf_pipe.vocabulary.specials["eot"] == hf_pipe.text_tokenizer.token_ids()["<reserved08706>"]


def test_greyscale_with_transparency_key_is_composited_on_white(hf_pipe, hf_oracle):
    processor, model = hf_oracle
    grey = PIL.Image.fromarray(np.full((16, 16), 7, dtype=np.uint8), "L")
    grey.info["transparency"] = 7  # every pixel transparent: the picture is white
    white = PIL.Image.new("RGB", (16, 16), "white")
    assert hf_pipe.tokenize(cs.Document.of(grey)) == hf_pipe.tokenize(cs.Document.of(white))
    assert hf_pipe.tokenize(cs.Document.of(grey)) == oracle_ids(processor, model, "<image>", [grey])
    assert plugin_api.to_rgb(grey).getpixel((0, 0)) == (255, 255, 255)  # Meta's rule too


def test_greedy_text_equals_transformers_generate(hf_pipe, hf_oracle):
    _, model = hf_oracle
    vocab = hf_pipe.vocabulary
    # transformers masks image codes itself; Meta's rule also never samples specials and '<' names
    allowed = vocab.sampled_text_mask()
    allowed[vocab.specials["eos"]] = True
    suppress = torch.nonzero(~allowed).flatten().tolist()
    image = picture(3, (16, 20), "RGBA")
    for prompt in ("What is in this picture? ", "x <", "1024"):
        doc = cs.Document.of(prompt, image)
        ours = hf_pipe.generate(doc, max_new_tokens=12, stop=())
        ids = torch.tensor([hf_pipe.tokenize(doc)])
        with torch.no_grad():
            theirs = model.generate(
                ids, max_new_tokens=12, do_sample=False, suppress_tokens=suppress, eos_token_id=[vocab.specials["eos"]]
            )[0, ids.shape[1] :]
        theirs = [t for t in theirs.tolist() if t != vocab.specials["eos"]]
        assert ours == hf_pipe.detokenize(theirs), prompt


def test_text_mode_never_samples_specials_codes_or_angle_names(hf_dir, hf_pipe):
    vocab = hf_pipe.vocabulary
    names = hf_pipe.text_tokenizer.token_ids()
    angle = [i for n, i in names.items() if n.startswith("<") and n != "<"]
    assert vocab.unsampled.numel()  # the tiny tokenizer learned '<=', '</' ...
    forbidden = torch.tensor(angle + vocab.code_mask("image").nonzero().flatten().tolist())
    model = cs.load_model(hf_dir)
    with torch.no_grad():  # make every forbidden id the head's favourite
        model.output.weight[forbidden] = 100 * model.output.weight[forbidden].sign()
    out = cs.generate_tokens(model, hf_pipe.tokenize("x"), max_new_tokens=8, vocabulary=vocab).flatten()
    allowed = vocab.sampled_text_mask()
    allowed[vocab.specials["eos"]] = True
    assert bool(allowed[out].all()), out.tolist()


def test_hf_release_cannot_draw_and_says_why(hf_pipe):
    with pytest.raises(cs.GenerationError, match=r"no decoder.*Anole"):
        hf_pipe.generate("A watercolour of a lighthouse", mode="image")


@pytest.mark.parametrize("layout", ["hf", "hf-legacy"])
def test_both_processor_config_layouts_load(tmp_path, layout, hf_pipe):
    folder = write_tiny_release(tmp_path / layout, layout)
    pipe = cs.Pipeline.from_pretrained(folder, dtype=torch.bfloat16)
    assert pipe.model.tok_embeddings.weight.dtype == torch.bfloat16
    image = picture(5, (20, 16), "RGB")
    assert pipe.tokenize(cs.Document.of("a ", image)) == hf_pipe.tokenize(cs.Document.of("a ", image))


@pytest.mark.parametrize(
    ("missing", "purpose"),
    [
        ("tokenizer.json", "text tokenizer"),
        ("processor_config.json", "image processor's settings"),
        ("model.safetensors", "safetensors"),
    ],
)
def test_missing_files_are_named_with_their_purpose(tmp_path, hf_dir, missing, purpose):
    folder = tmp_path / "copy"
    shutil.copytree(hf_dir, folder)
    (folder / missing).unlink()
    with pytest.raises(cs.CheckpointError, match=rf"{missing}.*{purpose}|{purpose}.*{missing}"):
        cs.Pipeline.from_pretrained(folder)


def test_a_released_pipeline_saves_and_loads_without_its_source(tmp_path, hf_dir, hf_pipe):
    source = tmp_path / "source"
    shutil.copytree(hf_dir, source)
    pipe = cs.Pipeline.from_pretrained(source)
    pipe.save_pretrained(tmp_path / "saved")
    shutil.rmtree(source)
    loaded = cs.Pipeline.from_pretrained(tmp_path / "saved")
    image = picture(9, (16, 16), "RGB")
    doc = cs.Document.of(TINY_CORPUS[0], image)
    assert loaded.tokenize(doc) == hf_pipe.tokenize(doc)
    assert loaded.generate(doc, max_new_tokens=6) == hf_pipe.generate(doc, max_new_tokens=6)


def test_loaded_vocabulary_knows_the_image_block_length(hf_dir):
    model = cs.load_model(hf_dir)
    assert model.vocabulary.block("image").block_length == 16  # the tiny VQ's 4 x 4 grid
    block = model.vocabulary.block("image")
    with torch.no_grad():  # a model that favours end-of-image above everything
        model.output.weight[block.end_id] = 100 * model.output.weight[block.end_id].sign()
    prompt = [model.vocabulary.specials["bos"], block.begin_id]
    out = cs.generate_tokens(model, prompt, max_new_tokens=17, vocabulary=model.vocabulary, mode="image")
    codes = out.flatten().tolist()
    assert len(codes) == 17 and codes[-1] == block.end_id
    assert bool(model.vocabulary.code_mask("image")[torch.tensor(codes[:-1])].all())


def test_cfg_image_only_row_keeps_blocks_and_bos_only(hf_pipe):
    vocab = hf_pipe.vocabulary
    image = picture(2, (16, 16), "RGB")
    prompt = hf_pipe.tokenize(cs.Document.of("draw this ", image, " again"), end_of_turn=True)
    decoder = cs.TokenDecoder(
        hf_pipe.model,
        [prompt],
        max_new_tokens=17,
        modes=["image"],
        vocabulary=vocab,
        samplers={"text": lambda logits, **_: logits.argmax(-1)},
        guidance=cs.Guidance(),
    )
    full, image_only, uncond = decoder.physical_prompts
    block = vocab.block("image")
    assert full == [*prompt, block.begin_id]
    assert image_only == [vocab.specials["bos"], *hf_pipe.tokenize(cs.Document.of(image), bos=False), block.begin_id]
    assert uncond == [vocab.specials["bos"], block.begin_id]


def test_qk_norm_epsilon_is_fixed_whatever_norm_eps_says():
    config = cs.ModelConfig(dim=32, num_layers=1, num_heads=4, vocab_size=50, norm_eps=1e-3)
    model = cs.build_model(config, stability=["qk-norm"])
    attention = model.layers[0].attention
    assert attention.q_norm.eps == attention.k_norm.eps == 1e-5
    assert model.layers[0].attention_norm.eps == 1e-3


def test_convert_hf_to_native_and_back_to_a_folder_transformers_loads(tmp_path, hf_dir, hf_pipe, hf_oracle):
    from chameleon_sdk.convert import convert

    native = convert(hf_dir, tmp_path / "native", to="native")
    assert (native / "pipeline.json").is_file()
    again = convert(native, tmp_path / "hf", to="hf")
    image = picture(4, (20, 20), "RGB")
    doc = cs.Document.of("What is in this picture? ", image)
    assert cs.Pipeline.from_pretrained(again).tokenize(doc) == hf_pipe.tokenize(doc)
    theirs = transformers.ChameleonForConditionalGeneration.from_pretrained(again).eval()
    ids = torch.tensor([hf_pipe.tokenize(doc)])
    _, original = hf_oracle
    with torch.no_grad():
        assert torch.equal(theirs(ids).logits, original(ids).logits)
    processor = transformers.ChameleonProcessor.from_pretrained(again)
    assert processor.tokenizer.encode("x <= y", add_special_tokens=False) == hf_pipe.text_tokenizer.encode("x <= y")


def test_convert_refuses_bad_targets_and_the_cli_says_so(tmp_path, hf_dir):
    from chameleon_sdk.cli import main
    from chameleon_sdk.convert import convert

    with pytest.raises(cs.CheckpointError, match="--to must be one of"):
        convert(hf_dir, tmp_path / "x", to="gguf")
    with pytest.raises(cs.CheckpointError, match="does not exist"):
        convert(tmp_path / "missing", tmp_path / "x", to="native")
    assert main(["convert", str(tmp_path / "missing"), str(tmp_path / "x"), "--to", "hf"]) == 2
    assert not (tmp_path / "x").exists()


@pytest.fixture(scope="module")
def anole_dir(tmp_path_factory):
    return write_tiny_release(tmp_path_factory.mktemp("release") / "anole", "anole")


def test_anole_layout_draws_exactly_one_block(anole_dir):
    pipe = cs.Pipeline.from_pretrained(anole_dir)
    assert pipe.config.modalities[0].options["preprocessing"] == "meta"
    drawing = list(pipe.generate("A watercolour of a lighthouse", mode="image", guidance=cs.Guidance(), seed=0))
    assert len(drawing) == 1 and isinstance(drawing[0], cs.Image)
    assert drawing[0].image.size == (16, 16)
    same = cs.Pipeline.from_pretrained(anole_dir / "models" / "7b")  # one model folder finds ../../tokenizer
    assert same.tokenize(cs.Document.of("a ", drawing[0].image)) == pipe.tokenize(
        cs.Document.of("a ", drawing[0].image)
    )


def test_consolidate_params_override_params_json(tmp_path, anole_dir):
    folder = tmp_path / "anole"
    shutil.copytree(anole_dir, folder)
    consolidate = folder / "models" / "7b" / "consolidate_params.json"
    consolidate.write_text('{"model_parallel_size": 1, "rope_theta": 5000.0}')
    assert cs.load_model(folder / "models" / "7b").config.rope_theta == 5000.0


def test_meta_root_with_two_models_asks_which(tmp_path, anole_dir):
    folder = tmp_path / "meta"
    shutil.copytree(anole_dir, folder)
    shutil.copytree(folder / "models" / "7b", folder / "models" / "30b")
    with pytest.raises(cs.CheckpointError, match="several models"):
        cs.Pipeline.from_pretrained(folder)


def test_meta_vqgan_runs_at_512_pixels_as_metas_image_tokenizer_does():
    from chameleon_checkpoint.vqgan import architecture_from_taming

    ddconfig = {
        "ch": 128,
        "ch_mult": [1, 1, 2, 2, 4],
        "num_res_blocks": 2,
        "attn_resolutions": [16],
        "resolution": 256,
        "z_channels": 256,
        "in_channels": 3,
        "out_ch": 3,
    }
    config = {"model": {"params": {"embed_dim": 256, "n_embed": 8192, "ddconfig": ddconfig}}}
    architecture = architecture_from_taming(config, "vqgan.yaml")
    assert (architecture.resolution, architecture.block_length) == (512, 1024)
    assert list(architecture.attn_resolutions) == [32]  # the same level as 16 at 256 px


def test_convert_to_original_round_trips(tmp_path, anole_dir):
    from chameleon_sdk.convert import convert

    pipe = cs.Pipeline.from_pretrained(anole_dir)
    back = cs.Pipeline.from_pretrained(
        convert(convert(anole_dir, tmp_path / "n", to="native"), tmp_path / "o", to="original")
    )
    doc = cs.Document.of("x <= y ", picture(6, (24, 16), "RGBA"))
    assert back.tokenize(doc) == pipe.tokenize(doc)
    ids = torch.tensor([pipe.tokenize(doc)])
    with torch.no_grad():
        assert torch.equal(back.model(ids).logits, pipe.model(ids).logits)
