"""A new system is one class: registered once, the offline harness and session replay both run it, on
the same users and the same split as every other system (real MovieLens-100K). driftrec's learned stage
is such a system too."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from driftrec.config import Settings
from driftrec.data import load_movielens_100k
from driftrec.eval.runner import leave_one_out_stage, run_offline
from driftrec.eval.session_study import run_session_study
from driftrec.eval.systems import SYSTEMS, Rankings, StageData, System, make_system, register_system


class NewestFirst(System):
    """Recommends the latest releases the user has not seen: a one-class system for this test."""

    name = "newest-first"
    group = "baseline"

    async def fit(self, stage: StageData) -> None:
        self.order = sorted(stage.dataset.items, key=lambda i: -(stage.dataset.items[i].year or 0))

    async def rank(self, stage: StageData, k: int) -> Rankings:
        out = {}
        for user, case in stage.cases.items():
            seen = {e.item for e in case.history}
            out[user] = [i for i in self.order if i not in seen][:k]
        return out


@pytest.fixture()
def newest_first() -> Iterator[None]:
    register_system(NewestFirst)
    yield
    SYSTEMS.pop(NewestFirst.name)


async def test_a_registered_system_runs_in_every_study(newest_first: None, settings: Settings, tmp_path: Path) -> None:
    dataset = load_movielens_100k(settings.cache_dir)
    report = await run_offline(settings, dataset, ["most-popular", "newest-first"], stage="valid", users=30)
    assert [s.name for s in report.systems] == ["most-popular", "newest-first"]
    assert all(0 <= s.metrics["ndcg@10"] <= 1 for s in report.systems)

    own = settings.model_copy(update={"data_dir": tmp_path / "data", "chroma_path": tmp_path / "data" / "chroma"})
    studies = await run_session_study(
        own, dataset, None, users=10, baselines=("newest-first",), alphas=(0.5,), learned=False, out_dir=tmp_path
    )
    assert "newest-first" in {s.name for s in studies["test"].systems}


async def test_unknown_systems_are_named_with_the_known_ones(settings: Settings) -> None:
    dataset = load_movielens_100k(settings.cache_dir)
    with pytest.raises(ValueError, match=r"unknown system 'nope'.*driftrec-learned"):
        await run_offline(settings, dataset, ["most-popular", "nope"], users=5)


async def test_the_learned_stage_is_a_system(settings: Settings) -> None:
    """Trained on two cut points here (``stages=2``: the default five cost minutes more, the path is the same)."""
    dataset = load_movielens_100k(settings.cache_dir)
    stage = leave_one_out_stage(settings, dataset, "valid", 40)
    system = make_system("driftrec-learned:stages=2")
    assert (system.name, system.group, system.stages, system.pool) == ("driftrec-learned:stages=2", "driftrec", 2, 100)  # type: ignore[attr-defined]
    await system.fit(stage)
    report = system.report()
    assert report is not None and report["examples"] > 40  # every user's cut points, not only the 40 ranked
    ranked = await system.rank(stage, 20)
    assert set(ranked) == set(stage.cases)
    for user, items in ranked.items():
        seen = {e.item for e in stage.cases[user].history}
        assert len(items) == 20 == len(set(items)) and not seen & set(items)


async def test_a_baseline_takes_its_options_in_the_spec_and_is_reported_under_it(settings: Settings) -> None:
    """``item-knn:k=10`` is item-KNN with 10 neighbours, beside the default (100): two rows, two results."""
    dataset = load_movielens_100k(settings.cache_dir)
    report = await run_offline(settings, dataset, ["item-knn", "item-knn:k=10"], stage="valid", users=60)
    assert [s.name for s in report.systems] == ["item-knn", "item-knn:k=10"]
    by_name = {s.name: s.metrics["ndcg@10"] for s in report.systems}
    assert by_name["item-knn"] != by_name["item-knn:k=10"]
    system = make_system("sasrec-ce:seed=3:max_epochs=5")
    assert system.name == "sasrec-ce:seed=3:max_epochs=5"
    assert (system.ranker.seed, system.ranker.max_epochs) == (3, 5)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("sasrec-ce:seeds=2", r"'seeds=2' is not an option of sasrec-ce \(key=value; .*seed"),
        ("sasrec-ce:seed", r"'seed' is not an option"),
        ("driftrec-retrieval:pool=50", r"driftrec-retrieval takes no options"),
        ("driftrec-learned:stages=0", r"stages must be a whole number >= 1, got 0"),
        ("driftrec-learned:pool=many", r"pool must be a whole number >= 1, got 'many'"),
        ("driftrec-learned:depth=3", r"'depth=3' is not an option of driftrec-learned \(key=value; stages, pool\)"),
        ("knn:k=5", r"unknown system 'knn'"),
    ],
)
async def test_a_bad_spec_is_refused_before_any_work(settings: Settings, spec: str, message: str) -> None:
    dataset = load_movielens_100k(settings.cache_dir)
    with pytest.raises(ValueError, match=message):
        await run_offline(settings, dataset, ["most-popular", spec], users=5)
