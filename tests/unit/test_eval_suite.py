"""The evaluation suite file: the packaged one names every study behind docs/results.md; a bad one
fails before anything runs, naming the file and the run."""

from __future__ import annotations

from pathlib import Path

import pytest

from driftrec.eval.suite import KINDS, SuiteError, load_suite


def test_the_packaged_suite_covers_every_study() -> None:
    runs = load_suite()
    assert {r.kind for r in runs} == set(KINDS)
    assert [r.name for r in runs] == [
        "retrieval",
        "offline",
        "llm-verbalizer",
        "llm-sampled",
        "llm-listwise",
        "llm-shuffles",
        "sessions",
        "sessions-llm",
        "profiles",
    ]
    offline = next(r for r in runs if r.name == "offline")
    assert "sasrec" in offline.options["systems"] and not offline.needs_llm
    assert next(r for r in runs if r.name == "sessions-llm").needs_llm
    assert next(r for r in runs if r.name == "profiles").needs_llm


def test_a_run_without_a_known_kind_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "suite.toml"
    bad.write_text('[[run]]\nname = "a"\nkind = "retrieval"\n\n[[run]]\nname = "b"\nkind = "benchmark"\n')
    with pytest.raises(SuiteError, match=r"suite.toml: run 2 .*'benchmark'"):
        load_suite(bad)


def test_broken_toml_and_duplicate_names_are_reported(tmp_path: Path) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text("[[run]\nname = ")
    with pytest.raises(SuiteError, match=r"broken\.toml"):
        load_suite(broken)
    twice = tmp_path / "twice.toml"
    twice.write_text('[[run]]\nname = "a"\nkind = "offline"\n[[run]]\nname = "a"\nkind = "sessions"\n')
    with pytest.raises(SuiteError, match="unique"):
        load_suite(twice)
