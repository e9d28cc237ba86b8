"""One report writer for every study: ``<name>.json`` (the numbers) and ``<name>.md`` (the tables).

A study is anything with ``as_dict()`` and ``markdown()``; a run over several stages (validation, then
test) is a mapping of stage to study, written as one JSON object keyed by stage and one Markdown file with
a section per stage. Each file is written whole or not at all (a temporary file renamed into place), so an
interrupted run never leaves half a report beside a complete one, and the JSON records what produced it
(``"run"``: driftrec's version, the git commit when there is one, Python, machine, time) the way
lm-evaluation-harness stamps its results.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
import os
import platform
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np


class Study(Protocol):
    def as_dict(self) -> Mapping[str, Any]: ...

    def markdown(self) -> str: ...


def run_stamp() -> dict[str, str]:
    """What produced a report: enough to tell two runs' numbers apart later."""
    from driftrec import __version__

    stamp = {
        "driftrec": __version__,
        "python": platform.python_version(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "written_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    if commit:
        stamp["commit"] = commit
    return stamp


def _plain(value: Any) -> Any:
    """JSON for what studies hold besides plain types: numpy scalars and arrays, dates, paths, sets,
    enums; anything else as its text."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, set | frozenset):
        return sorted(value, key=str)
    if isinstance(value, enum.Enum):
        return value.value
    return str(value)


def _write_whole(path: Path, text: str) -> None:
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text)
    partial.replace(path)


def write_report(out_dir: Path, name: str, studies: Study | Mapping[str, Study], *, note: str = "") -> Path:
    """``out_dir/<name>.json`` and ``out_dir/<name>.md`` for one study or a mapping of stage to study;
    ``note`` ends the Markdown (e.g. what validation chose). Returns the JSON file's path."""
    if isinstance(studies, Mapping):
        payload: dict[str, Any] = {stage: dict(study.as_dict()) for stage, study in studies.items()}
        markdown = "\n\n".join(f"### {stage}\n\n{study.markdown()}" for stage, study in studies.items())
    else:
        payload = dict(studies.as_dict())
        markdown = studies.markdown()
    if note:
        markdown += f"\n\n{note}"
    return write_files(out_dir / f"{name}.json", payload, out_dir / f"{name}.md", markdown)


def write_files(json_path: Path, payload: Mapping[str, Any], markdown_path: Path, markdown: str) -> Path:
    """The JSON (stamped with ``"run"``) and the Markdown of a report, each written whole."""
    json_path.parent.mkdir(parents=True, exist_ok=True)
    _write_whole(json_path, json.dumps({**payload, "run": run_stamp()}, indent=2, default=_plain) + "\n")
    _write_whole(markdown_path, markdown.rstrip("\n") + "\n")
    return json_path
