"""The command line, as a user runs it: console script and ``python -m``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

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
