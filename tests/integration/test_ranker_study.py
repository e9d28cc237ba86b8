"""`driftrec eval ranker` end to end on real MovieLens-100K (a few users, two cut points, no ablations):
the learned stage is trained on the validation stage and scored on the test stage beside fusion over the
same pool and a baseline, with the pool's recall, the paired tests, and the 1+19 sampled rows, whose orders
all rank the same 20 candidates the LLM study draws for each user."""

from __future__ import annotations

from pathlib import Path

import pytest

from driftrec.config import Settings
from driftrec.data import load_movielens_100k
from driftrec.eval.llm_study import sampled_candidates
from driftrec.eval.protocols import first_users, leave_one_out
from driftrec.eval.ranker_study import _llm_rows, _sampled_orders, run_ranker_study, write_report
from driftrec.eval.retrieval_study import ingest

USERS = 60


async def test_the_ranker_study_reports_full_ranking_and_sampled_rows(settings: Settings, tmp_path: Path) -> None:
    dataset = load_movielens_100k(settings.cache_dir)
    own = settings.model_copy(update={"data_dir": tmp_path / "data", "chroma_path": tmp_path / "data" / "chroma"})
    study, model = await run_ranker_study(
        own, dataset, users=USERS, stages=2, baselines=("most-popular", "item-knn:k=20"), ablate=False, sampled=True
    )
    names = [s.name for s in study.systems]
    assert names == ["driftrec-learned", "driftrec-fusion (same pool)", "most-popular", "item-knn:k=20"]
    assert set(study.tests) == {"driftrec-fusion (same pool)", "most-popular", "item-knn:k=20"}  # every one
    assert 0 < study.recall["union"] <= 1 and all(0 <= v <= study.recall["union"] for v in study.recall.values())
    assert model.card.stages == 2 and model.card.users > USERS  # two cut points' examples

    sampled = {s.name: s.metrics["ndcg@10"] for s in study.sampled}
    assert set(sampled) == {
        "random order (as given)",
        "popularity (training log)",
        "driftrec-fusion (pool order)",
        "driftrec-learned",
    }
    assert all(0 <= v <= 1 for v in sampled.values())
    path = write_report(study, tmp_path)
    assert "1+19 sampled" in (tmp_path / "ranker.md").read_text() and path.exists()

    # every order ranks exactly the LLM study's 20 candidates of the user, the test item among them
    splits = leave_one_out(dataset)
    users = first_users(splits, 10)
    index = await ingest(own, dataset)
    orders = await _sampled_orders(own, index, dataset, splits, users, model)
    for user in users:
        seen = {e.item for e in splits[user].seen_before("test")}
        target = splits[user].target("test").item
        drawn = [c.item.id for c in sampled_candidates(dataset, seen, target, f"{own.llm.seed}:{user}")]
        assert orders["random order (as given)"][user] == drawn and target in drawn
        for order in orders.values():
            assert sorted(order[user]) == sorted(drawn)

    # an LLM study's records (here: each user's candidates in reverse, as data) join the same users' rows
    targets = {u: splits[u].target("test").item for u in users}
    records = {u: (orders["random order (as given)"][u], orders["random order (as given)"][u][::-1]) for u in users}
    rows = _llm_rows(records, targets, orders)
    ndcg = rows[f"LLM records, {len(users)} users, NDCG@10"]
    assert set(ndcg) == {"driftrec-learned", "LLM order (records)", "learned + LLM (cross-fitted)"}
    assert all(0 <= v <= 1 for v in ndcg.values())
    tested = rows[f"LLM records, {len(users)} users, blend vs learned"]
    assert 0 <= tested["p (paired t)"] <= 1 and len([k for k in tested if k.startswith("LLM weight")]) == 5
    other = {users[0]: (["not", "these"], ["these", "not"])}  # another draw's candidates: refused
    with pytest.raises(ValueError, match=f"user {users[0]}: the LLM records ordered other candidates"):
        _llm_rows(other, targets, orders)
