"""The second phase as a file: trained on windows, saved beside the learned ranker, loaded only for the
ranker and the served model it was made for. The windows here are made up (a second phase is four numbers
per candidate); the phase on real judgements of a real served model is tests/integration/test_second_phase.py."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from driftrec.ranking.learned import RankerFileError
from driftrec.ranking.second_phase import COLUMNS, LLMScores, SecondPhase, normalized


def windows(users: int = 200, size: int = 10, seed: int = 3) -> tuple[dict, dict, dict]:
    """Each user's window in learned order; the LLM puts the target first two times in three."""
    rng = random.Random(seed)
    records, scores, targets = {}, {}, {}
    for n in range(users):
        user, shown = f"u{n}", [f"i{n}-{k}" for k in range(size)]
        target = rng.choice(shown)
        others = [i for i in shown if i != target]
        rng.shuffle(others)
        order = [target, *others] if rng.random() < 2 / 3 else [*others[:3], target, *others[3:]]
        raw = {item: -0.5 * place for place, item in enumerate(order)}
        records[user] = LLMScores(user, shown, normalized(raw), order)
        scores[user] = {item: 1.0 - 0.05 * k for k, item in enumerate(shown)}
        targets[user] = {target}
    return records, scores, targets


def trained() -> SecondPhase:
    records, scores, targets = windows()
    return SecondPhase.train(records, scores, targets, model="served-model", ranker="cat@1.0", window=10)


def test_a_phase_learns_to_trust_a_judgement_that_finds_the_target() -> None:
    phase = trained()
    card = phase.card
    assert card.users == 200 and card.columns == list(COLUMNS) and card.best_iteration >= 1
    assert card.stop_users == 40 and card.stop_ndcg10["second phase"] > card.stop_ndcg10["learned order"]
    assert card.importance["llm_logprob"] + card.importance["llm_rank"] > 0.5


def test_a_saved_phase_loads_only_for_its_ranker_and_its_model(tmp_path: Path) -> None:
    phase = trained()
    phase.save(tmp_path)
    loaded = SecondPhase.load(tmp_path, ranker="cat@1.0", model="served-model")
    records, scores, _ = windows(users=5, seed=9)
    for user, record in records.items():
        assert loaded.order(record, scores[user]) == phase.order(record, scores[user])
        assert sorted(loaded.order(record, scores[user])) == sorted(record.shown)  # a permutation of the window
    with pytest.raises(RankerFileError, match="another learned ranker"):
        SecondPhase.load(tmp_path, ranker="cat@2.0", model="served-model")
    with pytest.raises(RankerFileError, match="the served model is 'other'"):
        SecondPhase.load(tmp_path, ranker="cat@1.0", model="other")


def test_a_broken_or_foreign_phase_file_is_refused_with_its_path(tmp_path: Path) -> None:
    trained().save(tmp_path)
    card = tmp_path / "second-phase.json"
    fields = json.loads(card.read_text())
    card.write_text(json.dumps(fields | {"columns": ["learned_score", "learned_rank"]}))
    with pytest.raises(RankerFileError, match="columns"):
        SecondPhase.load(tmp_path, ranker="cat@1.0", model="served-model")
    card.write_text(json.dumps(fields))
    (tmp_path / "second-phase.txt").write_text("not a model")
    with pytest.raises(RankerFileError, match=r"second-phase\.txt is not a LightGBM model"):
        SecondPhase.load(tmp_path, ranker="cat@1.0", model="served-model")
    card.write_text("{")
    with pytest.raises(RankerFileError, match="not a second-phase card"):
        SecondPhase.load(tmp_path, ranker="cat@1.0", model="served-model")
    SecondPhase.remove(tmp_path)
    assert not SecondPhase.saved(tmp_path) and not (tmp_path / "second-phase.txt").exists()


def test_too_few_usable_windows_is_an_error_not_a_model() -> None:
    records, scores, targets = windows(users=9)
    with pytest.raises(ValueError, match="only 9 users"):
        SecondPhase.train(records, scores, targets, model="m", ranker="r", window=10)
