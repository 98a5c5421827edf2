"""The command line, as a user runs it: console script and ``python -m``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from chameleon_sdk.cli import main
from chameleon_sdk.pipeline import Pipeline


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False)


def test_python_dash_m_lists_plugins_as_json(tmp_path):
    result = _run(sys.executable, "-m", "chameleon_sdk", "plugins", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    listed = json.loads(result.stdout)
    assert any(p["kind"] == "text_tokenizer" and p["name"] == "sentencepiece" for p in listed)


@pytest.mark.skipif(
    shutil.which("chameleon") is None and not (Path(sys.executable).parent / "chameleon").exists(),
    reason="console script not installed",
)
def test_console_script_demo_quick(tmp_path):
    script = shutil.which("chameleon") or str(Path(sys.executable).parent / "chameleon")
    result = _run(script, "demo", "--quick", "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = tmp_path / "out"
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(manifest["text_to_image"]) == 4 and len(manifest["image_to_text"]) == 8
    for item in manifest["text_to_image"] + manifest["image_to_text"]:
        assert (out / item["image"]).is_file()
    assert all(set(i) == {"prompt", "color", "shape", "image"} for i in manifest["text_to_image"])
    assert all(set(i) == {"image", "color", "shape", "output"} for i in manifest["image_to_text"])
    assert manifest["metrics"]["final_loss"] > 0 and "psnr" in manifest["metrics"]["image_tokenizer"]
    assert (out / "run" / "metrics.jsonl").is_file() and "data:image/png" in (out / "index.html").read_text()
    reloaded = Pipeline.from_pretrained(out / "model")
    assert reloaded.model is not None and "image" in reloaded.modalities


def test_errors_become_messages_and_exit_code_2(capsys):
    assert main(["plugins", "--kind", "text_tokenizer"]) == 0
    with pytest.raises(SystemExit) as info:
        main(["plugins", "--kind", "nonsense"])
    assert info.value.code == 2
