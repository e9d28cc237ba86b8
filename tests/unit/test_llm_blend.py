"""The LLM's order as one more signal beside the learned stage (ranker study, 1+19): how two orders of the
same candidates blend, and that the blend's weight is never chosen on the users it is scored on."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from driftrec.eval.metrics import accuracy
from driftrec.eval.ranker_study import BLEND_FOLDS, blend, cross_fitted_blend, llm_orders

CANDIDATES = [f"i{n}" for n in range(20)]


def test_weight_zero_is_the_learned_order_and_one_the_llm_order() -> None:
    learned, llm = CANDIDATES, list(reversed(CANDIDATES))
    assert blend(learned, llm, 0.0) == learned
    assert blend(learned, llm, 1.0) == llm
    halfway = blend(learned, llm, 0.5)  # every item ties: the learned order decides
    assert halfway == learned and sorted(halfway) == sorted(CANDIDATES)
    assert blend(learned, ["i19"], 1.0)[0] == "i19"  # what the LLM left out comes after what it placed


def orders_for(users: int, seed: int, llm_knows: bool) -> tuple[dict, dict, dict]:
    """Each user's target sits at rank 8 of the learned order; the LLM puts it first when it knows."""
    rng = random.Random(seed)
    targets, learned, llm = {}, {}, {}
    for u in range(users):
        order = rng.sample(CANDIDATES, len(CANDIDATES))
        user = f"u{u}"
        targets[user], learned[user] = order[8], order
        llm[user] = [order[8], *rng.sample(order[:8] + order[9:], 19)] if llm_knows else rng.sample(order, 20)
    return targets, learned, llm


def test_an_llm_that_knows_gets_weight_and_lifts_the_learned_order() -> None:
    targets, learned, llm = orders_for(60, seed=1, llm_knows=True)
    blended, weights = cross_fitted_blend(targets, learned, llm)
    assert len(weights) == BLEND_FOLDS and min(weights) > 0.5
    assert accuracy(targets, blended, ["ndcg@10"])["ndcg@10"] > accuracy(targets, learned, ["ndcg@10"])["ndcg@10"]


def test_a_folds_weight_never_depends_on_its_own_users() -> None:
    targets, learned, noise = orders_for(60, seed=2, llm_knows=False)
    _, knowing, _ = orders_for(60, seed=2, llm_knows=True)
    assert cross_fitted_blend(targets, learned, noise)[1] == [0.0] * BLEND_FOLDS  # noise earns no weight
    users = sorted(targets)
    knows = set(users[0::BLEND_FOLDS] + users[1::BLEND_FOLDS])  # folds 1 and 2 get a perfect LLM order
    _, weights = cross_fitted_blend(targets, learned, {u: knowing[u] if u in knows else noise[u] for u in targets})
    # fold 1's weight comes from folds 2-5 (one perfect fold), fold 3's from 1, 2, 4, 5 (two): a weight
    # chosen on every user, its own included, would be the same for both
    assert weights[0] < weights[2]


def test_records_are_read_per_user_and_a_bad_line_is_named(tmp_path: Path) -> None:
    path = tmp_path / "verbalizer-sampled-test.jsonl"
    path.write_text(json.dumps({"user": 7, "retrieval": ["a", "b"], "llm": ["b", "a"], "target": "a"}) + "\n\n")
    assert llm_orders(path) == {"7": (["a", "b"], ["b", "a"])}
    path.write_text(path.read_text() + '{"user": 8}\n')
    with pytest.raises(ValueError, match="line 3: not an LLM study record"):
        llm_orders(path)
    with pytest.raises(ValueError, match=r"nope\.jsonl"):
        llm_orders(tmp_path / "nope.jsonl")
