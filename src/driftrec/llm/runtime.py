"""The embedded vLLM server: a subprocess on 127.0.0.1 that driftrec starts, watches and stops.

The server runs in its own session (``setsid``), so stopping it signals every process vLLM spawned
(the API server and its engine-core workers) and nothing of the caller's. It is also asked to die with
its parent (PR_SET_PDEATHSIG), and an ``atexit`` hook kills any server still running, so neither
Ctrl-C nor a crash of the caller leaves a 4 GB orphan behind.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import time
import weakref
from pathlib import Path

import httpx

from driftrec.llm.errors import RuntimeStartError

_LIVE: weakref.WeakSet[VLLMServer] = weakref.WeakSet()
STRUCTURED_OUTPUTS_CONFIG = {"backend": "xgrammar", "disable_any_whitespace": True}
BF16_CPU_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})  # the CPU multiplies bf16 itself


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The instruction-set flags of this machine's first CPU (empty where /proc/cpuinfo is not Linux's)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name.strip() == "flags":
            return frozenset(value.split())
    return frozenset()


def server_dtype(setting: str, flags: frozenset[str] | None = None) -> str:
    """The ``--dtype`` the server gets: ``native`` is bfloat16 on a CPU with bf16 instructions (AMX or
    AVX512-BF16: prefill 3-4x faster than float32, docs/benchmarks.md) and float32 elsewhere (bf16 emulated
    on AVX2 is ~7x slower); any other setting is passed as it is."""
    if setting != "native":
        return setting
    return "bfloat16" if (cpu_flags() if flags is None else flags) & BF16_CPU_FLAGS else "float32"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def session_pids(sid: int) -> list[int]:
    """Every live process in session ``sid`` (the server and all it spawned)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # fields after the command: state ppid pgrp session ...
        if int(fields[3]) == sid and fields[0] != "Z":
            pids.append(int(entry.name))
    return pids


class VLLMServer:
    """One vLLM OpenAI-compatible server process serving one checkpoint."""

    def __init__(
        self,
        checkpoint_dir: Path,
        *,
        served_name: str,
        log_path: Path,
        port: int | None = None,
        dtype: str = "native",
        max_model_len: int = 8192,
        kvcache_gb: int = 1,
        extra_args: list[str] | None = None,
        python: str | None = None,
        startup_timeout_s: float = 600.0,
        tool_parser: str | None = None,
    ):
        self.checkpoint_dir = checkpoint_dir
        self.served_name = served_name
        self.log_path = log_path
        self.port = port or free_port()
        self.dtype = server_dtype(dtype)
        self.max_model_len = max_model_len
        self.kvcache_gb = kvcache_gb
        self.extra_args = list(extra_args or [])
        self.tool_parser = tool_parser  # the model's vLLM tool-call parser: native tool calling is on
        self.python = python or sys.executable
        self.startup_timeout_s = startup_timeout_s
        self.process: subprocess.Popen[bytes] | None = None
        self.startup_seconds: float | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def command(self) -> list[str]:
        return [
            self.python,
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            str(self.checkpoint_dir),
            "--served-model-name",
            self.served_name,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--dtype",
            self.dtype,
            "--max-model-len",
            str(self.max_model_len),
            # CUDA graphs do not exist on CPU; eager start-up is ~30 s instead of ~105 s.
            "--enforce-eager",
            "--structured-outputs-config",
            json.dumps(STRUCTURED_OUTPUTS_CONFIG),
            "--max-logprobs",
            "64",
            *(["--enable-auto-tool-choice", "--tool-call-parser", self.tool_parser] if self.tool_parser else []),
            *self.extra_args,
        ]

    async def start(self) -> str:
        """Start the server and wait until /health answers; return the base URL."""
        if self.process is not None:
            return self.base_url
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "VLLM_CPU_KVCACHE_SPACE": str(self.kvcache_gb),
            "VLLM_NO_USAGE_STATS": "1",
            "DO_NOT_TRACK": "1",
        }
        started = time.perf_counter()
        self.process = await asyncio.to_thread(self._spawn, env)
        _LIVE.add(self)
        try:
            await self._wait_healthy(started)
        except BaseException:
            await self.stop()
            raise
        self.startup_seconds = time.perf_counter() - started
        return self.base_url

    def _spawn(self, env: dict[str, str]) -> subprocess.Popen[bytes]:
        with open(self.log_path, "ab") as log:
            log.write(f"\n=== driftrec starting: {' '.join(self.command())}\n".encode())
            log.flush()
            return subprocess.Popen(
                self.command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )

    async def _wait_healthy(self, started: float) -> None:
        health = f"http://127.0.0.1:{self.port}/health"
        async with httpx.AsyncClient(timeout=5.0) as http:
            while True:
                assert self.process is not None
                if self.process.poll() is not None:
                    raise RuntimeStartError(
                        f"vLLM exited with code {self.process.returncode} during start-up; "
                        f"see {self.log_path}:\n{self.log_tail()}"
                    )
                if time.perf_counter() - started > self.startup_timeout_s:
                    raise RuntimeStartError(
                        f"vLLM did not become healthy within {self.startup_timeout_s:.0f}s; see {self.log_path}"
                    )
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get(health)).status_code == 200:
                        return
                await asyncio.sleep(0.5)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    async def stop(self, grace_s: float = 20.0) -> None:
        """SIGTERM the whole session, wait, then SIGKILL whatever is left."""
        if self.process is None:
            return
        await asyncio.to_thread(self.stop_blocking, grace_s)

    def stop_blocking(self, grace_s: float = 20.0) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        sid = process.pid
        with contextlib.suppress(ProcessLookupError):
            os.killpg(sid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=grace_s)
        while session_pids(sid) and time.monotonic() < deadline:
            time.sleep(0.2)
        for pid in session_pids(sid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=5)
        _LIVE.discard(self)


@atexit.register
def _stop_all() -> None:
    for server in list(_LIVE):
        server.stop_blocking(grace_s=5.0)
