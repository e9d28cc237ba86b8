"""The main job on the embedded default (``make demo`` / ``driftrec demo``), end to end on MovieLens-100K.

1. start the model (vLLM) and load the catalog into Chroma, record every rating (each demo user's last
   one held out);
2. for three users with a few sessions each: the LLM summarizes their sessions and proposes a profile,
   code grounds it in their own ratings (and says which claims it refused); recommendations with reasons;
3. a chat turn: a request in words becomes constraints that retrieval enforces;
4. what the LLM adds as a re-ranker (verbalizer, weight chosen on validation, applied on test);
5. driftrec's retrieval against baselines on the first N users (leave-one-out by time, full ranking).

``run_demo`` returns everything as a ``DemoResult`` (``--json`` prints it); ``show`` renders it as rich
tables that fit an 80-column terminal. Progress goes to a ``Progress`` the caller owns.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from driftrec.config import Settings

STEPS = 5
CHAT_MESSAGE = "I'm tired of horror, something funny from the 90s please"


@dataclass
class DemoUser:
    user: str
    recent: list[str]
    profile: dict[str, Any]
    refused: list[str]
    held_out: str
    recommendations: list[dict[str, Any]]
    ranking: str
    degraded: bool
    seconds: float


@dataclass
class DemoResult:
    model: str
    catalog: int = 0
    ready_seconds: float = 0.0
    users: list[DemoUser] = field(default_factory=list)
    chat: dict[str, Any] = field(default_factory=dict)
    llm_study: dict[str, Any] = field(default_factory=dict)
    offline: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0


def demo_settings(settings: Settings) -> Settings:
    """The demo's own data folder (it never touches a real deployment's) and a response cache."""
    return settings.model_copy(
        update={
            "data_dir": settings.data_dir / "demo",
            "chroma_path": settings.data_dir / "demo" / "chroma",
            "memory_session_gap_minutes": 1440.0,  # MovieLens ratings come in bursts: a day is a session
            "llm_cache_path": settings.llm.cache_path or settings.data_dir / "llm-cache.db",
            "memory_upkeep": False,  # profiles are built below, on purpose, in the order shown
        }
    )


def progress_bar(console: Console) -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(bar_width=20),
        TextColumn("{task.completed}/{task.total}", justify="right"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )


@contextmanager
def quiet_libraries() -> Iterator[None]:
    """Library warnings (ranx's Numba type-safety notice, tokenizer chatter) stay out of the demo's output."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        noisy = [logging.getLogger(name) for name in ("numba", "ranx", "httpx", "chromadb", "driftrec")]
        levels = [logger.level for logger in noisy]
        for logger in noisy:
            logger.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for logger, level in zip(noisy, levels, strict=True):
                logger.setLevel(level)


async def run_demo(
    settings: Settings,
    *,
    users: int = 200,
    llm_users: int = 10,
    progress: Progress | None = None,
    on_ready: Callable[[DemoResult], None] | None = None,
    on_user: Callable[[DemoUser], None] | None = None,
) -> DemoResult:
    """Run the demo (see the module doc) on ``settings`` (pass ``demo_settings(...)``)."""
    from driftrec.agent import Recommender
    from driftrec.data import load_movielens_100k
    from driftrec.eval.llm_study import run_llm_eval
    from driftrec.eval.protocols import leave_one_out
    from driftrec.eval.runner import run_offline, write_report
    from driftrec.memory.sessions import sessionize

    started = time.perf_counter()
    bar = progress or Progress(disable=True)

    def step(description: str, total: int | None = None) -> Any:
        return bar.add_task(description, total=total)

    dataset = load_movielens_100k(settings.cache_dir)
    splits = leave_one_out(dataset)
    by_user = dataset.by_user()
    gap = timedelta(minutes=settings.memory.session_gap_minutes)
    picked = [u for u in sorted(by_user, key=int) if 2 <= len(sessionize(by_user[u], gap)) <= 4][:3]
    model = settings.model if settings.embedded else str(settings.llm.base_url)
    result = DemoResult(model=model)
    runs = settings.data_dir / "runs"

    task = step(f"1/{STEPS} starting vLLM ({model}), loading the catalog into Chroma")
    rec = await Recommender.from_settings(settings).start()
    try:
        assert rec.llm is not None and rec.memory is not None
        result.model = rec.llm.client.model
        events = [e for e in dataset.interactions if not (e.user in picked and e == splits[e.user].test)]
        bar.update(task, description=f"1/{STEPS} recording {len(events):,} ratings")
        await rec.observe(events, upkeep=False)
        await rec.refit()
        result.ready_seconds = time.perf_counter() - started
        result.catalog = len(rec.catalog)
        bar.remove_task(task)
        if on_ready:
            on_ready(result)

        task = step(f"2/{STEPS} profiles by the LLM, then recommendations", total=len(picked))
        for user in picked:
            target = splits[user].test
            refreshed = await rec.refresh_profile(user, now=target.timestamp)
            answer = await rec.recommend(user, k=5, now=target.timestamp)
            shown = DemoUser(
                user=user,
                recent=[dataset.items[e.item].title for e in splits[user].seen_before("test")[-4:]],
                profile=refreshed.profile.model_dump(mode="json"),
                refused=[f"{r.kind} {r.name} ({r.reason})" for r in refreshed.rejected],
                held_out=dataset.items[target.item].title,
                recommendations=[r.model_dump(mode="json") for r in answer.items],
                ranking=f"{answer.ranking} ({answer.prompt or 'retrieval order'})",
                degraded=answer.degraded,
                seconds=answer.seconds,
            )
            result.users.append(shown)
            if on_user:
                on_user(shown)
            bar.advance(task)
        bar.remove_task(task)

        task = step(f"3/{STEPS} a chat turn")
        chatter = picked[0]
        reply = "".join([piece async for piece in rec.chat(chatter, CHAT_MESSAGE)])
        turn = rec.last_turn(chatter)
        result.chat = {
            "user": chatter,
            "message": CHAT_MESSAGE,
            "reply": reply.strip(),
            "mode": turn.mode if turn else "",
            "action": turn.action if turn else "",
            "arguments": turn.arguments if turn else {},
            "degraded": turn.degraded if turn else None,
        }
        bar.remove_task(task)

        task = step(f"4/{STEPS} LLM re-ranking study ({llm_users} users, validation then test)", total=2 * llm_users)
        with quiet_libraries():
            studies = await run_llm_eval(
                settings,
                dataset,
                rec.llm,
                users=llm_users,
                out_dir=runs / "llm",
                progress=lambda _user: bar.advance(task),
            )
        result.llm_study = {stage: study.as_dict() for stage, study in studies.items()}
        result.outputs["LLM study"] = str(runs / "llm")
        bar.remove_task(task)
    finally:
        await rec.aclose()

    systems = ["most-popular", "item-knn", "bpr", "driftrec-retrieval"]
    task = step(f"5/{STEPS} baselines vs driftrec retrieval ({users} users)", total=len(systems))
    with quiet_libraries():
        report = await run_offline(
            settings, dataset, systems, stage="test", users=users, progress=lambda _name: bar.advance(task)
        )
        path = write_report(report, runs / "offline")
    result.offline = report.as_dict()
    result.outputs["offline evaluation"] = str(path.parent)
    bar.remove_task(task)
    result.seconds = time.perf_counter() - started
    return result


# -- presentation ------------------------------------------------------------------------------------


def user_block(console: Console, shown: DemoUser, index: int, of: int) -> None:
    profile = shown.profile
    console.rule(f"2.{index} User {shown.user} ({index} of {of})", align="left")
    console.print(f"recent: {', '.join(shown.recent)}")
    interests = ", ".join(f"{i['name']} {i['weight']:.2f}" for i in profile["interests"]) or "none yet"
    line = f"profile v{profile['version']}: {interests}"
    if profile["dislikes"]:
        line += "; dislikes " + ", ".join(d["name"] for d in profile["dislikes"])
    console.print(line)
    if shown.refused:
        console.print("LLM claims the user's own ratings contradict (not stored): " + "; ".join(shown.refused[:3]))
    table = Table(title_justify="left", expand=False, show_lines=False)
    table.add_column("#", justify="right", no_wrap=True)
    table.add_column("recommended", ratio=2)
    table.add_column("reason", ratio=3)
    table.add_column("found by", ratio=1)
    for r in shown.recommendations:
        hit = " [green](held-out next)[/green]" if r["item"]["title"] == shown.held_out else ""
        sources = ", ".join(dict.fromkeys(p["source"] for p in r["provenance"]))
        table.add_row(str(r["rank"]), r["item"]["title"] + hit, r.get("reason") or "", sources)
    console.print(table)
    how = (
        "retrieval order (LLM weight 0: validation found no gain from the LLM's order; reasons by template)"
        if shown.ranking.startswith("off")
        else f"{shown.ranking}{', degraded' if shown.degraded else ''}"
    )
    console.print(f"ranked by {how}, {shown.seconds:.1f} s")


def _metric_table(title: str, first: str) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column(first, no_wrap=True)
    for column in ("NDCG@10", "95% CI", "HR@10", "MRR@10"):
        table.add_column(column, justify="right", no_wrap=True)
    return table


def _metric_cells(name: str, metrics: dict[str, float], ci: tuple[float, float] | list[float]) -> list[str]:
    lo, hi = ci
    return [
        name,
        f"{metrics['ndcg@10']:.3f}",
        f"{lo:.3f}-{hi:.3f}",
        f"{metrics['hit_rate@10']:.3f}",
        f"{metrics['mrr@10']:.3f}",
    ]


def study_table(study: dict[str, Any]) -> Table:
    table = _metric_table(f"LLM weight sweep, {study['stage']}, {study['users']} users", "LLM weight")
    for name, metrics in study["results"].items():
        table.add_row(*_metric_cells(name, metrics, study["intervals"].get(name, (0.0, 0.0))))
    return table


def offline_table(report: dict[str, Any]) -> Table:
    table = _metric_table(f"{report['dataset']}, {report['stage']}, first {report['users']} users", "system")
    table.add_column("fit s", justify="right", no_wrap=True)
    for s in report["systems"]:
        ci = s["ci95"].get("ndcg@10", [s["metrics"]["ndcg@10"]] * 2)
        table.add_row(*_metric_cells(s["name"], s["metrics"], ci), f"{s['fit_seconds']:.0f}")
    return table


def _versus(significance: dict[str, Any]) -> str:
    """One line from a significance record: who beat whom, by how much, and the p-value."""
    if not significance:
        return "no comparison (the chosen weight is the retrieval order itself)"
    ours, other = significance.get("compared") or (significance.get("ours"), significance.get("baseline"))
    diff, p = significance.get("difference"), significance.get("p_value")
    head = f"{ours} vs {other}"
    if diff is not None:
        head += f": {float(diff):+.3f} {significance.get('metric', 'NDCG@10').upper()}"
    return head + (f", p = {float(p):.3g} ({significance.get('test', 'paired test')})" if p is not None else "")


def show_rest(console: Console, result: DemoResult) -> None:
    """Steps 3 to 5 and the closing lines (step 1's line and the users are printed as they finish)."""
    chat = result.chat
    console.rule("3. A chat turn", align="left")
    console.print(f"[bold]user {chat['user']}:[/bold] {chat['message']}")
    console.print(f"[bold]driftrec:[/bold] {chat['reply']}")
    how = f"mode {chat['mode']}, tool {chat['action'] or 'none'}, arguments {chat['arguments']}"
    console.print(how + (f" (fell back: {chat['degraded']})" if chat["degraded"] else ""))
    console.rule("4. What the LLM adds as a re-ranker", align="left")
    valid, test = result.llm_study["valid"], result.llm_study["test"]
    console.print(study_table(test))
    console.print(f"weight chosen on validation: {valid['best_weight']:g}; on test, {_versus(test['significance'])}")
    console.rule("5. Baselines vs driftrec retrieval", align="left")
    console.print(offline_table(result.offline))
    if result.offline.get("significance"):
        console.print("best vs best baseline: " + _versus(result.offline["significance"]))
    console.rule(align="left")
    console.print(f"done in {result.seconds / 60:.1f} min (ready after {result.ready_seconds:.0f} s).")
    for what, where in result.outputs.items():
        console.print(f"{what}: reports and plots in {where}")
    console.print("the full tables (all 943 users, SASRec, LLM studies) are in docs/results.md")


def ready_line(console: Console, result: DemoResult) -> None:
    console.rule("1. Ready", align="left")
    console.print(f"{result.catalog} movies; LLM {result.model}; ready in {result.ready_seconds:.0f} s")
