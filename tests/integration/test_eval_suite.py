"""`driftrec eval all` on real MovieLens-100K: one suite runs several studies, each into its own
folder, and its tables are exactly the ones the standalone studies produce (no LLM needed here; the
LLM studies have their own end-to-end tests)."""

from __future__ import annotations

import json
from pathlib import Path

from driftrec.config import Settings
from driftrec.data import load_movielens_100k
from driftrec.eval.runner import run_offline
from driftrec.eval.suite import load_suite, run_suite

SUITE = """
[[run]]
name = "candidates"
kind = "retrieval"

[[run]]
name = "baselines"
kind = "offline"
systems = ["most-popular", "driftrec-retrieval"]

[[run]]
name = "next-session"
kind = "sessions"
llm = false
baselines = ["most-popular", "item-knn"]
"""


async def test_a_suite_runs_every_study_and_reproduces_them(settings: Settings, tmp_path: Path) -> None:
    dataset = load_movielens_100k(settings.cache_dir)
    (tmp_path / "suite.toml").write_text(SUITE)
    runs = load_suite(tmp_path / "suite.toml")
    report = await run_suite(settings, dataset, runs, tmp_path / "out", users=25)

    text = report.read_text()
    for name in ("candidates", "baselines", "next-session"):
        assert f"## {name} (" in text and (tmp_path / "out" / name).is_dir()
    assert "users capped at 25" in text and "| cooc |" in text and "NDCG@10 by alpha" in text
    summary = json.loads((tmp_path / "out" / "suite.json").read_text())
    assert [r["name"] for r in summary["runs"]] == ["candidates", "baselines", "next-session"]
    assert (tmp_path / "out" / "baselines" / "offline.png").stat().st_size > 1000  # bars with intervals
    assert (tmp_path / "out" / "next-session" / "sessions-alpha.png").stat().st_size > 1000
    assert (tmp_path / "out" / "candidates" / "retrieval.png").stat().st_size > 1000  # hit rate per source

    suite_offline = json.loads((tmp_path / "out" / "baselines" / "offline.json").read_text())
    direct = await run_offline(settings, dataset, ["most-popular", "driftrec-retrieval"], users=25)
    assert [s["metrics"] for s in suite_offline["systems"]] == [
        {k: round(v, 4) for k, v in s.metrics.items()} for s in direct.systems
    ]
