"""Settings come from defaults, a TOML file, the environment and keyword arguments, in that order."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from driftrec.config import ConfigError, RankingSettings, RetrievalSettings, load_settings, setting_fields

DOCS = Path(__file__).parents[2] / "docs" / "configuration.md"


def test_defaults_select_the_embedded_model(no_config_file: Path) -> None:
    settings = load_settings()
    assert settings.embedded
    assert settings.llm.base_url is None
    assert settings.vllm.dtype == "native"  # bfloat16 or float32, by what the CPU computes (llm/runtime.py)
    from driftrec.llm.registry import DEFAULT_MODEL

    assert settings.model == DEFAULT_MODEL == "qwen2.5-coder-0.5b"  # one default, in the registry and here


def test_environment_selects_a_remote_endpoint(no_config_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRIFTREC_LLM_BASE_URL", "http://gpu-box:8000/v1/")
    monkeypatch.setenv("DRIFTREC_LLM_MODEL", "Qwen/Qwen2.5-7B-Instruct")
    settings = load_settings()
    assert not settings.embedded
    assert settings.llm.base_url == "http://gpu-box:8000/v1"
    assert settings.llm.model == "Qwen/Qwen2.5-7B-Instruct"


def test_toml_tables_prefix_their_keys_and_env_wins(no_config_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (no_config_file / "driftrec.toml").write_text(
        '[llm]\ntimeout_s = 5.5\nmax_concurrency = 3\n\n[vllm]\nextra_args = ["--seed", "1"]\n'
    )
    monkeypatch.setenv("DRIFTREC_LLM_MAX_CONCURRENCY", "4")
    settings = load_settings()
    assert settings.llm.timeout_s == 5.5
    assert settings.llm.max_concurrency == 4
    assert settings.vllm.extra_args == ["--seed", "1"]


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
    fields = {name.upper() for name in setting_fields()}
    assert fields - documented == set(), "settings missing from docs/configuration.md"
    assert documented - fields - {"CONFIG"} == set(), "docs/configuration.md lists settings that do not exist"


def test_settings_come_in_groups_under_their_flat_names(no_config_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRIFTREC_RETRIEVAL_WEIGHTS", '{"cooc": 2, "popularity": 0.5}')  # dicts and lists as JSON
    settings = load_settings(ranking_llm_weight=0.25, memory={"alpha": 0.3})
    assert settings.retrieval.weights == {"cooc": 2.0, "popularity": 0.5}
    assert isinstance(settings.retrieval, RetrievalSettings)  # a component is handed its group alone
    assert settings.ranking.llm_weight == 0.25 and settings.memory.alpha == 0.3
    assert settings.chroma.path == settings.data_dir / "chroma"
    with pytest.raises(ValueError, match="frozen"):
        settings.retrieval.rrf_k = 5  # type: ignore[misc]  # groups are values: change them by copying


def test_a_copy_changes_one_setting_by_its_flat_name(no_config_file: Path) -> None:
    settings = load_settings()
    changed = settings.model_copy(update={"llm_cache_path": Path("/tmp/c.db"), "data_dir": Path("/tmp/d")})
    assert changed.llm.cache_path == Path("/tmp/c.db") and changed.data_dir == Path("/tmp/d")
    assert changed.llm.timeout_s == settings.llm.timeout_s  # the rest of the group is kept
    assert settings.llm.cache_path is None  # the original is untouched


def test_the_reranker_is_handed_the_ranking_group_with_its_one_set_of_defaults(no_config_file: Path) -> None:
    from driftrec.ranking import RankingPolicy, Reranker

    assert RankingPolicy is RankingSettings  # no second list of defaults to disagree with (llm_weight was 0.5)
    reranker = Reranker(None, load_settings().ranking)
    assert reranker.policy.llm_weight == Reranker(None).policy.llm_weight == 0.0


def test_keywords_win_over_the_environment_field_by_field(
    no_config_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (no_config_file / "driftrec.toml").write_text("[memory]\nalpha = 0.9\nhalf_life_days = 7\n")
    monkeypatch.setenv("DRIFTREC_MEMORY_ALPHA", "0.7")
    monkeypatch.setenv("DRIFTREC_MEMORY_MAX_INTERESTS", "5")
    settings = load_settings(memory={"alpha": 0.3})  # a group given whole, as a keyword
    assert settings.memory.alpha == 0.3  # keyword > environment > file
    assert settings.memory.max_interests == 5 and settings.memory.half_life_days == 7  # the rest still merge
    assert load_settings(memory_alpha=0.2).memory.alpha == 0.2
    assert load_settings().memory.alpha == 0.7
