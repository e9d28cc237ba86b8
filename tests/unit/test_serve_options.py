"""`driftrec serve` hands uvicorn the access-log setting and its HTTP protocol, in one process and with several
(a socket each)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from driftrec.cli import app


@pytest.mark.parametrize("workers", ["1", "2"])
@pytest.mark.parametrize("setting", ["true", "false"])
def test_the_access_log_follows_its_setting(
    workers: str, setting: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import uvicorn

    import driftrec

    given: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: given.update(options))
    monkeypatch.setattr(driftrec, "serve_processes", lambda app, **options: given.update(options), raising=False)
    monkeypatch.setenv("DRIFTREC_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("DRIFTREC_LLM_ENABLED", "false")
    monkeypatch.setenv("DRIFTREC_API_ACCESS_LOG", setting)
    result = CliRunner().invoke(app, ["serve", "--workers", workers])
    assert result.exit_code == 0, result.output
    assert given["access_log"] is (setting == "true")
    assert given["log_config"]["loggers"]["driftrec"]["level"] == "INFO"  # driftrec's own lines either way
    assert given["http"] == "driftrec.server.protocol:OneWriteHttp"  # a response in one write


def test_the_access_lines_are_written_together_every_flush_s(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import uvicorn

    given: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: given.update(options))
    monkeypatch.setenv("DRIFTREC_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("DRIFTREC_LLM_ENABLED", "false")
    monkeypatch.setenv("DRIFTREC_API_ACCESS_LOG_FLUSH_S", "0.25")
    assert CliRunner().invoke(app, ["serve"]).exit_code == 0
    handler = given["log_config"]["handlers"]["access"]
    assert handler["class"] == "driftrec.server.logs.AccessLines" and handler["flush_s"] == 0.25
