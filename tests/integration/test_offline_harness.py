"""The offline harness end to end on real MovieLens-100K: fit, rank, score with ranx, write a report."""

from __future__ import annotations

import json
from pathlib import Path

from driftrec.config import Settings
from driftrec.data import load_movielens_100k
from driftrec.eval.runner import run_offline, write_report


async def test_small_offline_run_produces_a_consistent_report(settings: Settings, tmp_path: Path) -> None:
    dataset = load_movielens_100k(settings.cache_dir)
    systems = ["random", "most-popular", "item-knn", "driftrec-retrieval"]
    report = await run_offline(settings, dataset, systems, stage="valid", users=40)
    assert report.users == 40
    assert [s.name for s in report.systems] == systems
    for system in report.systems:
        m = system.metrics
        for k1, k2 in ((1, 5), (5, 10), (10, 20)):
            assert 0.0 <= m[f"hit_rate@{k1}"] <= m[f"hit_rate@{k2}"] <= 1.0
            assert m[f"ndcg@{k1}"] <= m[f"ndcg@{k2}"] + 1e-9
        lo, hi = system.intervals["ndcg@10"]
        assert lo <= m["ndcg@10"] <= hi
        assert 0 < system.beyond["coverage@10"] <= 1
    assert report.significance["ours"] == "driftrec-retrieval"
    assert 0.0 <= report.significance["p_value"] <= 1.0

    path = write_report(report, tmp_path)
    saved = json.loads(path.read_text())
    assert saved["protocol"].startswith("leave-one-out")
    assert {s["name"] for s in saved["systems"]} == set(systems)
    assert "| driftrec-retrieval |" in (tmp_path / "offline.md").read_text()
