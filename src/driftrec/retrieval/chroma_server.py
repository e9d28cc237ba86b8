"""Run a local `chroma run` server (the one chromadb ships) for tests, benchmarks and single-box deployments."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx


class ChromaServerError(RuntimeError):
    """The server did not come up; the message carries the end of its log."""


def chroma_binary() -> str:
    beside = Path(sys.executable).parent / "chroma"
    found = str(beside) if beside.exists() else shutil.which("chroma")
    if not found:
        raise ChromaServerError("the `chroma` command is not installed (it comes with the chromadb package)")
    return found


@contextlib.contextmanager
def chroma_server(path: Path, port: int, host: str = "127.0.0.1", timeout_s: float = 60.0) -> Iterator[str]:
    """Start `chroma run` on ``host:port`` persisting to ``path``; yield its URL; stop it on exit."""
    path.mkdir(parents=True, exist_ok=True)
    log_path = path / "chroma-server.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [chroma_binary(), "run", "--path", str(path / "db"), "--host", host, "--port", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + timeout_s
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"http://{host}:{port}/api/v2/heartbeat", timeout=1).status_code == 200:
                        break
                if process.poll() is not None or time.monotonic() > deadline:
                    raise ChromaServerError(f"chroma run did not start:\n{log_path.read_text()[-2000:]}")
                time.sleep(0.2)
            yield f"http://{host}:{port}"
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
