"""The embedded server's precision follows the CPU: bfloat16 where the CPU multiplies it (3-4x faster prefill
than float32 on AMX, docs/benchmarks.md), float32 where bf16 would be emulated (~7x slower on AVX2)."""

from __future__ import annotations

from pathlib import Path

from driftrec.llm.runtime import VLLMServer, cpu_flags, server_dtype

AVX2 = frozenset({"sse4_2", "avx", "avx2", "fma"})


def test_native_is_bfloat16_on_a_cpu_with_bf16_instructions() -> None:
    assert server_dtype("native", AVX2 | {"avx512f", "avx512_bf16"}) == "bfloat16"
    assert server_dtype("native", AVX2 | {"amx_tile", "amx_bf16"}) == "bfloat16"


def test_native_is_float32_where_bf16_would_be_emulated() -> None:
    assert server_dtype("native", AVX2) == "float32"
    assert server_dtype("native", AVX2 | {"avx512f", "avx512_fp16"}) == "float32"  # fp16 is not bf16
    assert server_dtype("native", frozenset()) == "float32"  # no /proc/cpuinfo: the safe choice


def test_a_named_dtype_is_passed_as_it_is() -> None:
    for dtype in ("float32", "bfloat16", "float16", "auto"):
        assert server_dtype(dtype, AVX2 | {"amx_bf16"}) == dtype


def test_flags_are_read_from_the_first_cpu(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(
        "processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: fpu avx2 amx_bf16\n\nprocessor\t: 1\nflags\t\t: fpu avx2\n"
    )
    assert cpu_flags(cpuinfo) == {"fpu", "avx2", "amx_bf16"}
    assert cpu_flags(tmp_path / "missing") == frozenset()


def test_the_server_command_carries_the_resolved_dtype(tmp_path: Path) -> None:
    server = VLLMServer(tmp_path, served_name="m", log_path=tmp_path / "log", port=1)
    command = server.command()
    assert command[command.index("--dtype") + 1] == server_dtype("native", cpu_flags())
    named = VLLMServer(tmp_path, served_name="m", log_path=tmp_path / "log", port=1, dtype="float16")
    assert named.command()[named.command().index("--dtype") + 1] == "float16"
