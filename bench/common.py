"""What several bench scripts share: the percentile they report and a store of MovieLens events to measure on.
Each script stays runnable on its own (`python bench/<name>.py`: this folder is on its import path)."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path


def machine(llm_dtype: str | None = None) -> str:
    """The machine a figure was measured on: cores, CPU model, architecture; and the embedded LLM's precision
    when it served (bfloat16 on a CPU with bf16 instructions is 3-4x faster than float32: docs/benchmarks.md)."""
    from driftrec.llm.runtime import BF16_CPU_FLAGS, cpu_flags

    model = next(
        (
            line.partition(":")[2].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "cpu",
    )
    bf16 = "bf16 instructions" if cpu_flags() & BF16_CPU_FLAGS else "no bf16 instructions"
    served = f"; LLM in {llm_dtype}" if llm_dtype else ""
    return f"{os.cpu_count()} cores, {model} ({platform.machine()}, {bf16}){served}"


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


@contextlib.contextmanager
def movielens_data(keep: tuple[str, ...] = ()) -> Iterator[Path]:
    """A fresh data dir holding MovieLens-100K as events, removed afterwards; the ingest sees no DRIFTREC_*
    setting of the caller's but those in ``keep`` (e.g. the served model)."""
    with tempfile.TemporaryDirectory() as folder:
        data = Path(folder)
        env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTREC_") or k in keep} | {
            "DRIFTREC_DATA_DIR": str(data),
            "DRIFTREC_CHROMA_PATH": str(data / "chroma"),
        }
        ingest_movielens(env)
        yield data


def report(result: dict[str, object], json_out: Path | None) -> None:
    """Print the result as JSON, and write it to ``json_out`` when given."""
    print(json.dumps(result, indent=2))
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(result, indent=2) + "\n")
