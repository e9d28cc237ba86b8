"""Schemathesis in every mode against the service: examples, boundary values (its coverage phase) and
random fuzzing, with valid and deliberately invalid data (``--mode all``), under every check it has
(no 5xx, status codes and responses as documented, invalid data refused, auth enforced...) except
"schema-valid data is accepted": a few rules are the domain's, not the schema's (an edit must name a
catalog genre, feedback is a signal or a rating, events fall in the accepted time window).

The server is the real app on a real Recommender (real Chroma, the MovieLens catalog, a real SQLite
store) without an LLM: input handling runs before any LLM is asked. The positive fuzz with the real
model answering is test_http.py's."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from pydantic import SecretStr

from driftrec.agent import Recommender
from driftrec.config import Settings
from driftrec.llm.runtime import free_port
from driftrec.server import create_app
from tests.conftest import copy_of

KEY = "fuzz-admin-key"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@pytest.fixture(scope="module")
def base_url(settings: Settings, seeded_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    data = copy_of(seeded_data, tmp_path_factory.mktemp("http-fuzz"))
    own = settings.model_copy(
        update={"data_dir": data, "chroma_path": data / "chroma", "api_rate_per_minute": 0, "api_key": SecretStr(KEY)}
    )
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(Recommender(own, llm=None)), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.5)
    else:
        pytest.fail("the in-process server did not come up")
    yield url
    server.should_exit = True
    thread.join(timeout=30)


def test_no_input_in_any_mode_breaks_a_documented_contract(base_url: str) -> None:
    command = [
        str(Path(sys.executable).with_name("schemathesis")),
        "run",
        f"{base_url}/openapi.json",
        "--mode=all",
        "--phases=examples,coverage,fuzzing",
        "--checks=all",
        "--exclude-checks=positive_data_acceptance",
        "--max-examples=60",
        "--seed=15",
        "--workers=1",
        "--request-timeout=60",
        "--header",
        f"Authorization: Bearer {KEY}",
    ]
    run = subprocess.run(command, capture_output=True, text=True, timeout=900)
    out = run.stdout + run.stderr
    counts = re.search(r"(\d+) generated, (\d+) passed", out)
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "schemathesis.txt").write_text(out)
    assert run.returncode == 0 and counts, out[-4000:]
    generated, passed = int(counts[1]), int(counts[2])
    assert generated == passed >= 500, out[-2000:]
    operations = re.search(r"Tested: (\d+)", out)
    assert operations and int(operations[1]) >= 12, out[-2000:]
    print(json.dumps({"generated": generated, "operations": int(operations[1])}))
