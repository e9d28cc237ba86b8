"""The model ladder: what the LLM adds as a ranker, per model, from `driftrec eval llm` run folders.

Run `driftrec eval llm --setting sampled --users 150` (and `--setting retrieved`) once per model with
`DRIFTREC_MODEL=...`, each into its own folder, then:

    python bench/model_ladder.py runs/ladder/<model>-sampled runs/ladder/<model>-retrieved ... \
        --out docs/img/model-ladder.png --json bench/results/model-ladder.json

Per model and candidate setting, on exactly the same users and candidates: NDCG@10 of the LLM's order,
of the reference order (sampled: the seeded random order; retrieved: driftrec's fused order) and of
popularity (training-log counts) over the same candidates, each with a 95 % bootstrap interval; the
paired t-test LLM vs reference; RecLM-eval error rates; prompt tokens and p50 latency per ranking
(queueing included: 8 rankings in flight on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import statistics
from collections import Counter
from pathlib import Path

import numpy as np
from scipy import stats

from driftrec import load_movielens_100k, load_settings
from driftrec.eval.metrics import bootstrap_ci
from driftrec.eval.protocols import leave_one_out, training_log


def ndcg_at_10(order: list[str], target: str) -> float:
    rank = order.index(target) + 1 if target in order else 99
    return 1.0 / math.log2(rank + 1) if rank <= 10 else 0.0


def summarize(folder: Path, popularity: Counter) -> dict[str, object]:
    report = json.loads(next(folder.glob("verbalizer-*.json")).read_text())
    test = report["test"]
    lines = next(folder.glob("*-test.jsonl")).read_text().splitlines()
    rows = sorted((json.loads(line) for line in lines if line), key=lambda r: int(r["user"]))  # same order per model
    llm = np.array([ndcg_at_10(r["llm"], r["target"]) for r in rows])
    reference = np.array([ndcg_at_10(r["retrieval"], r["target"]) for r in rows])
    popular = np.array([ndcg_at_10(sorted(r["retrieval"], key=lambda i: -popularity[i]), r["target"]) for r in rows])
    errors = Counter()
    for r in rows:
        errors.update(r["errors"])
    requests = max(1, errors["requests"])
    chosen = None if test["setting"] == "sampled" else report.get("valid", {}).get("best_weight")
    fused = test["results"].get(f"w={chosen:g}", {}).get("ndcg@10") if chosen is not None else None
    return {
        "model": test["model"],
        "setting": test["setting"],
        "users": len(rows),
        "ndcg@10": {
            "llm": round(float(llm.mean()), 4),
            "reference": round(float(reference.mean()), 4),
            "popularity": round(float(popular.mean()), 4),
        },
        "ci95": {
            "llm": [round(x, 4) for x in bootstrap_ci(llm)],
            "reference": [round(x, 4) for x in bootstrap_ci(reference)],
            "popularity": [round(x, 4) for x in bootstrap_ci(popular)],
        },
        "p_llm_vs_reference": round(float(stats.ttest_rel(llm, reference).pvalue), 4),
        "weight_chosen_on_validation": chosen,
        "ndcg@10_at_chosen_weight": fused,
        "error_rates": {
            k: round(errors[k] / requests, 4)
            for k in ("candidate_errors", "duplicate_errors", "history_errors", "invalid_outputs", "fallbacks")
        },
        "prompt_tokens": round(statistics.mean(r["prompt_tokens"] for r in rows), 1),
        "p50_seconds": round(statistics.median(r["seconds"] for r in rows), 2),
    }


def model_size(name: str) -> float:
    """Parameters in millions read from a served name ("smollm2-135m-instruct" → 135, "...-1.5b-..." → 1500),
    so rows go smallest first; a name without a size goes last."""
    match = re.search(r"(\d+(?:\.\d+)?)([mb])\b", name.lower())
    if not match:
        return math.inf
    return float(match.group(1)) * (1000.0 if match.group(2) == "b" else 1.0)


def plot(ladder: list[dict[str, object]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings = sorted({str(r["setting"]) for r in ladder})
    fig, axes = plt.subplots(1, len(settings), figsize=(5.2 * len(settings), 3.6), squeeze=False)
    for ax, setting in zip(axes[0], settings, strict=True):
        rows = [r for r in ladder if r["setting"] == setting]
        xs = np.arange(len(rows))
        for offset, (key, label, color) in enumerate(
            (
                ("llm", "LLM order", "#4c72b0"),
                ("reference", "random order" if setting == "sampled" else "retrieval order", "#999999"),
                ("popularity", "popularity", "#dd8452"),
            )
        ):
            values = [r["ndcg@10"][key] for r in rows]  # type: ignore[index]
            lo = [v - r["ci95"][key][0] for v, r in zip(values, rows, strict=True)]  # type: ignore[index]
            hi = [r["ci95"][key][1] - v for v, r in zip(values, rows, strict=True)]  # type: ignore[index]
            ax.bar(xs + (offset - 1) * 0.27, values, 0.27, yerr=[lo, hi], capsize=2, label=label, color=color)
        ax.set_xticks(xs)
        ax.set_xticklabels([str(r["model"]).replace("-instruct", "") for r in rows], fontsize=8)
        ax.set_ylabel("NDCG@10 (95 % interval)")
        ax.set_title(f"{setting} candidates, {rows[0]['users']} users", fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=Path("docs/img/model-ladder.png"))
    parser.add_argument("--json", type=Path, default=Path("bench/results/model-ladder.json"))
    parser.add_argument(
        "--append", action="store_true", help="Keep the rows already in --json (a new model, setting replaces its row)."
    )
    args = parser.parse_args()
    dataset = load_movielens_100k(load_settings().cache_dir)
    popularity = Counter(e.item for e in training_log(leave_one_out(dataset), "test"))
    ladder = [summarize(folder, popularity) for folder in args.folders]
    if args.append and args.json.exists():
        new = {(r["model"], r["setting"]) for r in ladder}
        kept = [r for r in json.loads(args.json.read_text()) if (r["model"], r["setting"]) not in new]
        ladder = kept + ladder
    ladder.sort(key=lambda r: (str(r["setting"]), model_size(str(r["model"]))))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(ladder, indent=2))
    plot(ladder, args.out)
    for r in ladder:
        print(json.dumps(r))


if __name__ == "__main__":
    main()
