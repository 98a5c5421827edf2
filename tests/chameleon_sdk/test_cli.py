"""The command line, as a user runs it: console script and ``python -m``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import chameleon_sdk
from chameleon_sdk.cli import main


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False)


def test_python_dash_m_lists_plugins_as_json(tmp_path):
    result = _run(sys.executable, "-m", "chameleon_sdk", "plugins", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    listed = json.loads(result.stdout)
    assert any(p["kind"] == "text_tokenizer" and p["name"] == "sentencepiece" for p in listed)


def test_errors_become_messages_and_exit_code_2(capsys):
    assert main(["plugins", "--kind", "text_tokenizer"]) == 0
    with pytest.raises(SystemExit) as info:
        main(["plugins", "--kind", "nonsense"])
    assert info.value.code == 2


def _chameleon(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``chameleon ARGS`` as a user runs it (the console script), stdin closed, not a terminal."""
    script = str(Path(sys.executable).with_name("chameleon"))
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(
        [script, *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=300, check=False
    )


def test_bare_command_prints_help_and_version_is_there(tmp_path):
    bare = _chameleon(cwd=tmp_path)
    assert bare.returncode == 0, bare.stderr
    assert bare.stdout.startswith("usage: chameleon") and "generate" in bare.stdout and "plugins" in bare.stdout
    version = _chameleon("--version", cwd=tmp_path)
    assert version.returncode == 0 and version.stdout.strip() == f"chameleon-sdk {chameleon_sdk.__version__}"


def _run_and_list_imports(argv: list[str], modules: tuple[str, ...], cwd) -> subprocess.CompletedProcess:
    """``chameleon ARGV`` in a fresh interpreter; its stdout ends with ``LOADED [...]``: which of
    ``modules`` it imported."""
    code = (
        "import sys; from chameleon_sdk.cli import main\n"
        f"try:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
        f"print('LOADED', [m for m in {modules!r} if m in sys.modules])"
    )
    result = _run(sys.executable, "-c", code, cwd=cwd)
    assert result.returncode == 0, result.stderr
    return result


def test_help_imports_no_torch_and_no_plugin_module_beyond_its_package(tmp_path):
    """What makes ``chameleon --help`` start fast (the time itself is in benchmarks/cli_startup.py): plugin
    packages are imported, as their ``register_commands`` hooks add subcommands, but nothing they load lazily."""
    modules = (
        "torch",
        "PIL",
        "chameleon_text.sentencepiece_tokenizer",
        "chameleon_image.tokenizer",
        "chameleon_apps.demo",
    )
    result = _run_and_list_imports(["--help"], modules, tmp_path)
    assert "LOADED []" in result.stdout
    assert "demo" in result.stdout and "lab" in result.stdout  # added by chameleon_apps' register_commands


def test_listing_plugins_imports_no_torch(tmp_path):
    """Built-in plugins register by reference: ``chameleon plugins`` reads names and docstrings only."""
    modules = ("torch", "PIL", "sentencepiece", "chameleon_text.sentencepiece_tokenizer", "chameleon_image.tokenizer")
    result = _run_and_list_imports(["plugins"], modules, tmp_path)
    assert "LOADED []" in result.stdout
    assert "qk-norm" in result.stdout and "QK-norm: LayerNorm" in result.stdout  # the docstring, read unimported


@pytest.mark.parametrize("module", ["chameleon_sdk", "chameleon_sdk.plugin_api"])
def test_public_names_resolve_lazily_and_all_of_them_exist(module):
    import importlib

    from chameleon_sdk.lazy_exports import exports_of

    package = importlib.import_module(module)
    exports = exports_of(package.__file__)
    eager = {"__version__", "lazy_module_attributes"}  # the version, and what the lazy loading itself uses
    assert set(exports) | (eager & set(package.__all__)) == set(package.__all__)
    for name in package.__all__:
        assert getattr(package, name) is not None
    with pytest.raises(AttributeError, match="no attribute 'nonexistent'"):
        package.nonexistent  # noqa: B018


def test_plugins_has_a_header_row(tmp_path):
    result = _chameleon("plugins", "--kind", "modality", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    header, *rows = result.stdout.splitlines()
    assert header.split() == ["KIND", "NAME", "PROVIDER", "DESCRIPTION"]
    assert any(row.split()[:2] == ["modality", "image"] for row in rows)


def test_a_broken_plugin_is_reported_once(tmp_path):
    site = tmp_path / "site"
    info = site / "broken_plugin-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[chameleon_sdk]\nbroken = no_such_module_anywhere\n")
    expected = [
        "warning: plugin entry point 'broken' (no_such_module_anywhere) from distribution 'broken-plugin' failed "
        "to load: ModuleNotFoundError: No module named 'no_such_module_anywhere'"
    ]
    result = _chameleon("plugins", cwd=tmp_path, env={"PYTHONPATH": str(site)})
    assert result.returncode == 0, result.stderr
    assert [line for line in result.stderr.splitlines() if "'broken'" in line] == expected, result.stderr
    assert "Traceback" not in result.stderr and "KIND" in result.stdout
    # any other command says it too (the entry points load while the commands are collected)
    result = _chameleon("--help", cwd=tmp_path, env={"PYTHONPATH": str(site)})
    assert result.returncode == 0, result.stderr
    assert [line for line in result.stderr.splitlines() if "'broken'" in line] == expected, result.stderr


def test_a_closed_pipe_ends_quietly(tmp_path):
    """``chameleon plugins | head -1``: the reader is gone before the output is written."""
    script = str(Path(sys.executable).with_name("chameleon"))
    with subprocess.Popen([script, "plugins"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.close()
        stderr = proc.stderr.read().decode()
        proc.wait(timeout=300)
    assert "Traceback" not in stderr and "BrokenPipe" not in stderr, stderr
    assert proc.returncode in (0, 1)


@pytest.fixture
def sketch_pipeline(sketch_pipe, tmp_path):
    """A saved pipeline with a ``sketch`` modality and no image modality."""
    return sketch_pipe.save_pretrained(tmp_path / "sketch-pipe")


def test_generate_prints_to_stdout_without_out(sketch_pipeline, sketch_install, tmp_path):
    env = {"PYTHONPATH": str(sketch_install)}
    common = ["generate", "--model", str(sketch_pipeline), "--prompt", "a red", "--max-new-tokens", "6"]
    for out in ([], ["--out", "-"]):
        result = _chameleon(*common, *out, cwd=tmp_path, env=env)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip(), "the generated text goes to stdout"
        assert "Traceback" not in result.stderr and "\r" not in result.stderr
    assert not list(tmp_path.glob("*.html"))


@pytest.mark.slow
def test_generate_with_compile_frozen_prints_the_eager_output(sketch_pipeline, sketch_install, tmp_path):
    # a block with guidance: three rows, whose matmuls inductor autotunes when it compiles them, which
    # an empty inductor cache makes it do here (the frozen step itself is tested in
    # tests/chameleon_sdk/generation/test_compiled.py)
    env = {"PYTHONPATH": str(sketch_install), "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor")}
    common = ["generate", "--model", str(sketch_pipeline), "--prompt", "a", "--mode", "sketch", "--seed", "0"]
    common += ["--max-new-tokens", "8"]
    eager = _chameleon(*common, "--quiet", cwd=tmp_path, env=env)
    frozen = _chameleon(*common, "--quiet", "--compile-frozen", cwd=tmp_path, env=env)
    assert eager.returncode == 0 and frozen.returncode == 0, frozen.stderr
    assert frozen.stdout == eager.stdout and eager.stdout.strip()
    assert frozen.stderr == "", frozen.stderr  # --quiet: nothing from inductor's autotuning either


def test_generate_in_a_plugin_mode_with_default_flags(sketch_pipeline, sketch_install, tmp_path):
    """``--mode sketch`` on a model without an image modality: guidance follows the mode."""
    env = {"PYTHONPATH": str(sketch_install)}
    out = tmp_path / "out.html"
    args = ["generate", "--model", str(sketch_pipeline), "--prompt", "a", "--mode", "sketch", "--max-new-tokens", "8"]
    result = _chameleon(*args, "--out", str(out), cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    assert '<svg class="sketch"' in out.read_text(encoding="utf-8")  # the plugin's render_html
    # off a terminal: no bar redrawn with carriage returns, one plain line that counts codes
    assert "\r" not in result.stderr and "codes" in result.stderr, result.stderr
    stdout = _chameleon(*args, cwd=tmp_path, env=env)
    assert stdout.returncode == 0, stdout.stderr
    assert "[sketch:" in stdout.stdout  # the plugin's render_text
    quiet = _chameleon(*args, "--quiet", "--out", str(out), cwd=tmp_path, env=env)
    assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr


def test_generate_with_a_bad_mode_is_a_message(sketch_pipeline, sketch_install, tmp_path):
    env = {"PYTHONPATH": str(sketch_install)}
    result = _chameleon(
        "generate", "--model", str(sketch_pipeline), "--prompt", "a", "--mode", "image", cwd=tmp_path, env=env
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "image" in result.stderr and "sketch" in result.stderr, result.stderr


def test_train_again_says_the_run_is_finished_and_extending_counts_new_steps(trained_sentencepiece, tmp_path):
    (tmp_path / "train.jsonl").write_text(
        "".join(json.dumps({"segments": [{"text": f"a red square number {i}"}]}) + "\n" for i in range(8))
    )
    (tmp_path / "run.toml").write_text(
        f"""steps = 2
out_dir = "{(tmp_path / "run").as_posix()}"
[pipeline]
text_tokenizer = {{name = "sentencepiece", options = {{model_file = "{trained_sentencepiece.as_posix()}"}}}}
model = {{dim = 16, num_layers = 1, num_heads = 2, max_seq_len = 32}}
trainer = {{name = "local", options = {{precision = "fp32"}}}}
[data]
seq_len = 16
batch_size = 2
sources = [{{path = "train.jsonl"}}]
"""
    )
    first = _chameleon("train", "run.toml", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("trained 2 steps (from step 0)"), first.stdout
    assert "\r" not in first.stderr and "train: 2/2 step" in first.stderr  # plain lines off a terminal
    again = _chameleon("train", "run.toml", "--quiet", cwd=tmp_path)
    assert again.returncode == 2 and "Traceback" not in again.stderr
    assert "already finished: its newest checkpoint is step 2 of steps=2" in again.stderr, again.stderr
    assert "nan" not in again.stdout
    lower = _chameleon("train", "run.toml", "--set", "steps=1", cwd=tmp_path)
    assert lower.returncode == 2 and "past steps=1" in lower.stderr, lower.stderr
    more = _chameleon("train", "run.toml", "--quiet", "--set", "steps=3", cwd=tmp_path)
    assert more.returncode == 0, more.stderr
    assert more.stdout.startswith("trained 1 steps (steps 2-3)"), more.stdout
    assert "learning-rate schedule continues as first planned" in more.stderr
    assert more.stderr.startswith("warning: "), more.stderr  # a message, not a warnings-module source line
