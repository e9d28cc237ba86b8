"""The chat-request benchmark (`driftrec eval requests`) end to end: real MovieLens-100K, real Chroma and
the session's vLLM. Every system answers the same requests for a new user and a long history, and the
items are checked against the constraints the requests were written with."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from driftrec.agent import Recommender
from driftrec.config import Settings
from driftrec.eval.request_study import SYSTEMS_LLM, SYSTEMS_NO_LLM, build_requests, run_request_study, write_report
from driftrec.llm import LLM
from tests.conftest import copy_of

pytestmark = pytest.mark.vllm


async def test_every_system_is_scored_on_the_same_requests_and_both_chat_modes_meet_them(
    settings: Settings, llm: LLM, seeded_data: Path, tmp_path: Path
) -> None:
    data = copy_of(seeded_data, tmp_path / "data")
    own = settings.model_copy(
        update={"data_dir": data, "chroma_path": data / "chroma", "ranking_timeout_s": 600.0, "memory_upkeep": False}
    )
    async with Recommender(own, llm=llm) as rec:
        requests = build_requests(rec.catalog)[:3]
        assert [r.kind for r in requests] == ["adjective+decade+negation", "genre+negation", "negations+adjective"]
        study = await run_request_study(
            rec,
            requests=requests,
            users={"new user": "request-study-new", "long history": "1"},  # MovieLens user 1: 272 ratings
            systems=SYSTEMS_NO_LLM + SYSTEMS_LLM,
        )
        assert await rec.memory.conversations.state("1") == ("", [])  # type: ignore[union-attr]  # no chat left over
    rows = {(r.name, r.user_kind): r for r in study.results}
    assert len(rows) == 2 * len(SYSTEMS_NO_LLM + SYSTEMS_LLM) and all(r.requests == 3 for r in rows.values())
    for kind in ("new user", "long history"):
        understood = rows[("request understood (no LLM)", kind)]
        assert understood.items_meeting == 1.0
        assert rows[("popularity (ignores the request)", kind)].items_meeting < understood.items_meeting
        for chat in SYSTEMS_LLM:  # the deterministic reading backs the model: every listed item meets its request
            row = rows[(chat, kind)]
            assert row.items_meeting == 1.0, row
            assert row.model_read is not None and row.fallbacks is not None
        assert rows[("popularity (ignores the request)", kind)].model_read is None  # no model in that system
    assert study.model == llm.client.model and study.tool_choice == "required"

    written = write_report(study, tmp_path / "out")
    assert {p.name for p in written} >= {"requests.json", "requests.md"}
    report = json.loads((tmp_path / "out" / "requests.json").read_text())
    assert report["tool_choice"] == "required" and len(report["results"]) == len(rows)
    assert "tool calls required" in (tmp_path / "out" / "requests.md").read_text()
