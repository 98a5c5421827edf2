"""Shared test setup: few threads (CI has 2 cores), a bounded hypothesis profile, an isolated registry."""

from __future__ import annotations

import os
import re
import sys
import types
from pathlib import Path

import attrs
import pytest
import torch
from hypothesis import HealthCheck, settings

import chameleon_sdk
from chameleon_sdk import plugin_api

torch.set_num_threads(int(os.environ.get("CHAMELEON_TEST_THREADS", "2")))

settings.register_profile(
    "ci",
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture
def registry(chameleon_registry):
    """The ``chameleon_registry`` fixture (``chameleon_sdk.testing``) under a short name."""
    return chameleon_registry


@pytest.fixture(scope="session")
def trained_sentencepiece(tmp_path_factory):
    """Path of a small sentencepiece model trained once on the bundled corpus."""
    from chameleon_sdk import bundled_corpus

    tokenizer = chameleon_sdk.PluginRegistry().build("text_tokenizer", "sentencepiece", {"vocab_size": 400})
    tokenizer.train(bundled_corpus())
    directory = tmp_path_factory.mktemp("sentencepiece")
    tokenizer.save(directory)
    return directory / "sentencepiece.model"


@attrs.frozen(kw_only=True)
class DigitsOptions:
    base: int = 10
    block: int | None = None  # fixed codes per payload, or variable length


class DigitsModality:
    """A tiny real modality for tests: a list of digits, one code per digit."""

    payload_types = (list,)

    def __init__(self, options: DigitsOptions) -> None:
        self.codebook_size = options.base
        self.block_length = options.block

    def encode(self, payload):
        return torch.tensor(payload, dtype=torch.long)

    def decode(self, codes):
        return codes.tolist()

    def decode_partial(self, codes):
        return codes.tolist()


class DigitsPlugin:
    @plugin_api.hookimpl
    def register_modalities(self, register):
        register("digits", DigitsModality, options=DigitsOptions)


@pytest.fixture
def digits_plugin():
    """A plugin object registering the ``digits`` modality (register it with ``registered_plugin``)."""
    return DigitsPlugin()


SUPPORT = Path(__file__).parent / "support"


@pytest.fixture(scope="session")
def sketch_module():
    """``tests/support/sketch_modality.py``, a third-party-style ``sketch`` modality, as a module."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("sketch_modality", SUPPORT / "sketch_modality.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["sketch_modality"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def sketch_plugin(sketch_module, registered_plugin):
    """The ``sketch`` modality registered for one test; returns its module (``Sketch``, ``SketchModality``)."""
    registered_plugin(sketch_module, name="sketch-plugin")
    return sketch_module


@pytest.fixture
def sketch_pipe(sketch_plugin, trained_sentencepiece):
    """A pipeline whose only modality is ``sketch`` (no image modality at all), with a tiny random model."""
    pipe = chameleon_sdk.Pipeline.from_config(
        {
            "text_tokenizer": {"name": "sentencepiece", "options": {"model_file": str(trained_sentencepiece)}},
            "modalities": ["sketch"],
            "model": {"dim": 32, "num_layers": 1, "num_heads": 2, "max_seq_len": 128},
            "attention": "eager",
        }
    )
    torch.manual_seed(0)
    pipe.model = pipe.build_model()
    return pipe


@pytest.fixture(scope="session")
def sketch_install(tmp_path_factory):
    """A folder that, on ``PYTHONPATH``, installs the ``sketch`` modality as distribution
    ``chameleon-sketch`` (a dist-info with an entry point), for ``chameleon`` run as a subprocess."""
    import shutil

    folder = tmp_path_factory.mktemp("site")
    shutil.copy(SUPPORT / "sketch_modality.py", folder / "sketch_modality.py")
    info = folder / "chameleon_sketch-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: chameleon-sketch\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[chameleon_sdk]\nsketch = sketch_modality\n")
    return folder


@pytest.fixture(scope="session")
def tiny_image_options():
    """Options of a tiny, untrained ``image`` tokenizer: 16 px -> 8 x 8 = 64 codes of 16."""
    return {
        "resolution": 16,
        "base_channels": 32,
        "channel_multipliers": [1, 1],
        "num_res_blocks": 1,
        "latent_channels": 8,
        "embed_dim": 8,
        "codebook_size": 16,
        "mid_attention": False,
    }


@pytest.fixture
def tiny_image_pipe(registry, trained_sentencepiece, tiny_image_options):
    """A pipeline with sentencepiece text, the tiny untrained image tokenizer and a random 1-layer model."""
    config = chameleon_sdk.PipelineConfig(
        text_tokenizer={"name": "sentencepiece", "options": {"model_file": str(trained_sentencepiece)}},
        modalities=({"name": "image", "options": tiny_image_options},),
        model=chameleon_sdk.ModelConfig(dim=32, num_layers=1, num_heads=4, max_seq_len=512),
        attention="eager",
    )
    pipe = chameleon_sdk.Pipeline.from_config(config)
    torch.manual_seed(0)
    pipe.model = pipe.build_model()
    return pipe


# -- executed documentation ---------------------------------------------------------------------
# Every ```python block of README.md and docs/**/*.md runs (tests/test_readme.py,
# tests/test_docs_blocks.py). The blocks of one file run in order, like one script: in one module
# namespace, in a temporary working directory, with a fresh plugin registry and a seeded torch RNG.
# `<!-- not-run: reason -->` on the line directly above a ```python fence skips that block.

NOT_RUN = re.compile(r"^\s*<!--\s*not-run:(.*?)-->\s*$")
FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<ticks>`{3,})[ \t]*(?P<lang>[^\s`]*)[^`]*$")
PYTHON_ALIASES = {"py", "py3", "python3", "pycon"}  # would silently escape execution


@attrs.frozen(kw_only=True)
class MarkdownBlock:
    """One ```python block: its first code line (1-based), its code and its not-run reason (None: it runs)."""

    path: Path
    line: int
    code: str
    not_run: str | None


def python_blocks(path: Path) -> list[MarkdownBlock]:
    """The ```python blocks of a Markdown file, in order.

    Fences of other languages are skipped whole (a python fence inside them is not a block). Raises
    AssertionError naming the file and line for an unclosed fence, a not-run marker that is not
    directly above a ```python fence or has no reason, and Python fenced as ``py``/``python3``.
    """
    path = Path(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[MarkdownBlock] = []
    markers_used: set[int] = set()
    fenced: set[int] = set()  # lines inside code fences of any language
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if opening is None:
            i += 1
            continue
        indent, ticks, lang = opening["indent"], opening["ticks"], opening["lang"]
        closing = re.compile(rf"^{re.escape(indent)}{ticks}`*[ \t]*$")
        end = next((j for j in range(i + 1, len(lines)) if closing.match(lines[j])), None)
        if end is None:
            raise AssertionError(f"{path}:{i + 1}: this code fence is never closed")
        fenced.update(range(i + 1, end))
        if lang in PYTHON_ALIASES:
            raise AssertionError(f"{path}:{i + 1}: fence Python as ```python (```{lang} blocks are not executed)")
        marker = NOT_RUN.match(lines[i - 1]) if i > 0 else None
        if lang == "python":
            if marker is not None:
                markers_used.add(i - 1)
                if not marker[1].strip():
                    raise AssertionError(f"{path}:{i}: a not-run marker needs a reason: <!-- not-run: why -->")
            body = [line.removeprefix(indent) if line.strip() else "" for line in lines[i + 1 : end]]
            blocks.append(
                MarkdownBlock(
                    path=path,
                    line=i + 2,
                    code="\n".join(body) + "\n",
                    not_run=marker[1].strip() if marker else None,
                )
            )
        i = end + 1
    for number, line in enumerate(lines):
        if NOT_RUN.match(line) and number not in markers_used and number not in fenced:
            raise AssertionError(f"{path}:{number + 1}: a not-run marker must sit directly above a ```python fence")
    return blocks


@pytest.fixture
def run_markdown(registry, tmp_path, monkeypatch):
    """``run_markdown(path) -> namespace``: execute a Markdown file's python blocks as one script.

    The module is registered in ``sys.modules`` under ``docs_<stem>`` (so ``sys.modules[__name__]``
    works, as in a script), the working directory is a fresh temporary one and the default plugin
    registry a fresh one. Tracebacks name the Markdown file and line. Not-run blocks are not compiled.
    """

    def run(path: Path) -> dict:
        path = Path(path).resolve()
        name = "docs_" + re.sub(r"\W", "_", path.stem)
        module = types.ModuleType(name)
        module.__file__ = str(path)
        monkeypatch.setitem(sys.modules, name, module)
        monkeypatch.chdir(tmp_path)
        torch.manual_seed(0)
        for block in python_blocks(path):
            if block.not_run is None:
                # padded with newlines so that tracebacks show the Markdown file's own line numbers
                exec(compile("\n" * (block.line - 1) + block.code, str(path), "exec"), module.__dict__)
        return module.__dict__

    return run
