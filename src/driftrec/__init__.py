"""driftrec: an LLM-native recommender with drifting long-term profiles and short-term sessions.

The public surface, imported lazily (``from driftrec import Recommender`` loads only what it needs):
the async ``Recommender`` facade, settings, the LLM connection and embedded-model registry, data
loaders, memory, the evaluation studies and the demo. The command line imports only from here.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_PUBLIC: dict[str, tuple[str, str]] = {
    "CheckpointError": ("driftrec.llm.checkpoint", "CheckpointError"),
    "ConfigError": ("driftrec.config", "ConfigError"),
    "DEFAULT_MODEL": ("driftrec.llm.registry", "DEFAULT_MODEL"),
    "Database": ("driftrec.memory.db", "Database"),
    "DatasetError": ("driftrec.data", "DatasetError"),
    "EMBEDDED_MODELS": ("driftrec.llm.registry", "MODELS"),
    "EventStore": ("driftrec.memory.events", "EventStore"),
    "Filters": ("driftrec.models", "Filters"),
    "KeyStore": ("driftrec.memory.keys", "KeyStore"),
    "LLM": ("driftrec.llm", "LLM"),
    "LLMError": ("driftrec.llm", "LLMError"),
    "LLM_CONTEXTS": ("driftrec.eval.llm_study", "CONTEXTS"),
    "Memory": ("driftrec.memory.service", "Memory"),
    "ProfileEdit": ("driftrec.models", "ProfileEdit"),
    "REQUEST_SYSTEMS_LLM": ("driftrec.eval.request_study", "SYSTEMS_LLM"),
    "REQUEST_SYSTEMS_NO_LLM": ("driftrec.eval.request_study", "SYSTEMS_NO_LLM"),
    "Recommender": ("driftrec.agent", "Recommender"),
    "RecommenderError": ("driftrec.agent", "RecommenderError"),
    "Settings": ("driftrec.config", "Settings"),
    "SqliteDatabase": ("driftrec.memory.db", "SqliteDatabase"),
    "StoreUnavailable": ("driftrec.memory.db", "StoreUnavailable"),
    "SuiteError": ("driftrec.eval.suite", "SuiteError"),
    "UnknownKey": ("driftrec.memory.keys", "UnknownKey"),
    "UnknownModel": ("driftrec.llm.registry", "UnknownModel"),
    "UserId": ("driftrec.models", "UserId"),
    "build_requests": ("driftrec.eval.request_study", "build_requests"),
    "connect": ("driftrec.llm", "connect"),
    "create_app": ("driftrec.server", "create_app"),
    "demo_settings": ("driftrec.demo", "demo_settings"),
    "load_catalog": ("driftrec.data", "load_catalog"),
    "load_grouplens_100k": ("driftrec.data", "load_grouplens_100k"),
    "load_items": ("driftrec.agent.recommender", "load_items"),
    "load_movielens_100k": ("driftrec.data", "load_movielens_100k"),
    "load_settings": ("driftrec.config", "load_settings"),
    "load_suite": ("driftrec.eval.suite", "load_suite"),
    "open_item_index": ("driftrec.retrieval.store", "open_item_index"),
    "open_database": ("driftrec.memory.db", "open_database"),
    "open_llm": ("driftrec.llm", "open_llm"),
    "prepare_model": ("driftrec.llm.checkpoint", "prepare_model"),
    "profile_timeline": ("driftrec.plots", "profile_timeline"),
    "progress_bar": ("driftrec.demo", "progress_bar"),
    "ready_line": ("driftrec.demo", "ready_line"),
    "replay": ("driftrec.memory.replay", "replay"),
    "run_demo": ("driftrec.demo", "run_demo"),
    "run_llm_eval": ("driftrec.eval.llm_study", "run_llm_eval"),
    "run_offline": ("driftrec.eval.runner", "run_offline"),
    "run_profile_study": ("driftrec.eval.profile_study", "run_profile_study"),
    "run_ranker_study": ("driftrec.eval.ranker_study", "run_ranker_study"),
    "run_request_study": ("driftrec.eval.request_study", "run_request_study"),
    "run_retrieval_study": ("driftrec.eval.retrieval_study", "run_retrieval_study"),
    "run_session_study": ("driftrec.eval.session_study", "run_session_study"),
    "run_suite": ("driftrec.eval.suite", "run_suite"),
    "save_catalog": ("driftrec.agent.recommender", "save_catalog"),
    "serve_logging": ("driftrec.server.logs", "serve_logging"),
    "serve_processes": ("driftrec.server.processes", "serve_processes"),
    "settings_table": ("driftrec.config", "settings_table"),
    "show_rest": ("driftrec.demo", "show_rest"),
    "user_block": ("driftrec.demo", "user_block"),
    "write_offline_report": ("driftrec.eval.runner", "write_report"),
    "write_profile_report": ("driftrec.eval.profile_study", "write_report"),
    "write_ranker_report": ("driftrec.eval.ranker_study", "write_report"),
    "write_request_report": ("driftrec.eval.request_study", "write_report"),
    "write_retrieval_study": ("driftrec.eval.retrieval_study", "write_study"),
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    try:
        module, attribute = _PUBLIC[name]
    except KeyError:
        raise AttributeError(f"module 'driftrec' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_PUBLIC])
