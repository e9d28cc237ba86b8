"""Every study's report goes through one writer: JSON (stamped with what produced it) and Markdown."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from driftrec import __version__
from driftrec.eval.report import write_report


@dataclass
class Toy:
    ndcg: float

    def as_dict(self) -> dict[str, object]:
        return {"ndcg@10": np.float32(self.ndcg), "users": np.int64(3), "per_user": np.array([0.5, 1.0])}

    def markdown(self) -> str:
        return f"| system | NDCG@10 |\n|---|---|\n| toy | {self.ndcg:.4f} |"


def test_one_study_becomes_json_and_markdown_stamped_with_its_run(tmp_path: Path) -> None:
    path = write_report(tmp_path / "out", "toy", Toy(0.25), note="Chosen on validation: toy")
    saved = json.loads(path.read_text())
    assert saved["ndcg@10"] == 0.25 and saved["users"] == 3 and saved["per_user"] == [0.5, 1.0]  # numpy as JSON
    assert saved["run"]["driftrec"] == __version__ and saved["run"]["written_at"].startswith("20")
    text = (tmp_path / "out" / "toy.md").read_text()
    assert text == "| system | NDCG@10 |\n|---|---|\n| toy | 0.2500 |\n\nChosen on validation: toy\n"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["toy.json", "toy.md"]  # no partial files left


def test_stages_are_keys_in_the_json_and_sections_in_the_markdown(tmp_path: Path) -> None:
    path = write_report(tmp_path, "sessions", {"valid": Toy(0.2), "test": Toy(0.3)})
    saved = json.loads(path.read_text())
    assert [saved["valid"]["ndcg@10"], saved["test"]["ndcg@10"]] == [np.float32(0.2).item(), np.float32(0.3).item()]
    text = (tmp_path / "sessions.md").read_text()
    assert text.index("### valid") < text.index("0.2000") < text.index("### test") < text.index("0.3000")


def test_a_second_run_replaces_the_first_whole(tmp_path: Path) -> None:
    write_report(tmp_path, "toy", Toy(0.1))
    write_report(tmp_path, "toy", Toy(0.9))
    assert json.loads((tmp_path / "toy.json").read_text())["ndcg@10"] == np.float32(0.9).item()
    assert "0.9000" in (tmp_path / "toy.md").read_text() and "0.1000" not in (tmp_path / "toy.md").read_text()
