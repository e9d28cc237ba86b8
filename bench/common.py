"""What several bench scripts share: the percentile they report and a store of MovieLens events to measure on.
Each script stays runnable on its own (`python bench/<name>.py`: this folder is on its import path)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank ``q``-th percentile (NaN for no values)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))] if ordered else float("nan")


def ingest_movielens(env: Mapping[str, str]) -> None:
    """MovieLens-100K's catalog and all 100,000 ratings as events, into the data dir ``env`` names."""
    subprocess.run(
        [Path(sys.executable).parent / "driftrec", "ingest", "movielens-100k", "--events"],
        env=dict(env),
        check=True,
        stdout=subprocess.DEVNULL,
    )
