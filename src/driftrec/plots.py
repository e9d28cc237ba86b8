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
