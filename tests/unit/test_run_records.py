"""Run records resume a long evaluation: what was appended is read back by key, and a line torn by a
killed run (or any line that is not a record) is skipped, so that unit of work is simply done again."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from driftrec.records import append_record, read_records


def test_appended_records_come_back_by_key_and_a_torn_line_is_redone(tmp_path: Path) -> None:
    path = tmp_path / "runs" / "records.jsonl"
    assert read_records(path, dict, lambda r: r["user"]) == {}  # nothing yet: everything is to do
    append_record(path, json.dumps({"user": "1", "score": 0.5}) + "\n")  # the folder is made on first use
    append_record(path, json.dumps({"user": "2", "score": 0.7}) + "\n")
    with open(path, "a", encoding="utf-8") as handle:
        handle.write('{"user": "3", "sco')  # the process died mid-line
    done = read_records(path, dict, lambda r: r["user"])
    assert done == {"1": {"user": "1", "score": 0.5}, "2": {"user": "2", "score": 0.7}}


@dataclass
class Scored:
    user: str
    score: float


def test_a_line_that_does_not_make_a_record_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "records.jsonl"
    path.write_text('{"user": "1", "score": 1.0}\n{"unexpected": true}\n[1, 2]\n')
    done = read_records(path, lambda fields: Scored(**fields), lambda record: record.user)
    assert done == {"1": Scored("1", 1.0)}
