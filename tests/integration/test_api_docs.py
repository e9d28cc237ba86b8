"""docs/api.md is executable: every Python example in it runs, as a user would run it, and its own
asserts hold. Each example runs in a fresh process on a copy of the seeded data, talking to the
session's real vLLM as an OpenAI-compatible endpoint (the examples themselves do not change)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from driftrec.config import Settings
from driftrec.llm import LLM
from tests.conftest import copy_of, endpoint_env

pytestmark = pytest.mark.vllm
DOC = Path(__file__).parents[2] / "docs" / "api.md"
EXAMPLES = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)


def test_the_doc_has_examples() -> None:
    assert len(EXAMPLES) >= 2


@pytest.mark.parametrize("number", range(len(EXAMPLES)))
def test_example_runs(number: int, settings: Settings, llm: LLM, seeded_data: Path, tmp_path: Path) -> None:
    data = copy_of(seeded_data, tmp_path / "data")
    script = tmp_path / "example.py"
    script.write_text(EXAMPLES[number])
    env = endpoint_env(settings, llm, data)
    done = subprocess.run(
        [sys.executable, str(script)], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stdout.strip()
