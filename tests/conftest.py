"""Shared fixtures: real settings in a temporary data dir, the prepared model, one embedded vLLM.

The model cache is the user's normal cache (converting the checkpoint takes ~40 s; doing it once per
machine is the point of the cache). Everything stateful goes to a per-session temporary folder.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from driftrec.config import Settings, load_settings
from driftrec.llm import LLM, open_llm
from driftrec.llm.checkpoint import PreparedModel, prepare_model


@pytest.fixture(scope="session")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    data = tmp_path_factory.mktemp("driftrec-data")
    log = data / "llm-log.jsonl"
    return load_settings(data_dir=data, llm_log_path=log if os.environ.get("DRIFTREC_TEST_LOG") else None)


@pytest.fixture(scope="session")
def prepared(settings: Settings) -> PreparedModel:
    return prepare_model(settings)


@pytest.fixture(scope="session")
async def llm(settings: Settings) -> AsyncIterator[LLM]:
    """The real embedded vLLM, started once for the whole test session."""
    connected = await open_llm(settings)
    try:
        yield connected
    finally:
        await connected.aclose()


@pytest.fixture()
def no_config_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Run in an empty folder with no DRIFTREC_* variables, so only what the test sets counts."""
    for key in list(os.environ):
        if key.startswith("DRIFTREC_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    return tmp_path
