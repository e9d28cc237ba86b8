"""The demo's closing steps read as words and tables that fit 80 columns, not raw dicts."""

from __future__ import annotations

from rich.console import Console

from driftrec.demo import DemoResult, show_rest

STUDY = {
    "stage": "test",
    "users": 20,
    "results": {"w=0": {"ndcg@10": 0.14, "hit_rate@10": 0.3, "mrr@10": 0.09}},
    "intervals": {"w=0": [0.04, 0.25]},
    "significance": {},
}
OFFLINE = {
    "dataset": "ml-100k",
    "stage": "test",
    "users": 200,
    "systems": [
        {
            "name": "driftrec-retrieval",
            "metrics": {"ndcg@10": 0.091, "hit_rate@10": 0.2, "mrr@10": 0.059},
            "ci95": {"ndcg@10": [0.065, 0.119]},
            "fit_seconds": 1.0,
        }
    ],
    "significance": {
        "metric": "ndcg@10",
        "test": "paired t",
        "ours": "driftrec-retrieval",
        "baseline": "bpr",
        "p_value": 0.103,
        "difference": 0.024,
    },
}


def test_the_closing_steps_are_numbered_words_and_fit_80_columns() -> None:
    chat = {
        "user": "2",
        "message": "no horror",
        "reply": "Here.",
        "mode": "plan",
        "action": "recommend",
        "arguments": {"exclude_genres": ["Horror"]},
        "degraded": None,
    }
    result = DemoResult(
        model="m",
        catalog=1682,
        chat=chat,
        llm_study={"valid": {"best_weight": 0.0}, "test": STUDY},
        offline=OFFLINE,
        outputs={"offline evaluation": "/tmp/x"},
        seconds=252.0,
    )
    console = Console(width=80, record=True)
    show_rest(console, result)
    text = console.export_text()
    assert [line[:2] for line in text.splitlines() if line[:2] in ("3.", "4.", "5.")] == ["3.", "4.", "5."]
    assert "on test, no comparison" in text and "{}" not in text
    assert "driftrec-retrieval vs bpr: +0.024 NDCG@10, p = 0.103" in text
    assert "done in 4.2 min" in text and "reports and plots in /tmp/x" in text
    assert max(len(line) for line in text.splitlines()) <= 80
