"""The embedded server never outlives driftrec: Ctrl-C and a killed parent both take it down.

A real driftrec process starts the real vLLM; the test interrupts or kills that process and then checks
that no process of the server's session is left.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from driftrec.config import Settings
from driftrec.llm.checkpoint import PreparedModel
from driftrec.llm.runtime import session_pids

pytestmark = pytest.mark.vllm

HOLDER = textwrap.dedent("""
    import asyncio
    import signal
    from driftrec.config import load_settings
    from driftrec.llm import open_llm

    async def main():
        llm = await open_llm(load_settings(), warm=False)
        print("READY", llm.server.pid, flush=True)
        try:
            await asyncio.sleep(3600)
        finally:
            await llm.aclose()

    # A terminal delivers Ctrl-C; a process started in the background of a non-interactive shell (as CI
    # may be) inherits SIGINT ignored. Restore the default, as an interactive user would have it.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    asyncio.run(main())
""")


def start_holder(settings: Settings) -> tuple[subprocess.Popen[str], int]:
    env = {**os.environ, "DRIFTREC_CACHE_DIR": str(settings.cache_dir), "DRIFTREC_DATA_DIR": str(settings.data_dir)}
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env
    )
    assert holder.stdout is not None
    line = holder.stdout.readline()  # blocks until vLLM is healthy
    assert line.startswith("READY"), line
    server_pid = int(line.split()[1])
    assert session_pids(server_pid)
    return holder, server_pid


def wait_gone(sid: int, seconds: float) -> list[int]:
    deadline = time.monotonic() + seconds
    while session_pids(sid) and time.monotonic() < deadline:
        time.sleep(0.5)
    return session_pids(sid)


def test_ctrl_c_stops_the_server(settings: Settings, prepared: PreparedModel) -> None:
    holder, server_pid = start_holder(settings)
    holder.send_signal(signal.SIGINT)
    assert holder.wait(timeout=60) is not None
    assert wait_gone(server_pid, 30) == []


def test_a_killed_parent_takes_the_server_down(settings: Settings, prepared: PreparedModel) -> None:
    holder, server_pid = start_holder(settings)
    holder.kill()  # SIGKILL: no finally, no atexit; PR_SET_PDEATHSIG is what remains
    holder.wait(timeout=10)
    left = wait_gone(server_pid, 60)
    for pid in left:  # do not leak into the rest of the session if this fails
        os.kill(pid, signal.SIGKILL)
    assert left == []
