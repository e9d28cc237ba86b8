"""Whatever the LLM says, the ranker hands back exactly k valid items, and counts what it repaired."""

from __future__ import annotations

from driftrec.ranking import RankErrors, repair, salvage
from driftrec.ranking.aggregate import borda, fuse_with_retrieval, shuffles

LABELS = {"A": "i1", "B": "i2", "C": "i3", "D": "i4"}
ORDER = ["i1", "i2", "i3", "i4"]


def test_a_clean_reply_is_taken_as_is() -> None:
    items, errors = repair(["C", "A"], LABELS, ORDER, 2)
    assert items == ["i3", "i1"]
    assert errors == RankErrors(replies=1)


def test_duplicates_out_of_set_and_consumed_items_are_dropped_and_counted() -> None:
    seen = {"i9": "i9", "toy story (1995)": "i9"}
    items, errors = repair(["B", "B", "Z", "Toy Story (1995)", "i9", "A"], LABELS, ORDER, 3, seen=seen)
    assert items == ["i2", "i1", "i3"]  # valid proposals first, then filled in retrieval order
    assert (errors.duplicate_errors, errors.candidate_errors, errors.history_errors, errors.filled) == (1, 1, 2, 1)


def test_an_empty_reply_is_the_retrieval_order_and_k_is_capped_by_the_candidates() -> None:
    items, errors = repair([], LABELS, ORDER, 10)
    assert items == ORDER and errors.filled == 4


def test_lowercase_labels_are_understood() -> None:
    assert repair(["d"], LABELS, ORDER, 1)[0] == ["i4"]


def test_salvage_reads_complete_and_truncated_replies() -> None:
    assert salvage('{"ranking": [{"item": "B"}, {"item": "Q"}]}') == ["B", "Q"]
    assert salvage('{"ranking": ["C", "A"]}') == ["C", "A"]
    assert salvage('{"ranking": [{"item": "B", "reason": "x"}, {"item": "A", "rea') == ["B", "A"]
    assert salvage('{"ranking": ["D", "C') == ["D"]
    assert salvage("") is None and salvage("not json at all") is None and salvage('{"ranking": []}') is None


def test_error_rates_are_per_reply_and_fallbacks_per_request() -> None:
    total = RankErrors(requests=2, replies=4, duplicate_errors=2, fallbacks=1) + RankErrors(requests=2, replies=4)
    rates = total.rates()
    assert rates["duplicate_errors_rate"] == 2 / 8
    assert rates["fallback_rate"] == 1 / 4


def test_borda_over_shuffles_breaks_ties_by_retrieval_order() -> None:
    # Two rankings that disagree completely: every item gets the same points, so retrieval order stands.
    assert borda([["a", "b", "c"], ["c", "b", "a"]], ["a", "b", "c"]) == ["a", "b", "c"]
    # An item every round puts first wins.
    assert borda([["c", "a", "b"], ["c", "b", "a"]], ["a", "b", "c"])[0] == "c"


def test_shuffles_are_seeded_and_start_with_the_retrieval_order() -> None:
    first = shuffles(list("abcdefgh"), 3, "user-1")
    assert first[0] == list("abcdefgh")
    assert first == shuffles(list("abcdefgh"), 3, "user-1")
    assert all(sorted(order) == list("abcdefgh") for order in first)
    assert first[1] != first[0] or first[2] != first[0]


def test_fusion_weight_moves_between_retrieval_and_llm_order() -> None:
    retrieval, llm = ["a", "b", "c", "d"], ["d", "c", "b", "a"]
    assert [i for i, _ in fuse_with_retrieval(llm, retrieval, 0.0)] == retrieval
    assert [i for i, _ in fuse_with_retrieval(llm, retrieval, 1.0)] == llm
    assert [i for i, _ in fuse_with_retrieval(llm[:2], retrieval, 1.0)] == ["d", "c", "a", "b"]
    middle = [i for i, _ in fuse_with_retrieval(llm, retrieval, 0.5)]
    assert sorted(middle) == sorted(retrieval)
