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


def metric_bars(
    rows: Sequence[tuple[str, float, tuple[float, float]]],
    path: Path,
    title: str,
    *,
    label: str = "NDCG@10 (95 % bootstrap interval)",
) -> Path:
    """One horizontal bar per system with its 95 % interval, best at the top."""
    rows = sorted(rows, key=lambda r: r[1])
    fig, ax = plt.subplots(figsize=(8, 0.32 * len(rows) + 1.2))
    ys = range(len(rows))
    values = [v for _, v, _ in rows]
    errors = [[v - lo for _, v, (lo, _) in rows], [hi - v for _, v, (_, hi) in rows]]
    ax.barh(list(ys), values, xerr=errors, capsize=2, color="#4c72b0", alpha=0.85)
    ax.set_yticks(list(ys))
    ax.set_yticklabels([name for name, _, _ in rows], fontsize=8)
    ax.set_xlabel(label)
    ax.set_title(title, fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def wilson(successes: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """The 95 % Wilson interval of a proportion (sound at 0 %, 100 % and small n)."""
    if n <= 0:
        return 0.0, 0.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * ((p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def alpha_sweep(sweep: dict[str, dict[str, float]], path: Path, title: str) -> Path:
    """NDCG@10 against alpha in u_f = alpha·u_s + (1 - alpha)·u_l, one line per source of u_l."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for source, row in sweep.items():
        ax.plot([float(a) for a in row], list(row.values()), marker="o", label=f"u_l from {source}")
    ax.set_xlabel("alpha (0 = long-term only, 1 = short-term session only)")
    ax.set_ylabel("NDCG@10")
    ax.set_title(f"vector retrieval, alpha sweep ({title})", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
