"""The command line in-process (typer's CliRunner), on the session's vLLM as the endpoint: the demo's
machine-readable output and its numbering, profile edits, and driftrec's errors as messages and exit
codes instead of tracebacks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from driftrec.cli import app
from driftrec.config import Settings
from driftrec.llm import LLM
from tests.conftest import copy_of, endpoint_env

pytestmark = pytest.mark.vllm


@pytest.fixture()
def env(settings: Settings, llm: LLM, seeded_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    data = copy_of(seeded_data, tmp_path / "data")
    for name, value in endpoint_env(settings, llm, data, COLUMNS="80").items():
        monkeypatch.setenv(name, value)
    return data


def test_the_demo_runs_every_step_and_says_where_its_reports_are(env: Path) -> None:
    result = CliRunner().invoke(app, ["demo", "--users", "30", "--llm-users", "3", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(out["users"]) == 3 and out["catalog"] == 1682
    for shown in out["users"]:
        assert shown["profile"]["version"] == 1 and len(shown["recommendations"]) == 5
        ids = [r["item"]["id"] for r in shown["recommendations"]]
        assert len(set(ids)) == 5
    assert out["chat"]["reply"] and out["chat"]["action"] == "recommend"
    assert out["chat"]["arguments"]["exclude_genres"] == ["Horror"] and out["chat"]["arguments"]["year_min"] == 1990
    assert set(out["llm_study"]) == {"valid", "test"} and out["llm_study"]["test"]["users"] == 3
    assert [s["name"] for s in out["offline"]["systems"]] == ["most-popular", "item-knn", "bpr", "driftrec-retrieval"]
    for folder in out["outputs"].values():
        assert list(Path(folder).glob("*.png")) and list(Path(folder).glob("*.json"))
    assert "Warning" not in result.output  # no library warnings in the output


def test_profile_edit_from_the_command_line(env: Path) -> None:
    runner = CliRunner()
    done = runner.invoke(app, ["profile", "edit", "1", "--dislike", "horror", "--remove", "Drama", "--json"])
    assert done.exit_code == 0, done.output
    profile = json.loads(done.stdout)
    assert [d["name"] for d in profile["dislikes"]] == ["Horror"]
    assert profile["edits"] == ["removed interest Drama", "added dislike Horror"]

    refused = runner.invoke(app, ["profile", "edit", "1", "--add", "Spaghetti western"])
    assert refused.exit_code == 1 and "Traceback" not in refused.output
    assert "edits[0].name" in refused.output and "not a genre" in refused.output
    nothing = runner.invoke(app, ["profile", "edit", "1"])
    assert nothing.exit_code == 2 and "nothing to edit" in nothing.output


def test_api_keys_from_the_command_line(env: Path) -> None:
    runner = CliRunner()
    made = runner.invoke(app, ["keys", "create", "--user", "1", "--name", "phone", "--json"])
    assert made.exit_code == 0, made.output
    key = json.loads(made.stdout)
    assert key["key"].startswith("drk_") and key["user"] == "1" and key["scope"] == "user"
    listed = json.loads(runner.invoke(app, ["keys", "list", "--json"]).stdout)
    assert [k["id"] for k in listed] == [key["id"]] and "key" not in listed[0]  # never the key itself
    assert runner.invoke(app, ["keys", "revoke", key["id"]]).exit_code == 0
    assert json.loads(runner.invoke(app, ["keys", "list", "--json"]).stdout)[0]["revoked_at"]
    assert runner.invoke(app, ["keys", "revoke", "nope"]).exit_code == 1
    assert runner.invoke(app, ["keys", "create"]).exit_code == 2  # neither --user nor --admin
    assert runner.invoke(app, ["keys", "create", "--user", "a/b"]).exit_code == 2


def test_the_learned_ranker_is_trained_from_the_command_line(env: Path) -> None:
    result = CliRunner().invoke(app, ["ranker", "train", "--stages", "1", "--pool", "30", "--json"])
    assert result.exit_code == 0, result.output
    card = json.loads(result.stdout)
    assert Path(card["path"]) == env / "ranker" and (env / "ranker" / "ranker.txt").exists()
    assert card["pool"] == 30 and card["users"] > 20  # users whose last event was in their 30-per-source pool
    answer = CliRunner().invoke(app, ["recommend", "1", "--k", "3", "--json", "--no-llm"])
    assert answer.exit_code == 0, answer.output
    assert json.loads(answer.stdout)["order"] == "learned"
