"""A suite of evaluation runs from one TOML file: `driftrec eval all` reproduces docs/results.md.

Each ``[[run]]`` names a study (``retrieval``, ``offline``, ``llm``, ``sessions``) and its options; the
suite runs them in order, each into its own folder, and writes ``results.md`` (every report's tables
with the run's options and wall time) and ``suite.json``. LLM runs share one connection, so one vLLM
serves the whole suite, and the on-disk response cache makes a repeated suite nearly free.
"""

from __future__ import annotations

import asyncio
import platform
import time
import tomllib
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from driftrec.config import Settings
from driftrec.data.dataset import Dataset
from driftrec.eval.report import write_files
from driftrec.llm import LLM

KINDS = ("retrieval", "offline", "llm", "sessions", "profiles")
DEFAULT_SUITE = "ml100k.toml"


class SuiteError(ValueError):
    """A suite file that cannot run: names the file and the run."""


@dataclass
class Run:
    name: str
    kind: str
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def needs_llm(self) -> bool:
        return self.kind == "llm" or (self.kind in ("sessions", "profiles") and self.options.get("llm", True))


def load_suite(path: Path | None = None) -> list[Run]:
    """The runs of a suite file (default: the packaged MovieLens-100K suite)."""
    if path is None:
        text = resources.files("driftrec.eval.suites").joinpath(DEFAULT_SUITE).read_text()
        where = f"driftrec/eval/suites/{DEFAULT_SUITE}"
    else:
        text, where = Path(path).read_text(), str(path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SuiteError(f"{where}: {exc}") from None
    runs = []
    for n, entry in enumerate(data.get("run", []), start=1):
        options = dict(entry)
        name, kind = options.pop("name", None), options.pop("kind", None)
        if not name or kind not in KINDS:
            raise SuiteError(f"{where}: run {n} needs a name and a kind in {KINDS} (got {name!r}, {kind!r})")
        runs.append(Run(str(name), str(kind), options))
    if len({r.name for r in runs}) != len(runs):
        raise SuiteError(f"{where}: run names must be unique")
    return runs


def _capped(value: int | None, cap: int | None) -> int | None:
    if cap is None:
        return value
    return cap if value is None else min(value, cap)


async def _one(settings: Settings, dataset: Dataset, run: Run, llm: LLM | None, out: Path, cap: int | None) -> str:
    """Run one study into ``out``; returns its Markdown."""
    o = run.options
    users = _capped(o.get("users"), cap)
    if run.kind == "retrieval":
        from driftrec.eval.retrieval_study import run_retrieval_study, write_study

        study = await run_retrieval_study(
            settings, dataset, users=users, backend=o.get("embedding"), alphas=tuple(o.get("alphas", ()))
        )
        await asyncio.to_thread(write_study, study, out)
        return study.markdown() + f"\n\nFusion weights tuned on validation: {study.settings['tuned_weights']}"
    if run.kind == "offline":
        from driftrec.eval.runner import run_offline, write_report

        report = await run_offline(settings, dataset, o["systems"], stage=o.get("stage", "test"), users=users)
        await asyncio.to_thread(write_report, report, out)
        return report.markdown() + f"\n\nSignificance: {report.significance}"
    if run.kind == "llm":
        from driftrec.eval.llm_study import run_llm_eval

        assert llm is not None
        studies = await run_llm_eval(
            settings,
            dataset,
            llm,
            users=users,
            mode=o.get("mode", "verbalizer"),
            setting=o.get("setting", "retrieved"),
            context=o.get("context", "full"),
            shuffles=o.get("shuffles", 1),
            profile_sessions=o.get("profile_sessions", 0),
            out_dir=out,
        )
        text = "\n\n".join(f"{stage}:\n\n{s.markdown()}" for stage, s in studies.items())
        return (
            text
            + f"\n\nWeight chosen on validation: {studies['valid'].best_weight:g}; test cost: {studies['test'].cost}"
        )
    if run.kind == "profiles":
        from driftrec.eval.profile_study import run_profile_study
        from driftrec.eval.profile_study import write_report as write_profiles

        study = await run_profile_study(
            settings,
            dataset,
            llm if run.needs_llm else None,
            users=users,
            gap_minutes=o.get("gap_minutes", 1440.0),
            profile_sessions=o.get("profile_sessions", 2),
        )
        await asyncio.to_thread(write_profiles, study, out)
        return study.markdown()
    from driftrec.eval.session_study import BASELINE_SYSTEMS, run_session_study

    studies = await run_session_study(
        settings,
        dataset,
        llm if run.needs_llm else None,
        users=users,
        gap_minutes=o.get("gap_minutes", 1440.0),
        baselines=o.get("baselines", BASELINE_SYSTEMS),
        profile_sessions=o.get("profile_sessions", 2),
        listwise=o.get("listwise", True),
        out_dir=out,
    )
    return studies["test"].markdown() + f"\n\nChosen on validation: {studies['valid'].chosen}"


async def run_suite(
    settings: Settings,
    dataset: Dataset,
    runs: Sequence[Run],
    out_dir: Path,
    *,
    connect: Callable[[], AbstractAsyncContextManager[LLM]] | None = None,
    users: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> Path:
    """Run every study in order; write ``results.md`` and ``suite.json`` in ``out_dir``."""
    sections: list[str] = []
    summary: list[dict[str, object]] = []
    started = time.perf_counter()

    async def go(llm: LLM | None) -> None:
        for run in runs:
            if progress:
                progress(run.name)
            t0 = time.perf_counter()
            text = await _one(settings, dataset, run, llm, out_dir / run.name, users)
            seconds = time.perf_counter() - t0
            options = ", ".join(f"{k}={v}" for k, v in run.options.items()) or "defaults"
            cap = f", users capped at {users}" if users else ""
            sections.append(f"## {run.name} ({run.kind}: {options}{cap})\n\nWall time {seconds:.0f} s.\n\n{text}\n")
            summary.append({"name": run.name, "kind": run.kind, "options": run.options, "seconds": round(seconds, 1)})

    if any(r.needs_llm for r in runs):
        if connect is None:
            raise SuiteError("the suite has LLM runs but no LLM connection was given")
        async with connect() as llm:
            await go(llm)
    else:
        await go(None)
    total = time.perf_counter() - started
    machine = f"{platform.machine()}, python {platform.python_version()}"
    head = f"# driftrec evaluation suite on {dataset.name}\n\n{len(runs)} runs, {total:.0f} s wall, {machine}.\n\n"
    report = {"dataset": dataset.name, "seconds": round(total, 1), "runs": summary}
    return await asyncio.to_thread(_write, out_dir, head + "\n".join(sections), report)


def _write(out_dir: Path, markdown: str, report: dict[str, object]) -> Path:
    write_files(out_dir / "suite.json", report, out_dir / "results.md", markdown)
    return out_dir / "results.md"
