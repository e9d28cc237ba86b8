"""Settings come from defaults, a TOML file, the environment and keyword arguments, in that order."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from driftrec.config import ConfigError, Settings, load_settings

DOCS = Path(__file__).parents[2] / "docs" / "configuration.md"


def test_defaults_select_the_embedded_model(no_config_file: Path) -> None:
    settings = load_settings()
    assert settings.embedded
    assert settings.llm_base_url is None
    assert settings.vllm_dtype == "float32"


def test_environment_selects_a_remote_endpoint(no_config_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRIFTREC_LLM_BASE_URL", "http://gpu-box:8000/v1/")
    monkeypatch.setenv("DRIFTREC_LLM_MODEL", "Qwen/Qwen2.5-7B-Instruct")
    settings = load_settings()
    assert not settings.embedded
    assert settings.llm_base_url == "http://gpu-box:8000/v1"
    assert settings.llm_model == "Qwen/Qwen2.5-7B-Instruct"


def test_toml_tables_prefix_their_keys_and_env_wins(no_config_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (no_config_file / "driftrec.toml").write_text(
        '[llm]\ntimeout_s = 5.5\nmax_concurrency = 3\n\n[vllm]\nextra_args = ["--seed", "1"]\n'
    )
    monkeypatch.setenv("DRIFTREC_LLM_MAX_CONCURRENCY", "4")
    settings = load_settings()
    assert settings.llm_timeout_s == 5.5
    assert settings.llm_max_concurrency == 4
    assert settings.vllm_extra_args == ["--seed", "1"]


def test_invalid_environment_value_names_the_variable(no_config_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRIFTREC_LLM_TIMEOUT_S", "-3")
    with pytest.raises(ConfigError, match="DRIFTREC_LLM_TIMEOUT_S"):
        load_settings()


def test_invalid_url_and_unknown_keys_are_rejected(no_config_file: Path) -> None:
    with pytest.raises(ConfigError, match=r"llm_base_url: .*http"):
        load_settings(llm_base_url="gpu-box:8000")
    (no_config_file / "driftrec.toml").write_text("[llm]\ntimeout = 3\n")
    with pytest.raises(ConfigError, match="DRIFTREC_LLM_TIMEOUT"):
        load_settings()


def test_missing_explicit_config_file_is_an_error(no_config_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRIFTREC_CONFIG", str(no_config_file / "nope.toml"))
    with pytest.raises(ConfigError, match="DRIFTREC_CONFIG: no such file"):
        load_settings()


def test_every_setting_is_documented() -> None:
    documented = set(re.findall(r"`DRIFTREC_([A-Z0-9_]+)`", DOCS.read_text()))
    fields = {name.upper() for name in Settings.model_fields}
    assert fields - documented == set(), "settings missing from docs/configuration.md"
    assert documented - fields - {"CONFIG"} == set(), "docs/configuration.md lists settings that do not exist"
