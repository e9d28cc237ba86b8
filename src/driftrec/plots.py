"""Plots that people look at: the profile timeline (and, later, evaluation charts)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never a window
import matplotlib.pyplot as plt

from driftrec.models import InterestProfile


def profile_timeline(history: Sequence[InterestProfile], path: Path, title: str) -> Path:
    """Interest weights across profile versions, one line per interest; dislikes marked below zero."""
    names = sorted(
        {i.name for p in history for i in p.interests},
        key=lambda n: -max(i.weight for p in history for i in p.interests if i.name == n),
    )
    versions = [p.version for p in history]
    fig, ax = plt.subplots(figsize=(9, 4.8), dpi=110)
    for name in names[:12]:
        weights = [next((i.weight for i in p.interests if i.name == name), 0.0) for p in history]
        ax.plot(versions, weights, marker="o", linewidth=1.6, label=name)
    disliked = sorted({d.name for p in history for d in p.dislikes})
    for row, name in enumerate(disliked[:6]):
        marks = [p.version for p in history if any(d.name == name for d in p.dislikes)]
        ax.scatter(marks, [-0.06 - 0.04 * row] * len(marks), marker="x", color="black", s=18)
        ax.annotate(
            f"dislikes {name}",
            (versions[0], -0.06 - 0.04 * row),
            fontsize=7,
            va="center",
            xytext=(-4, 0),
            textcoords="offset points",
            ha="right",
        )
    ax.set_xlabel("profile version (one per session)")
    ax.set_ylabel("interest weight")
    ax.set_ylim(-0.06 - 0.04 * max(len(disliked[:6]), 1), 1.0)
    ax.set_xticks(versions)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if names:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def weight_sweep(studies: dict, path: Path) -> Path:
    """NDCG@10 with 95 % intervals against the LLM fusion weight, one line per stage."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for stage, study in studies.items():
        names = list(study.results)
        xs = [float(n.split("=")[1]) for n in names]
        ys = [study.results[n]["ndcg@10"] for n in names]
        lo = [y - study.intervals[n][0] for n, y in zip(names, ys, strict=True)]
        hi = [study.intervals[n][1] - y for n, y in zip(names, ys, strict=True)]
        ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", capsize=3, label=stage)
    first = next(iter(studies.values()))
    ax.set_xlabel("LLM weight in the fusion (0 = retrieval order, 1 = LLM order)")
    ax.set_ylabel("NDCG@10")
    ax.set_title(f"{first.mode}, {first.setting} candidates, {first.users} users ({first.model})", fontsize=9)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
