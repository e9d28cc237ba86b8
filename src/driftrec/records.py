"""Resumable run records: one JSON line per finished unit of work (a user's ranking, a user's window),
appended as each finishes, so a crashed or interrupted run picks up where it stopped (the way
lm-evaluation-harness caches requests)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

Record = TypeVar("Record")


def read_records(
    path: Path, make: Callable[[dict[str, Any]], Record], key: Callable[[Record], str]
) -> dict[str, Record]:
    """The records already in ``path`` by key; a torn or foreign line (e.g. the last one of a killed run) is
    skipped, so that unit is done again."""
    done: dict[str, Record] = {}
    if not path.exists():
        return done
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = make(json.loads(line))
        except (ValueError, TypeError):
            continue
        done[key(record)] = record
    return done


def append_record(path: Path, line: str) -> None:
    """Blocking: run it in a thread. ``line`` ends with a newline."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(line)


def safe_name(model: str) -> str:
    """A served model's name as a file- or folder-name part (each model's records and replays apart)."""
    return re.sub(r"[^a-zA-Z0-9.]+", "-", model).strip("-")
